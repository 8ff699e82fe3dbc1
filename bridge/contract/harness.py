"""What the contract checks need from one sink: a ``SinkHarness`` per sink, made per check.

The checks know nothing of any server. A harness stands for one sink on one fresh, isolated
destination (a file of its own, a stream or topic no one else uses) on a server it was given
or started: it builds sink instances writing there, and reads back what the destination
holds *by its own means* (XRANGE, a Kafka consumer, the file's lines), never through the
sink, so that a sink cannot vouch for itself. The optional parts make further checks apply:
an ``outage`` of the server, and a ``poison`` event the sink must refuse for good.
"""

import abc
from collections.abc import Sequence
from contextlib import AbstractContextManager

from bridge.closing import Closing
from bridge.events import Event
from bridge.sink import Sink
from config.keyspace import KeySpace

PREFIX = b"/contract/"
"""The watched prefix of every history the checks deliver: harnesses build their sinks with
``KEYSPACE`` in their ``SinkContext``."""
KEYSPACE = KeySpace.of([PREFIX])


class SinkHarness(Closing, abc.ABC):
    """One sink on one fresh, isolated destination; closed after the check that used it."""

    @abc.abstractmethod
    def make_sink(self) -> Sink:
        """A new, unopened sink instance writing to this harness's destination (the checks
        make several, one per "process": each must find what the previous ones left)."""

    @abc.abstractmethod
    def delivered(self) -> object:
        """What the destination holds now, read independently of the sink: for a log-like
        sink the events in the sink's order (a partitioned one merged by position), for a
        sink that keeps state whatever ``expected`` returns for it."""

    def expected(self, events: Sequence[Event]) -> object:
        """What ``delivered`` must equal once exactly ``events`` (a prefix of one history) are
        durable; by default the events themselves. A mirror returns
        ``bridge.contract.applied_state(events)``."""
        return list(events)

    def outage(self) -> AbstractContextManager[None] | None:
        """A context in which the sink's server is unavailable (paused, stopped, cut off),
        available again after it; None when the harness cannot do that (the check that
        needs it is then not applicable)."""
        return None

    def poison(self, event: Event) -> Event | None:
        """A version of the change ``event`` that this sink must refuse for good with
        ``SinkRejectedError`` (a value over its size limit...); None when it refuses nothing
        the pump can hand it."""
        return None

    def close(self) -> None:
        """Release what the harness opened (clients, temporary names); never the server it
        was given."""
