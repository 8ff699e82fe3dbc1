"""Retrying what may succeed later: a backoff strategy and the one loop that reads ``retryable``.

Every retry in the bridge (reopening a sink that is down, reconnecting to etcd, campaigning
for leadership while etcd is away) goes through ``Retry``, in the manner of redis-py's
``Retry`` object: call the operation; on an error whose ``retryable`` flag is set
(``bridge.errors``), report it, wait the ``Backoff`` and call again; let every other error
through. Delays are therefore bounded, jittered (instances restarting together do not
stampede) and reset after a success, the wait ends at once when the bridge stops, and no
component hand-writes a ``while True: sleep`` of its own.
"""

import random
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

from bridge.errors import BridgeError

T = TypeVar("T")


@dataclass
class Backoff:
    """Delays of ``initial * factor**n`` seconds, capped at ``maximum``, with full jitter."""

    initial: float = 0.1
    maximum: float = 5.0
    factor: float = 2.0
    _attempts: int = field(default=0, init=False)

    def next_delay(self) -> float:
        ceiling = min(self.maximum, self.initial * self.factor**self._attempts)
        self._attempts += 1
        return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not security

    def wait(self, stop: threading.Event) -> bool:
        """Sleep the next delay; return False at once if ``stop`` is set meanwhile."""
        return not stop.wait(self.next_delay())

    def reset(self) -> None:
        self._attempts = 0

    @property
    def attempts(self) -> int:
        return self._attempts


OnError = Callable[[BridgeError], None]
"""Told of each retryable error before the wait: logs it, counts it, releases what failed."""


class Retry:
    """Retries an operation on retryable errors with ``backoff``, until ``stop`` is set."""

    def __init__(self, backoff: Backoff, *, stop: threading.Event) -> None:
        self.backoff = backoff
        self._stop = stop

    @property
    def attempts(self) -> int:
        """Failed attempts since the last success (0 while all is well)."""
        return self.backoff.attempts

    def call(self, operation: Callable[[], T], *, on_error: OnError) -> T | None:
        """``operation()``'s result; None when ``stop`` was set before it succeeded.

        A retryable error goes to ``on_error``, then the backoff is waited and the operation
        called again; any other error is raised as it is. A success resets the backoff.
        """
        while not self._stop.is_set():
            try:
                result = operation()
            except BridgeError as error:
                if not error.retryable:
                    raise
                self._wait(error, on_error=on_error)
                continue
            self.backoff.reset()
            return result
        return None

    def iterate(self, operation: Callable[[], Iterator[T]], *, on_error: OnError) -> Iterator[T]:
        """The items of ``operation()``, which is started again after a retryable error.

        For long-running work that shows progress by its items (chunks read, batches
        delivered): each item resets the backoff, so a source that failed once an hour waits
        the first delay, not the longest. Ends when the operation ends or ``stop`` is set; the
        operation is expected to resume from its own state (the restarted iterator does not
        repeat what was already yielded unless the operation does).
        """
        while not self._stop.is_set():
            try:
                for item in operation():
                    self.backoff.reset()
                    yield item
                return
            except BridgeError as error:
                if not error.retryable:
                    raise
                self._wait(error, on_error=on_error)

    def _wait(self, error: BridgeError, *, on_error: OnError) -> None:
        """Report a retryable error, then wait the backoff (cut short when stopped)."""
        on_error(error)
        self.backoff.wait(self._stop)
