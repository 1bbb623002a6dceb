"""The commands one device has in flight, by command id."""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass

from controller.ports import CommandRejected, CommandTicket, Completion


@dataclass(slots=True)
class Entry:
    ticket: CommandTicket
    method: str  # the signal of the method that carries the command
    args: tuple[str, ...]  # the method's arguments, CommandId first


class TicketBook:
    """A re-submitted id finds its ticket, a completion finds the ticket it ends, and after a reconnect
    every unfinished command can be sent again. Finished tickets are kept (up to `capacity`, oldest
    dropped first) so that a late re-submit gets the finished ticket back without going on the wire."""

    def __init__(self, device_id: str, capacity: int = 2048) -> None:
        self.device_id = device_id
        self._capacity = capacity
        self._entries: OrderedDict[str, Entry] = OrderedDict()

    def get(self, command_id: str) -> Entry | None:
        return self._entries.get(command_id)

    def open(self, command_id: str, method: str, args: tuple[str, ...]) -> Entry:
        entry = self._entries[command_id] = Entry(CommandTicket(command_id, self.device_id), method, args)
        # Forget the oldest FINISHED tickets past the capacity; an unfinished one (a tote still on the
        # loop) is kept whatever its age, so its completion still finds it.
        for _ in range(len(self._entries) - self._capacity):
            oldest_id, oldest = next(iter(self._entries.items()))
            if oldest.ticket.done.done():
                del self._entries[oldest_id]
            else:
                self._entries.move_to_end(oldest_id)
        return entry

    def unfinished(self) -> list[Entry]:
        return [e for e in self._entries.values() if not e.ticket.done.done()]

    def finish(self, completion: Completion) -> bool:
        entry = self._entries.get(completion.command_id)
        if entry is None:
            return False
        entry.ticket.finish(completion)
        return True

    def reject(self, ticket: CommandTicket, reason: str) -> None:
        """A refusal resolves `acked` with CommandRejected and `done` with a failed Completion, and
        forgets the id: the device does not remember refusals either, so the same id may be tried again
        (after an e-stop reset, say) and gets a fresh ticket."""
        entry = self._entries.get(ticket.command_id)
        if entry is not None and entry.ticket is ticket:
            del self._entries[ticket.command_id]
        if not ticket.acked.done():
            ticket.acked.set_exception(CommandRejected(self.device_id, ticket.command_id, reason))
            # Whoever waits on `done` alone has the reason already; do not warn about the other future.
            ticket.acked.add_done_callback(lambda f: f.exception())
        ticket.finish(Completion(ticket.command_id, ok=False, at=time.time(), reason=reason))
