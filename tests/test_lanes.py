"""A lane's judgement of batching: rows served in batches against rows served one by one, timed
from one take from a busy queue to the next, as the worker serves them."""

from __future__ import annotations

import pytest

from serving.lanes import EXPLORE_EVERY, EXPLORE_TAKES, Lane

MAX_ROWS = 8


def serve(lane: Lane, takes: int, alone: float, together: float, now: float = 0.0) -> list[int]:
    """``takes`` takes from a queue that never empties, each cycle costing ``alone`` or
    ``together`` seconds a row; the rows each take was allowed."""
    allowed = []
    for _ in range(takes):
        rows = lane.batch_rows(MAX_ROWS)
        allowed.append(rows)
        lane.taken(now, rows, together=rows > 1, queued=True)
        now += rows * (together if rows > 1 else alone)
    return allowed


@pytest.mark.parametrize(("alone", "together", "batching"), [(1.0, 0.8, True), (1.0, 1.2, False)])
def test_a_lane_serves_the_way_that_serves_a_row_sooner(
    alone: float, together: float, batching: bool
) -> None:
    lane = Lane()
    allowed = serve(lane, 4 * EXPLORE_EVERY, alone, together)
    assert lane.served_alone.per_row == pytest.approx(alone)
    assert lane.served_together.per_row == pytest.approx(together)
    settled = allowed[2 * EXPLORE_EVERY :]
    chosen = MAX_ROWS if batching else 1
    # All but a few in every EXPLORE_EVERY, which measure the other way again.
    assert settled.count(chosen) >= len(settled) - 2 * EXPLORE_TAKES
    assert settled.count(chosen) < len(settled)


def test_a_lane_changes_its_mind_when_the_costs_change() -> None:
    lane = Lane()
    serve(lane, 2 * EXPLORE_EVERY, alone=1.0, together=1.2)
    allowed = serve(lane, 4 * EXPLORE_EVERY, alone=1.0, together=0.5, now=1e6)
    assert allowed[-EXPLORE_EVERY:].count(MAX_ROWS) >= EXPLORE_EVERY - EXPLORE_TAKES


def test_the_first_cycle_after_a_change_is_not_counted() -> None:
    """After a batch, the next cycle also answers the batch's requests and reads what their
    clients sent next: it says little about serving one by one."""
    lane = Lane()
    lane.taken(0.0, 8, together=True, queued=False)  # no take before it: not counted
    lane.taken(8.0, 8, together=True, queued=False)
    lane.taken(16.0, 1, together=False, queued=True)  # ends the batched cycle: 1.0 a row
    lane.taken(26.0, 1, together=False, queued=True)  # the switch's cycle: 10 s, not counted
    lane.taken(27.0, 1, together=False, queued=True)
    lane.taken(28.0, 1, together=False, queued=True)
    assert lane.served_together.per_row == pytest.approx(1.0)
    assert lane.served_alone.per_row == pytest.approx(1.0)


def test_an_idle_queue_s_cycles_are_not_counted() -> None:
    """A take that leaves nobody waiting starts no cycle: the time until the next request
    comes is not the worker's work."""
    lane = Lane()
    for second in range(10):
        lane.taken(float(second * 60), 1, together=False, queued=False)
    assert lane.served_alone.per_row == 0.0
    assert lane.served_together.per_row == 0.0
