"""Exponential backoff with jitter, as one small reusable object.

Every retry loop in the bridge (reconnecting to etcd, rewriting a batch to a sink that is down)
uses a ``Backoff`` instead of its own ``while True: sleep``, so delays are bounded, jittered
(instances restarting together do not stampede) and reset after a success.
"""

import random
import threading
from dataclasses import dataclass, field


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
