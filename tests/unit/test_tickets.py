"""The ticket book both adapters keep: one rule for an id submitted again (no I/O)."""

from __future__ import annotations

import pytest

from adapters.tickets import TicketBook
from controller.ports import CommandRejected, Completion
from tests.fakes import same_ticket


async def test_an_id_in_flight_is_the_same_ticket_sent_again() -> None:
    book: TicketBook[str] = TicketBook("loop-1", capacity=2)
    ticket, entry = book.submit("c1", "first")
    again, entry_again = book.submit("c1", "second")
    assert again is ticket and entry_again is entry and entry is not None and entry.command == "first"
    assert book.unfinished() == [entry]


async def test_a_finished_id_hands_back_its_ticket_without_a_send() -> None:
    book: TicketBook[str] = TicketBook("loop-1", capacity=2)
    ticket, _ = book.submit("c1", "cmd")
    assert book.accept("c1", 1.0) and not book.accept("c1", 2.0)
    assert book.finish(Completion("c1", ok=True, at=3.0))
    assert not book.finish(Completion("c1", ok=True, at=4.0))
    assert ticket.acked.result() == 1.0 and ticket.done.result().at == 3.0
    again, entry = book.submit("c1", "cmd")
    assert entry is None and same_ticket(again, ticket)
    assert book.unfinished() == [] and "c1" in book and book.in_flight("c1") is None


async def test_a_rejected_id_is_forgotten_and_opens_a_fresh_ticket() -> None:
    book: TicketBook[str] = TicketBook("ptl-01", capacity=2)
    refused, _ = book.submit("c1", "cmd")
    assert book.reject("c1", "estop")
    assert not book.reject("c1", "estop")
    with pytest.raises(CommandRejected, match="estop"):
        await refused.acked
    assert refused.done.result() == Completion("c1", ok=False, at=refused.done.result().at, reason="estop")
    assert "c1" not in book and book.get("c1") is None
    fresh, entry = book.submit("c1", "cmd")
    assert fresh is not refused and entry is not None and not fresh.acked.done()


async def test_a_rejection_awaited_only_through_done_leaves_no_unread_exception() -> None:
    book: TicketBook[str] = TicketBook("ptl-01", capacity=2)
    ticket, _ = book.submit("c1", "cmd")
    book.reject("c1", "display_fault")
    assert (await ticket.done).reason == "display_fault"
    assert ticket.acked._log_traceback is False  # asyncio's "never retrieved" flag


async def test_finished_tickets_are_kept_up_to_the_capacity_and_unfinished_ones_always() -> None:
    book: TicketBook[str] = TicketBook("loop-1", capacity=2)
    waiting, _ = book.submit("c0", "cmd")
    for n in range(1, 4):
        book.submit(f"c{n}", "cmd")
        book.finish(Completion(f"c{n}", ok=True, at=float(n)))
    assert "c1" not in book and book.get("c2") is not None and book.get("c3") is not None
    assert book.get("c0") is waiting and len(book) == 3
    assert book.finish(Completion("c0", ok=True, at=9.0))  # its late completion still finds it


async def test_the_command_of_an_id_in_flight_is_there_to_judge_its_answer_by() -> None:
    book: TicketBook[str] = TicketBook("ptl-1", capacity=2)
    book.submit("c1", "show 2")
    assert book.command("c1") == "show 2"
    book.finish(Completion("c1", ok=True, at=1.0))
    assert book.command("c1") is None and book.command("never") is None
