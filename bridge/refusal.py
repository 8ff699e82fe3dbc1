"""What a pipeline does with an event its sink refuses for good (``BRIDGE_<NAME>__ON_REFUSED``).

- ``stop`` (default): the pipeline stops before it, as on any fatal error.
- ``omit_value``: the event is delivered at its own position without its value and previous
  value, marked with their sizes (``bridge.events.values_omitted``), for consumers to read
  them from etcd.
- ``dead_letter``: the event is appended to the sink's dead-letter file
  (``bridge.deadletter``), and the pipeline goes on with the next one.

Only a refusal that names its event's position (``SinkRejectedError.position``: the event is
too large for the destination) can be gone past; one that would refuse any event (a
permission revoked) always stops. The pump (``bridge.pump``) applies the policy in three steps:

1. ``take`` the refusal: the refused position becomes *pending*, or the pipeline stops (policy
   ``stop``, no position, or the position was pending already: the sink refused the
   replacement too).
2. Close and reopen the sink and deliver again from the tail it reports: the sink says
   itself what of the refused batch it holds. While a position is pending, each batch is cut
   into ``pieces`` around it: the omitted replacement travels in its place, or the pieces
   before it are written and flushed and then it is diverted (``divert``).
3. Once the stream has moved past it (``passed``: its replacement flushed, or it diverted), it
   is logged in one line, counted in ``etcd_bridge_refused_events_total``, and forgotten.

The exactly-once position moves on only past events delivered in some form. A diverted
event leaves the sink's tail before it until a later event lands there, so the stream's tail
is the later of the sink's and the dead-letter file's (``open``): a restart neither diverts an
event twice nor hands it to the sink again. That holds because every event before a diverted
one was flushed to the sink before it was diverted, so nothing between the two tails is
missing from both.
"""

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Self

from bridge import metrics
from bridge.closing import Closing
from bridge.deadletter import DeadLetterFile
from bridge.errors import SinkRejectedError
from bridge.events import Event, OmittedBytes, Position, values_omitted
from config.refusal import RefusalPolicy, RefusalSettings
from config.settings import variable_name

log = logging.getLogger(__name__)

Piece = tuple[list[Event], Event | None]
"""Events for the sink, then maybe one to divert once they are flushed."""


@dataclass
class _Pending:
    """A refused position not yet passed, the refusal, and the replacement handed in its place
    (None until the event came by again)."""

    error: SinkRejectedError
    replacement: Event | None = None


class Refusals(Closing):
    """One pipeline's policy for the events its sink refuses; see the module docstring."""

    def __init__(
        self,
        policy: RefusalPolicy = RefusalPolicy.STOP,
        *,
        sink: str,
        dead_letters: DeadLetterFile | None = None,
    ) -> None:
        if (policy is RefusalPolicy.DEAD_LETTER) != (dead_letters is not None):
            raise ValueError("a dead-letter file goes with the dead_letter policy, and only")
        self.policy = policy
        self._sink = sink
        self._dead_letters = dead_letters
        self._pending: dict[Position, _Pending] = {}

    @classmethod
    def from_settings(cls, settings: RefusalSettings, *, sink: str) -> Self:
        """The policy of a sink's checked settings (``bridge.plugins.refusal_settings``)."""
        path = settings.dead_letter_path
        dead_letters = (
            None
            if settings.on_refused is not RefusalPolicy.DEAD_LETTER or path is None
            else DeadLetterFile(path, setting=variable_name((sink, "dead_letter_path")))
        )
        return cls(settings.on_refused, sink=sink, dead_letters=dead_letters)

    @property
    def pending(self) -> bool:
        """Whether a refused position awaits its replacement or diversion: only then does
        the pump cut batches into ``pieces``."""
        return bool(self._pending)

    def open(self, tail: Event | None) -> Event | None:
        """The stream's tail given the sink's ``tail``: the later of it and the last event
        diverted (the dead-letter file is reopened, a torn line cut)."""
        if self._dead_letters is None:
            return tail
        diverted = self._dead_letters.open()
        if diverted is not None and (tail is None or diverted.position > tail.position):
            return diverted
        return tail

    def take(self, error: SinkRejectedError) -> bool:
        """Whether the pipeline goes on past the event ``error`` refuses (then the pump
        reopens the sink and delivers again); False: it stops, counted here if ``error``
        names its event."""
        position = error.position
        if position is None:
            return False
        if self.policy is RefusalPolicy.STOP or position in self._pending:
            self._count(RefusalPolicy.STOP)
            return False
        self._pending[position] = _Pending(error)
        return True

    def pieces(self, batch: list[Event]) -> Iterator[Piece]:
        """``batch`` cut around the pending positions it holds (see the module docstring).
        Raises the refusal of an event that ``omit_value`` cannot help: it has no value."""
        events: list[Event] = []
        for event in batch:
            pending = self._pending.get(event.position)
            if pending is None or pending.error.key not in (None, event.key):
                events.append(event)  # not the refused event: a resync renumbered it
            elif self._dead_letters is not None:
                yield events, event
                events = []
            elif event.value is None and event.prev_value is None:
                raise pending.error  # pending: ``take`` counts it and stops
            else:
                pending.replacement = values_omitted(event)
                events.append(pending.replacement)
        if events:
            yield events, None

    def divert(self, event: Event) -> None:
        """Append ``event`` to the dead-letter file (durable on return), and pass it."""
        if self._dead_letters is None:
            raise RuntimeError("divert without a dead-letter file")
        self._dead_letters.append(event)
        pending = self._pending.pop(event.position)
        self._report(event, OmittedBytes.of(event), error=pending.error)

    def passed(self, position: Position) -> None:
        """The sink durably holds everything up to ``position``: report the replacements it
        holds, and forget every pending position up to it."""
        for refused in [refused for refused in self._pending if refused <= position]:
            pending = self._pending.pop(refused)
            replacement = pending.replacement
            if replacement is not None and replacement.omitted_bytes is not None:
                self._report(replacement, replacement.omitted_bytes, error=pending.error)

    def close(self) -> None:
        if self._dead_letters is not None:
            self._dead_letters.close()

    def _report(self, event: Event, sizes: OmittedBytes, *, error: SinkRejectedError) -> None:
        self._count(self.policy)
        log.warning(
            "a refused event was diverted to the dead-letter file"
            if self._dead_letters is not None
            else "a refused event was delivered without its values",
            extra={
                "sink": self._sink,
                "key": event.key.decode("utf-8", "backslashreplace"),
                "revision": event.revision,
                "index": event.index,
                "bytes": sizes.total,
                "policy": self.policy.value,
                "refusal": str(error),
            },
        )

    def _count(self, policy: RefusalPolicy) -> None:
        metrics.REFUSED_EVENTS.labels(self._sink, policy.value).inc()
