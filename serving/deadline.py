"""One deadline per request (``SAGEMAKER_MODEL_SERVER_TIMEOUT``), wherever it waits.

A request's greenlet waits for its body, for admission, for a hook or a model run in a pool
thread; once its time is up it gets :class:`RequestTimeout` (a 504) at whichever wait it is
in, and a run it waited for is abandoned (see :mod:`serving.execution`). One greenlet per
worker checks the requests in flight every :data:`DEADLINE_CHECK_SECONDS` (so a 504 may come
that much late): a ``gevent.Timeout`` per request cost 3 µs, 3% of a small model's request.
"""

from __future__ import annotations

import time
from http import HTTPStatus
from typing import Any, ClassVar

import gevent

from handlers.errors import ServingError

#: How often a worker looks for requests past their deadline, in seconds.
DEADLINE_CHECK_SECONDS = 0.05


class RequestTimeout(ServingError):
    """A request outlived ``SAGEMAKER_MODEL_SERVER_TIMEOUT``; a run it waited for goes on,
    abandoned."""

    status = HTTPStatus.GATEWAY_TIMEOUT


class _Expired(BaseException):  # a signal: no ``except Exception`` on the way may swallow it
    def __init__(self, deadline: deadline) -> None:
        super().__init__()
        self.deadline = deadline


class deadline:  # noqa: N801 - used as a function: ``with deadline(seconds, message):``
    """:class:`RequestTimeout` with ``message`` once ``seconds`` have passed, wherever the
    greenlet waits then: for a body, for admission, for a hook or a model run (which is then
    abandoned). One greenlet per worker checks the requests in flight every
    :data:`DEADLINE_CHECK_SECONDS` (so a 504 may come that much late) and throws into those
    past their time: a ``gevent.Timeout`` per request cost 3 µs, 3% of a small model's
    request."""

    __slots__ = ("at", "greenlet", "message")

    greenlet: Any

    #: The deadlines in flight in this process, and the greenlet that checks them.
    _active: ClassVar[dict[int, deadline]] = {}
    _checker: ClassVar[gevent.Greenlet | None] = None

    def __init__(self, seconds: float, message: str) -> None:
        self.at = time.monotonic() + seconds
        self.message = message

    def __enter__(self) -> None:
        self.greenlet = gevent.getcurrent()
        deadline._active[id(self)] = self
        if deadline._checker is None or deadline._checker.dead:
            deadline._checker = gevent.spawn(deadline._check)

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, _: Any
    ) -> None:
        deadline._active.pop(id(self), None)
        self.greenlet = None  # ended: nothing to throw into any more
        if isinstance(error, _Expired) and error.deadline is self:
            raise RequestTimeout(self.message) from None

    @staticmethod
    def _check() -> None:
        hub = gevent.get_hub()
        while True:
            gevent.sleep(DEADLINE_CHECK_SECONDS)
            now = time.monotonic()
            for passed in [d for d in deadline._active.values() if d.at <= now]:
                del deadline._active[id(passed)]  # thrown once
                hub.loop.run_callback(passed._throw)

    def _throw(self) -> None:
        # Run by the hub, while every greenlet waits: the request may have ended meanwhile.
        greenlet = self.greenlet
        if greenlet is not None and not greenlet.dead:
            greenlet.throw(_Expired(self))
