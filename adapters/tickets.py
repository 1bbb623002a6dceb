"""One device's command tickets, by command id: the one book both protocol adapters keep.

The rule for a command id submitted again (a retry by the engine, a restarted controller):

- **finished** (done or failed after acceptance): the finished ticket is handed back and nothing goes
  on the wire; the device already answered, and its dedupe would only repeat that answer;
- **in flight** (sent, not finished): the same ticket is handed back and the command goes on the wire
  again with the same id; the device dedupes on the id and never executes it twice;
- **rejected**: forgotten at once, on both sides. The same id opens a fresh ticket and goes on the wire
  again, and the device judges it afresh, so a pick light's retry after its fault clears is executed.

Finished tickets are kept up to a capacity per device (oldest dropped first: memory matters with
hundreds of devices); a ticket in flight is never dropped, so its late completion still finds it.
A finished ticket is kept as one flat tuple (`Finished`), not as the ticket with its two futures and
its completion: the cyclic collector does not track a tuple of plain values, so tens of thousands of
them cost neither memory nor collector pauses (docs/benchmarks.md). An id submitted again gets a
ticket rebuilt from it, already acked and done.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from controller.ports import CommandRejected, CommandTicket, Completion

C = TypeVar("C")


@dataclass(slots=True)
class Entry(Generic[C]):
    """A ticket in flight and what its adapter needs to put the command on the wire again."""

    ticket: CommandTicket
    command: C


# command id -> (sent_at, sends, acked_at, ok, completed_at, reason, result as sorted items)
Finished = tuple[float | None, int, float, bool, float, str | None, tuple[tuple[str, Any], ...]]


def _flat(ticket: CommandTicket, completion: Completion) -> Finished:
    return (ticket.sent_at, ticket.sends, ticket.acked.result(), completion.ok, completion.at,
            completion.reason, tuple(sorted(completion.result.items())))


def _rebuilt(command_id: str, device_id: str, kept: Finished) -> CommandTicket:
    sent_at, sends, acked_at, ok, at, reason, result = kept
    ticket = CommandTicket(command_id, device_id)
    ticket.sent_at, ticket.sends = sent_at, sends
    ticket.ack(acked_at)
    ticket.finish(Completion(command_id, ok=ok, at=at, reason=reason, result=dict(result)))
    return ticket


class TicketBook(Generic[C]):
    """`C` is whatever the adapter needs to send a command again (action and params, method and
    arguments). Everything here runs on the event loop."""

    __slots__ = ("_capacity", "_finished", "_in_flight", "device_id")

    def __init__(self, device_id: str, capacity: int) -> None:
        self.device_id = device_id
        self._capacity = capacity
        self._in_flight: dict[str, Entry[C]] = {}
        self._finished: OrderedDict[str, Finished] = OrderedDict()

    def __len__(self) -> int:
        return len(self._in_flight) + len(self._finished)

    def __contains__(self, command_id: object) -> bool:
        return command_id in self._in_flight or command_id in self._finished

    # --- submitting --------------------------------------------------------------------------
    def submit(self, command_id: str, command: C) -> tuple[CommandTicket, Entry[C] | None]:
        """The ticket for `command_id`, and the entry to put on the wire (None: it is finished)."""
        finished = self._finished.get(command_id)
        if finished is not None:
            return _rebuilt(command_id, self.device_id, finished), None
        entry = self._in_flight.get(command_id)
        if entry is None:
            entry = self._in_flight[command_id] = Entry(CommandTicket(command_id, self.device_id), command)
        return entry.ticket, entry

    def get(self, command_id: str) -> CommandTicket | None:
        """The ticket in flight or finished under `command_id` (a rejected id is not kept)."""
        entry = self._in_flight.get(command_id)
        if entry is not None:
            return entry.ticket
        finished = self._finished.get(command_id)
        return _rebuilt(command_id, self.device_id, finished) if finished is not None else None

    def in_flight(self, command_id: str) -> CommandTicket | None:
        entry = self._in_flight.get(command_id)
        return entry.ticket if entry is not None else None

    def command(self, command_id: str) -> C | None:
        """What was sent under an id still in flight (to judge the device's answer against)."""
        entry = self._in_flight.get(command_id)
        return entry.command if entry is not None else None

    def unfinished(self) -> list[Entry[C]]:
        """What the device still owes an answer for, oldest first (to send again after a reconnect)."""
        return list(self._in_flight.values())

    # --- answers from the device -----------------------------------------------------------------
    def accept(self, command_id: str, at: float | None = None) -> bool:
        """The device accepted the command. False if no ticket waits for that (unknown, or acked)."""
        entry = self._in_flight.get(command_id)
        if entry is None or entry.ticket.acked.done():
            return False
        entry.ticket.ack(at)
        return True

    def finish(self, completion: Completion) -> bool:
        """The device finished the command. False if no ticket was in flight under its id."""
        entry = self._in_flight.pop(completion.command_id, None)
        if entry is None:
            return False
        entry.ticket.finish(completion)
        self._finished[completion.command_id] = _flat(entry.ticket, completion)
        if len(self._finished) > self._capacity:
            self._finished.popitem(last=False)
        return True

    def reject(self, command_id: str, reason: str, at: float | None = None) -> bool:
        """The device refused the command: `acked` raises CommandRejected, `done` is a failed Completion
        with the same reason, and the id is forgotten. False if no ticket was in flight under it."""
        entry = self._in_flight.pop(command_id, None)
        if entry is None:
            return False
        ticket = entry.ticket
        if not ticket.acked.done():
            ticket.acked.set_exception(CommandRejected(self.device_id, command_id, reason))
            ticket.acked.exception()  # who awaits only `done` has the reason: no "never retrieved" warning
        ticket.finish(Completion(command_id, ok=False, at=time.time() if at is None else at, reason=reason))
        return True
