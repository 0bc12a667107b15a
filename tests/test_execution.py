"""The executor's batching, in process: concurrent requests share runs, never rows or errors."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

import gevent
import numpy as np
import pytest

from handlers.errors import InvalidInput, ModelFailed
from handlers.execution import Feeds, current_stop
from handlers.tensors import Outputs
from serving.admission import FairGate
from serving.deadline import RequestTimeout, deadline
from serving.execution import (
    MAX_ABANDONED_RUNS,
    YIELD_ABOVE,
    GeventExecutor,
)
from serving.pool_threads import POOL_NICENESS


class VirtualClock:
    """Time that passes only when a test says so: the executor measures runs with it, so that
    what a run costs is exactly what the test says, however late a busy machine wakes the
    threads up (pool threads run at a lower priority than the loop)."""

    def __init__(self) -> None:
        self.now = 0.0
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def spend(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


class Model:
    """y = 2x + row sum, row by row; fails any run holding a row of -1s."""

    def __init__(self, delay: float = 0.01, clock: VirtualClock | None = None) -> None:
        self.delay = delay
        #: If given, each run also spends ``cost(rows)`` on it.
        self.clock = clock
        self.batches: list[int] = []
        self.threads: set[int] = set()

    def __call__(self, feeds: Feeds) -> Outputs:
        x = feeds["x"]
        self.batches.append(x.shape[0])
        self.threads.add(threading.get_ident())
        if (x == -1).all(axis=1).any():
            raise InvalidInput("a row of -1s")
        threading.Event().wait(self.delay)  # a model run takes time, outside the GIL
        if self.clock is not None:
            self.clock.spend(self.cost(x.shape[0]))
        return {"y": 2 * x, "total": x.sum(axis=1)}

    def cost(self, rows: int) -> float:
        """What a run of ``rows`` costs on the virtual clock (0 would read as unmeasured)."""
        return self.delay or 1e-6


def run_concurrently(
    executor: GeventExecutor, model: Model, inputs: list[np.ndarray]
) -> list[object]:
    def one(x: np.ndarray) -> object:
        try:
            return executor.run(model, {"x": x}, batchable=True)
        except InvalidInput as exc:
            return exc

    greenlets = [gevent.spawn(one, x) for x in inputs]
    gevent.joinall(greenlets, raise_error=True)
    return [g.value for g in greenlets]


def rows(seed: int, count: int, width: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(count, width)).astype(np.float32)


def test_concurrent_requests_share_runs_and_get_their_own_rows() -> None:
    model = Model()
    inputs = [rows(seed, count=1 + seed % 3) for seed in range(20)]
    results = run_concurrently(GeventExecutor(1, max_batch_rows=64), model, inputs)
    for x, outputs in zip(inputs, results, strict=True):
        assert isinstance(outputs, dict)
        np.testing.assert_array_equal(outputs["y"], 2 * x)
        np.testing.assert_array_equal(outputs["total"], x.sum(axis=1))
    assert max(model.batches) > 1  # requests queued behind the first run were batched
    assert len(model.batches) < len(inputs)
    assert threading.get_ident() not in model.threads  # 10 ms runs: never on the event loop


def test_short_runs_stay_on_the_event_loop() -> None:
    clock = VirtualClock()
    model = Model(delay=0, clock=clock)
    executor = GeventExecutor(1, max_batch_rows=64, inline_limit=0.01, clock=clock)
    for seed in range(3):
        executor.run(model, {"x": rows(seed, 1)}, batchable=True)
    assert threading.get_ident() in model.threads  # measured as fast, then run inline
    assert len(model.threads) == 2  # the first, unmeasured run went to a pool thread


def test_batches_respect_the_row_limit() -> None:
    model = Model()
    inputs = [rows(seed, count=2) for seed in range(12)]
    run_concurrently(GeventExecutor(1, max_batch_rows=5), model, inputs)
    assert max(model.batches) <= 4  # whole requests only: two 2-row requests fit in 5
    assert sum(model.batches) == 24


def test_one_bad_request_fails_alone() -> None:
    model = Model()
    inputs = [rows(seed, count=1) for seed in range(8)]
    inputs[5] = -np.ones((1, 3), np.float32)
    results = run_concurrently(GeventExecutor(1, max_batch_rows=64), model, inputs)
    for index, (x, outputs) in enumerate(zip(inputs, results, strict=True)):
        if index == 5:
            assert isinstance(outputs, InvalidInput)
        else:
            assert isinstance(outputs, dict)
            np.testing.assert_array_equal(outputs["y"], 2 * x)


def test_different_trailing_shapes_are_not_mixed() -> None:
    model = Model()
    inputs = [rows(seed, count=1, width=3 + seed % 2) for seed in range(10)]
    results = run_concurrently(GeventExecutor(1, max_batch_rows=64), model, inputs)
    for x, outputs in zip(inputs, results, strict=True):
        assert isinstance(outputs, dict)
        np.testing.assert_array_equal(outputs["y"], 2 * x)


def test_outputs_that_do_not_line_up_are_run_again_one_by_one() -> None:
    class Reducing(Model):
        def __call__(self, feeds: Feeds) -> Outputs:
            super().__call__(feeds)
            return {"mean": feeds["x"].mean(axis=0, keepdims=True)}  # one row per run

    model = Reducing()
    inputs = [rows(seed, count=2) for seed in range(6)]
    results = run_concurrently(GeventExecutor(1, max_batch_rows=64), model, inputs)
    for x, outputs in zip(inputs, results, strict=True):
        assert isinstance(outputs, dict)
        np.testing.assert_allclose(outputs["mean"], x.mean(axis=0, keepdims=True))


@pytest.mark.parametrize(("batchable", "max_rows"), [(False, 64), (True, 1)])
def test_no_batching_when_the_model_or_settings_forbid_it(batchable: bool, max_rows: int) -> None:
    model = Model()
    executor = GeventExecutor(1, max_batch_rows=max_rows)
    greenlets = [
        gevent.spawn(executor.run, model, {"x": rows(seed, 1)}, batchable=batchable)
        for seed in range(6)
    ]
    gevent.joinall(greenlets, raise_error=True)
    assert model.batches == [1] * 6


def test_a_delay_gathers_requests_that_arrive_later() -> None:
    model = Model(delay=0)
    executor = GeventExecutor(1, max_batch_rows=64, max_delay=0.05)

    def late(seed: int) -> object:
        gevent.sleep(0.01 * seed)
        return executor.run(model, {"x": rows(seed, 1)}, batchable=True)

    gevent.joinall([gevent.spawn(late, seed) for seed in range(4)], raise_error=True)
    assert model.batches == [4]


class PerRow(Model):
    """Costs more per row in batches than alone, like the benchmark's convolution."""

    def cost(self, rows: int) -> float:
        return 0.003 * rows * (1.3 if rows > 1 else 1.0)


def test_batching_stops_when_it_does_not_pay() -> None:
    clock = VirtualClock()
    model = PerRow(delay=0.001, clock=clock)
    executor = GeventExecutor(1, max_batch_rows=64, clock=clock)
    for _round in range(4):
        run_concurrently(executor, model, [rows(seed, 1) for seed in range(8)])
    assert max(model.batches) > 1  # it tried
    assert model.batches[-8:] == [1] * 8  # and measured that one by one costs no more


def test_batching_goes_on_when_it_pays() -> None:
    model = Model(delay=0.005)  # a fixed cost per run, whatever its rows
    executor = GeventExecutor(1, max_batch_rows=64)
    for _round in range(4):
        run_concurrently(executor, model, [rows(seed, 1) for seed in range(8)])
    assert max(model.batches[-4:]) > 1


def test_joining_a_batch_s_inputs_counts_against_batching(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The run itself pays per row in a batch, but joining the inputs costs more than it saves
    (as copying a conv net's images does): batching stops."""
    clock = VirtualClock()
    model = Model(delay=0.005, clock=clock)  # batching pays, as far as the run goes
    joining = np.concatenate

    def slow_join(arrays: list[np.ndarray]) -> np.ndarray:
        clock.spend(0.01 * len(arrays))  # on the loop, as a large copy is
        return joining(arrays)

    monkeypatch.setattr(np, "concatenate", slow_join)
    executor = GeventExecutor(1, max_batch_rows=64, clock=clock)
    for _round in range(4):
        run_concurrently(executor, model, [rows(seed, 1) for seed in range(8)])
    assert max(model.batches) > 1  # it tried
    assert model.batches[-8:] == [1] * 8


def test_the_gate_admits_in_arrival_order() -> None:
    gate = FairGate(requests=1, body_bytes=100)
    order: list[int] = []

    def holder(index: int) -> None:
        with gate.admit(1):
            order.append(index)
            gevent.sleep(0.001)

    def greedy() -> None:  # takes the gate again and again, as a busy connection would
        for _ in range(3):
            with gate.admit(1):
                order.append(99)
            gevent.sleep(0)

    greenlets = [gevent.spawn(holder, index) for index in range(4)] + [gevent.spawn(greedy)]
    gevent.joinall(greenlets, raise_error=True)
    assert order[:4] == [0, 1, 2, 3]  # the late greedy one never jumps the queue


def test_the_gate_bounds_the_bytes_in_and_lets_a_large_body_in_alone() -> None:
    gate = FairGate(requests=10, body_bytes=100)
    inside: list[int] = []
    most: list[int] = []

    def holder(weight: int) -> None:
        with gate.admit(weight):
            inside.append(weight)
            most.append(sum(min(w, 100) for w in inside))
            if weight > 100:
                assert inside == [weight]  # in alone
            gevent.sleep(0.005)
            inside.remove(weight)

    weights = [60, 30, 500, 20, 50]
    gevent.joinall([gevent.spawn(holder, weight) for weight in weights], raise_error=True)
    assert max(most) <= 100
    assert len(most) == len(weights)


def test_a_waiter_that_gives_up_frees_the_ones_behind_it() -> None:
    gate = FairGate(requests=10, body_bytes=100)
    admitted: list[str] = []

    def holder(name: str, weight: int, seconds: float) -> None:
        with gate.admit(weight):
            admitted.append(name)
            gevent.sleep(seconds)

    first = gevent.spawn(holder, "first", 80, 0.2)
    gevent.sleep(0.01)
    big = gevent.spawn(holder, "big", 50, 0)  # waits for room
    gevent.sleep(0.01)
    small = gevent.spawn(holder, "small", 10, 0)  # waits behind big, though it would fit
    gevent.sleep(0.01)
    assert admitted == ["first"]
    big.kill()  # the client went away
    small.join(timeout=1)
    assert admitted == ["first", "small"]
    first.join()


def within(seconds: float, call: Callable[[], Outputs]) -> Outputs:
    """``call()`` under a request's deadline, as the app sets it."""
    with deadline(seconds, f"did not complete within {seconds:g} s"):
        return call()


def test_a_run_that_outlives_the_timeout_gives_504() -> None:
    model = Model(delay=0.5)
    executor = GeventExecutor(1, max_batch_rows=64)
    feeds = {"x": rows(0, 1)}
    with pytest.raises(RequestTimeout, match=r"within 0\.05 s") as raised:
        within(0.05, lambda: executor.run(model, feeds, batchable=True))
    assert raised.value.status == 504
    with pytest.raises(RequestTimeout):
        within(0.05, lambda: executor.run(model, feeds, batchable=False))


def timed_out_storm(
    executor: GeventExecutor, model: Model, count: int, seconds: float
) -> list[object]:
    def one(seed: int) -> object:
        try:
            return within(
                seconds, lambda: executor.run(model, {"x": rows(seed, 1)}, batchable=True)
            )
        except RequestTimeout as exc:
            return exc

    greenlets = [gevent.spawn(one, seed) for seed in range(count)]
    gevent.joinall(greenlets, raise_error=True)
    return [g.value for g in greenlets]


def test_requests_that_time_out_do_not_jam_the_queue() -> None:
    model = Model(delay=0.2)
    executor = GeventExecutor(1, max_batch_rows=2)
    results = timed_out_storm(executor, model, 5, seconds=0.3)
    assert any(isinstance(result, RequestTimeout) for result in results)
    model.delay = 0  # the model is fast again: a jammed queue would still time out here
    outputs = executor.run(model, {"x": rows(9, 1)}, batchable=True)
    np.testing.assert_array_equal(outputs["y"], 2 * rows(9, 1))


def test_a_batch_that_times_out_is_not_run_again_one_by_one() -> None:
    model = Model(delay=0.3)
    executor = GeventExecutor(1, max_batch_rows=8)
    timed_out_storm(executor, model, 3, seconds=0.1)
    assert len(model.batches) <= 2  # the first lone run, then one batch; no reruns


def wait_for_abandoned_runs(executor: GeventExecutor) -> None:
    """Until the executor's abandoned runs have ended (at most 2 s: pool threads run at a
    lower priority, and a busy machine wakes them late)."""
    ends = time.monotonic() + 2
    while executor.abandoned and time.monotonic() < ends:
        gevent.sleep(0.01)
    assert executor.abandoned == 0


class Stuck:
    """A model whose runs wait until released, as a hook that hangs."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def __call__(self, feeds: Feeds) -> Outputs:
        self.release.wait(10)
        return {"y": feeds["x"]}


def test_a_stuck_run_gives_its_slot_to_the_next_request() -> None:
    stuck, fast = Stuck(), Model(delay=0)
    executor = GeventExecutor(1, max_batch_rows=8)
    try:
        with pytest.raises(RequestTimeout):
            within(0.05, lambda: executor.run(stuck, {"x": rows(0, 1)}, batchable=False))
        assert executor.abandoned == 1
        started = time.monotonic()
        outputs = within(2, lambda: executor.call(fast, {"x": rows(1, 2)}))
        assert time.monotonic() - started < 0.5  # not behind the stuck run
        np.testing.assert_array_equal(outputs["y"], 2 * rows(1, 2))
        assert executor.can_serve
    finally:
        stuck.release.set()
    wait_for_abandoned_runs(executor)  # the abandoned thread ends: its extra slot goes


def test_a_worker_with_too_many_stuck_runs_cannot_serve_and_asks_to_stop() -> None:
    stuck = Stuck()
    executor = GeventExecutor(1, max_batch_rows=8)
    exhausted: list[bool] = []
    executor.on_exhausted = lambda: exhausted.append(True)
    try:
        for seed in range(MAX_ABANDONED_RUNS):
            assert executor.can_serve
            with pytest.raises(RequestTimeout):
                within(0.05, lambda: executor.call(stuck, {"x": rows(seed, 1)}))  # noqa: B023
        assert not executor.can_serve
        assert exhausted == [True]
    finally:
        stuck.release.set()
    wait_for_abandoned_runs(executor)


class EndsWhenStopped:
    """A model whose runs go on until their stop is requested, as onnxruntime's do until
    ``RunOptions.terminate`` is set."""

    def __call__(self, feeds: Feeds) -> Outputs:
        stop = current_stop()
        assert stop is not None, "a run in a pool thread can be stopped"
        stopped = threading.Event()
        stop.on_request(stopped.set)
        stopped.wait(10)
        raise ModelFailed("stopped")


def test_an_abandoned_run_is_asked_to_stop_and_gives_its_slot_back_when_it_does() -> None:
    executor = GeventExecutor(1, max_batch_rows=8)
    for seed in range(MAX_ABANDONED_RUNS + 1):
        feeds = {"x": rows(seed, 1)}
        with pytest.raises(RequestTimeout):
            within(0.05, lambda: executor.run(EndsWhenStopped(), feeds, batchable=False))  # noqa: B023
        wait_for_abandoned_runs(executor)
    assert executor.can_serve


def test_only_runs_in_a_thread_can_be_stopped() -> None:
    stops: list[object] = []
    clock = VirtualClock()
    model = Model(delay=0)

    def runner(feeds: Feeds) -> Outputs:
        stops.append(current_stop())
        clock.spend(1e-5)
        return model(feeds)

    executor = GeventExecutor(1, max_batch_rows=8, clock=clock)
    for seed in range(3):  # the first run in a thread; measured fast, the next ones inline
        executor.run(runner, {"x": rows(seed, 1)}, batchable=False)
    assert stops[0] is not None
    assert stops[1:] == [None, None]


@pytest.mark.parametrize("widths", [(3, 3, 3, 3), (3, 4, 3, 4, 5)])
def test_two_dispatchers_share_the_queue_without_losing_a_turn(widths: tuple[int, ...]) -> None:
    model = Model(delay=0.01)
    executor = GeventExecutor(2, max_batch_rows=64)
    for _round in range(3):
        inputs = [rows(seed, 1, width) for seed, width in enumerate(widths)]
        results = run_concurrently(executor, model, inputs)
        for x, outputs in zip(inputs, results, strict=True):
            assert isinstance(outputs, dict)
            np.testing.assert_array_equal(outputs["y"], 2 * x)
    # Both turns survive: two slow requests that cannot share a run overlap in two threads.
    model.delay = 0.4
    started = time.monotonic()
    run_concurrently(executor, model, [rows(1, 1, 3), rows(2, 1, 6)])
    assert time.monotonic() - started < 0.7  # one after the other would take 0.8 s


@pytest.mark.parametrize(("cost", "first"), [(0.002, "other"), (1e-6, "run")])
def test_a_run_of_a_model_that_cannot_batch_lets_the_loop_go_first_unless_tiny(
    cost: float, first: str
) -> None:
    order: list[str] = []
    clock = VirtualClock()

    def model(feeds: Feeds) -> Outputs:
        order.append("run")
        clock.spend(cost)
        return {"y": feeds["x"]}

    executor = GeventExecutor(1, max_batch_rows=64, inline_limit=1.0, clock=clock)
    for _ in range(3):  # the first in a thread (not measured yet), then inline
        executor.run(model, {"x": rows(0, 1)}, batchable=False)
    order.clear()
    gevent.spawn(order.append, "other")  # ready to run as soon as the loop gets a turn
    executor.run(model, {"x": rows(0, 1)}, batchable=False)
    gevent.sleep(0)
    assert order[0] == first


def test_many_rows_of_a_tiny_model_let_the_loop_go_first() -> None:
    """What a run is expected to take is per row times rows: a request of many rows is no
    tiny run."""
    order: list[str] = []
    clock = VirtualClock()

    def model(feeds: Feeds) -> Outputs:
        order.append("run")
        clock.spend(1e-6 * len(feeds["x"]))
        return {"y": feeds["x"]}

    executor = GeventExecutor(1, max_batch_rows=64, inline_limit=1.0, clock=clock)
    for _ in range(3):
        executor.run(model, {"x": rows(0, 1)}, batchable=False)
    per_row = executor._lanes[model].alone.per_row
    assert 0 < per_row < YIELD_ABOVE  # one row is a tiny run
    many = rows(0, int(2 * YIELD_ABOVE / per_row) + 1)
    order.clear()
    gevent.spawn(order.append, "other")
    executor.run(model, {"x": many}, batchable=False)
    gevent.sleep(0)
    assert order[0] == "other"


def test_pool_threads_let_the_event_loop_go_first() -> None:
    executor = GeventExecutor(1, max_batch_rows=8)

    def niceness(_: Feeds) -> Outputs:
        return {"y": np.array([os.getpriority(os.PRIO_PROCESS, 0)])}

    loop_niceness = os.getpriority(os.PRIO_PROCESS, 0)
    lowered = max(loop_niceness, POOL_NICENESS)
    ran = executor.run(niceness, {"x": rows(0, 1)}, batchable=False)  # a first run: in a thread
    assert ran["y"][0] == lowered
    assert executor.call(os.getpriority, os.PRIO_PROCESS, 0) == lowered
    assert os.getpriority(os.PRIO_PROCESS, 0) == loop_niceness
