"""How a handler's blocking model runs are executed.

A handler validates a request's data and then hands a *runner* (a blocking function from feeds
to outputs, safe to call from any thread) and those feeds to an :class:`Executor`. The default
one calls the runner right away. The server gives handlers one that runs it in native threads
off the event loop and gathers concurrent requests into batches (``serving/execution.py``);
handlers stay the same either way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from .tensors import Array, Outputs

#: Model inputs by name, already checked and cast to what the model declares.
Feeds = dict[str, Array]
#: A blocking model run.
Runner = Callable[[Feeds], Outputs]

T = TypeVar("T")


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
