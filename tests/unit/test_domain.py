"""The pure domain: the order state machine, stock allocation, the divert decision, device choice."""

from __future__ import annotations

import pytest

from controller.domain.choice import Candidate, choose_conveyor, choose_pack_station, choose_printer
from controller.domain.model import (
    NEXT,
    InvalidTransition,
    Order,
    OrderLine,
    OrderState,
    Stock,
    StockLocation,
    Task,
)
from controller.domain.routing import Divert, DivertReason, Route, Sortation, SorterRules

S = OrderState


def order(*lines: tuple[str, int]) -> Order:
    o = Order(id=7, external_id="E7", carrier="DHL", priority=0,
              lines=[OrderLine(i + 1, sku, qty) for i, (sku, qty) in enumerate(lines or (("A", 1),))])
    o.receive(1.0)
    return o


# ---- the order state machine -------------------------------------------------------------------
def test_an_order_walks_its_stages_in_order() -> None:
    o = order()
    for at, state in enumerate((S.ALLOCATED, S.PICKING, S.CONVEYED, S.PACKED, S.LABELLED, S.SORTED,
                                S.SHIPPED), 2):
        o.enter(state, float(at))
    assert o.state is S.SHIPPED
    assert list(o.stamps) == ["received", "allocated", "picking", "conveyed", "packed", "labelled", "sorted",
                              "shipped"]


@pytest.mark.parametrize(("start", "to"), [
    (S.RECEIVED, S.PICKING), (S.ALLOCATED, S.PACKED), (S.PACKED, S.SORTED), (S.SORTED, S.RECEIVED),
])
def test_a_stage_cannot_be_skipped_or_gone_back_to(start: OrderState, to: OrderState) -> None:
    o = order()
    o.state = start
    with pytest.raises(InvalidTransition):
        o.enter(to, 2.0)
    assert o.state is start


@pytest.mark.parametrize("terminal", [S.SHIPPED, S.CANCELLED])
def test_a_finished_order_goes_nowhere(terminal: OrderState) -> None:
    o = order()
    o.state = terminal
    for state in OrderState:
        with pytest.raises(InvalidTransition):
            o.enter(state, 2.0)
    assert NEXT[terminal] == frozenset()


def test_every_active_state_may_fail_or_be_cancelled() -> None:
    for state in (S.RECEIVED, S.HELD, S.ALLOCATED, S.PICKING, S.CONVEYED, S.PACKED, S.LABELLED, S.SORTED):
        assert {S.EXCEPTION, S.CANCELLED} <= NEXT[state]


def test_a_resolved_exception_resumes_where_it_stopped_with_new_command_ids() -> None:
    o = order()
    o.enter(S.ALLOCATED, 2.0)
    o.enter(S.PICKING, 3.0)
    first = o.command_id(Task.PICK, 1)
    o.fail(4.0, "short pick")
    assert (o.state, o.resume_state, o.reason) == (S.EXCEPTION, S.PICKING, "short pick")
    with pytest.raises(InvalidTransition):
        o.enter(S.CONVEYED, 5.0)  # only a resolve leaves an exception
    o.resolve(5.0)
    assert (o.state, o.reason, o.attempt) == (S.PICKING, None, 1)
    assert o.command_id(Task.PICK, 1) != first
    with pytest.raises(InvalidTransition):
        o.resolve(6.0)  # not in exception any more


def test_held_may_be_entered_again_with_a_new_reason() -> None:
    o = order()
    o.enter(S.HELD, 2.0, "insufficient stock for A")
    o.enter(S.HELD, 3.0, "unknown SKU A")
    assert o.reason == "unknown SKU A"
    with pytest.raises(InvalidTransition):
        o.receive(4.0)  # an order is received once


def test_label_ids_follow_the_label_attempt_not_the_order_attempt() -> None:
    o = order()
    o.label_attempt = 2
    assert o.command_id(Task.LABEL) == "o7.label.0.a2"
    assert o.command_id(Task.PACK) == "o7.pack.0.a0"


# ---- stock -------------------------------------------------------------------------------------
def test_allocation_is_all_or_nothing() -> None:
    stock = Stock([StockLocation("L1", "A", 5), StockLocation("L2", "B", 1)])
    lines = [OrderLine(1, "A", 2), OrderLine(2, "B", 3)]
    reason = stock.allocate(lines)
    assert reason == "insufficient stock for B: 1 available, 3 wanted"
    assert [ln.location for ln in lines] == [None, None]
    assert stock.by_location["L1"].reserved == 0


def test_allocation_takes_the_location_with_most_to_spare_counting_this_order() -> None:
    stock = Stock([StockLocation("L1", "A", 3), StockLocation("L2", "A", 2)])
    lines = [OrderLine(1, "A", 2), OrderLine(2, "A", 2)]
    assert stock.allocate(lines) is None
    assert [ln.location for ln in lines] == ["L1", "L2"]
    assert (stock.by_location["L1"].available, stock.by_location["L2"].available) == (1, 0)


def test_unknown_sku_holds() -> None:
    assert Stock([]).allocate([OrderLine(1, "Z", 1)]) == "unknown SKU Z"


def test_a_short_pick_gives_back_the_reservation_and_takes_what_was_picked() -> None:
    stock = Stock([StockLocation("L1", "A", 5)])
    line = OrderLine(1, "A", 3)
    stock.allocate([line])
    loc = stock.confirm_pick("L1", shown=3, picked=1)
    assert (loc.on_hand, loc.reserved) == (4, 0)


def test_cancel_releases_reservation_and_returns_picked_items() -> None:
    stock = Stock([StockLocation("L1", "A", 5)])
    line = OrderLine(1, "A", 3)
    stock.allocate([line])
    stock.confirm_pick("L1", shown=3, picked=2)  # short by one: the line keeps 2 picked
    line.picked_qty, line.location = 2, None
    loc = stock.release(line, reserved=0)
    assert loc is not None and (loc.on_hand, loc.reserved) == (5, 0)


# ---- the divert decision ------------------------------------------------------------------------
RULES = SorterRules("sorter-1", "sp-sort", "lane-x", max_recirculations=2)


def sortation() -> Sortation:
    s = Sortation([RULES])
    s.route("T1", Route(1, "lane-1", "sorter-1"))
    return s


def test_a_routed_tote_goes_to_its_lane() -> None:
    assert sortation().decide("sp-sort", "T1") == Divert("sorter-1", "lane-1", 1, DivertReason.ROUTE)


def test_no_answer_for_a_no_read_or_another_scan_point() -> None:
    s = sortation()
    assert s.decide("sp-sort", None) is None
    assert s.decide("sp-induct", "T1") is None
    assert not s.is_sorter_scan("sp-induct")


def test_an_unknown_tote_goes_to_the_exception_lane() -> None:
    divert = sortation().decide("sp-sort", "T9")
    assert divert is not None and (divert.lane, divert.order_id, divert.reason) == (
        "lane-x", None, DivertReason.UNKNOWN_TOTE)


def test_a_tote_for_another_sorter_is_unknown_here() -> None:
    s = sortation()
    s.route("T2", Route(2, "lane-9", "sorter-2"))
    divert = s.decide("sp-sort", "T2")
    assert divert is not None and divert.reason is DivertReason.UNKNOWN_TOTE


def test_past_the_recirculation_limit_the_answer_is_the_exception_lane() -> None:
    s = sortation()
    assert s.recirculated("T1") == 1
    first = s.decide("sp-sort", "T1")
    assert first is not None and first.lane == "lane-1"
    s.recirculated("T1")
    limit = s.decide("sp-sort", "T1")
    assert limit is not None and (limit.lane, limit.order_id, limit.reason) == (
        "lane-x", 1, DivertReason.RECIRCULATION_LIMIT)
    assert s.last_reason("T1") is DivertReason.RECIRCULATION_LIMIT


def test_unrouting_forgets_the_tote_and_its_rounds() -> None:
    s = sortation()
    s.recirculated("T1")
    s.unroute("T1")
    assert s.route_of("T1") is None and s.recirculations("T1") == 0 and s.last_reason("T1") is None
    s.recirculated("T9")  # an unknown tote is never remembered
    assert s.recirculations("T9") == 0


# ---- device choice -----------------------------------------------------------------------------
def test_pack_station_by_totes_on_their_way_then_turns() -> None:
    stations = [Candidate("P1", True, inbound=2, served=0), Candidate("P2", True, inbound=1, served=5),
                Candidate("P3", True, inbound=1, served=3)]
    assert choose_pack_station(stations) == "P3"


def test_a_faulted_pack_station_is_passed_over_unless_all_are() -> None:
    assert choose_pack_station([Candidate("P1", False), Candidate("P2", True, inbound=9)]) == "P2"
    assert choose_pack_station([Candidate("P1", False, inbound=1), Candidate("P2", False)]) == "P2"


def test_printer_least_loaded_usable_or_none() -> None:
    printers = [Candidate("R1", True, load=2), Candidate("R2", False, load=0), Candidate("R3", True, load=1)]
    assert choose_printer(printers) == "R3"
    assert choose_printer([Candidate("R1", False)]) is None


def test_conveyor_least_loaded() -> None:
    assert choose_conveyor([Candidate("C1", True, load=3), Candidate("C2", True, load=1)]) == "C2"
    with pytest.raises(ValueError, match="no conveyor"):
        choose_conveyor([])


def test_a_tote_expected_but_not_routed_yet_goes_round_unanswered() -> None:
    s = sortation()
    s.expect("T5")
    assert s.decide("sp-sort", "T5") is None  # after a restart: its order will route it
    s.route("T5", Route(5, "lane-2", "sorter-1"))
    divert = s.decide("sp-sort", "T5")
    assert divert is not None and divert.lane == "lane-2"
    s.unroute("T5")
    gone = s.decide("sp-sort", "T5")
    assert gone is not None and gone.reason is DivertReason.UNKNOWN_TOTE



def test_release_policies_order_work() -> None:
    from controller.domain.model import Order, OrderState
    from controller.engine.orders import release_key

    def order(oid: int, priority: int = 0, due: float | None = None) -> Order:
        return Order(id=oid, external_id=f"E{oid}", carrier="DHL", lines=[], state=OrderState.RECEIVED,
                     priority=priority, due_at=due)

    orders = [order(1), order(2, due=50.0), order(3, priority=5, due=900.0), order(4, due=10.0)]
    assert [o.id for o in sorted(orders, key=lambda o: release_key(o, "due"))] == [3, 4, 2, 1]
    assert [o.id for o in sorted(orders, key=lambda o: release_key(o, "fifo"))] == [1, 2, 3, 4]
