"""How a handler's blocking model runs are executed.

A handler validates a request's data and then hands a *runner* (a blocking function from feeds
to outputs, safe to call from any thread) and those feeds to an :class:`Executor`. The default
one calls the runner right away. The server gives handlers one that runs it in native threads
off the event loop and gathers concurrent requests into batches (``serving/execution.py``);
handlers stay the same either way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Protocol, TypeVar

from .tensors import Array, Outputs

#: Model inputs by name, already checked and cast to what the model declares.
Feeds = dict[str, Array]
#: A blocking model run.
Runner = Callable[[Feeds], Outputs]

T = TypeVar("T")


class RunStop:
    """Asks a model run that is under way to end early.

    The server requests it when the run's request gives up on it (its timeout, or a stop
    cutting it short), so that the run does not go on taking a CPU for nobody. A runner that
    can end early registers how with :meth:`on_request` (the ONNX handler sets onnxruntime's
    ``RunOptions.terminate``); other runs just finish. Safe from any thread: a hook that is
    registered as the stop is requested may be called twice.
    """

    def __init__(self) -> None:
        self.requested = False
        self._hooks: list[Callable[[], None]] = []

    def on_request(self, hook: Callable[[], None]) -> None:
        """Call ``hook`` when the stop is requested (at once if it already was)."""
        self._hooks.append(hook)
        if self.requested:
            hook()

    def request(self) -> None:
        self.requested = True
        for hook in list(self._hooks):
            hook()


_current_stop: ContextVar[RunStop | None] = ContextVar("current_stop", default=None)


def current_stop() -> RunStop | None:
    """The :class:`RunStop` of the run the calling thread is doing, if it can be stopped."""
    return _current_stop.get()


@contextmanager
def stoppable(stop: RunStop) -> Iterator[None]:
    """Runs within the block can be stopped with ``stop``."""
    token = _current_stop.set(stop)
    try:
        yield
    finally:
        _current_stop.reset(token)


class Executor(Protocol):
    def run(self, runner: Runner, feeds: Feeds, *, batchable: bool) -> Outputs:
        """``runner(feeds)``, however this executor runs it.

        ``batchable`` says the runner may get the feeds of several requests concatenated along
        the first axis and returns outputs whose first axis lines up with it, so that they can
        be split back per request.
        """
        ...

    def call(self, function: Callable[..., T], *args: Any) -> T:
        """``function(*args)``: other blocking work, such as user code, off the event loop."""
        ...


class InlineExecutor:
    """Runs the model in the calling thread, one request at a time."""

    def run(self, runner: Runner, feeds: Feeds, *, batchable: bool) -> Outputs:
        return runner(feeds)

    def call(self, function: Callable[..., T], *args: Any) -> T:
        return function(*args)
