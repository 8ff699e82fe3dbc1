"""Reading back what a sink durably holds, without changing anything.

A sink that keeps what it writes offers a reader (``Sink.reader``): ``etcd-bridge verify``
compares it with etcd, and consumers fold it into the prefix's state (``bridge.consumer``). A
reader never writes, never creates what is missing and never moves a position, so it is safe
beside a running bridge. Two kinds:

- a ``StreamReader`` yields the pipeline's events in position order (a stream, a log, a
  table of changes), decoded with the sink's format;
- a ``StateReader`` gives the state a mirror holds: one event per key, in key order, and the
  revision that state is at.

A sink that keeps nothing readable (stdout, Redis pub/sub) raises ``NoReaderError`` saying
why, and ``verify`` reports that sink as not verifiable rather than failing the others.
"""

import abc
from collections.abc import Iterator
from typing import ClassVar

from bridge.closing import Closing
from bridge.errors import BridgeError
from bridge.events import Event, Position


class NoReaderError(BridgeError):
    """The sink keeps nothing that can be read back (the message says why)."""


class SinkReader(Closing):
    """Base of both kinds of reader: a context manager that releases its connections."""


class StreamReader(SinkReader):
    """The events a stream sink durably holds for its pipeline."""

    @abc.abstractmethod
    def events(self, *, after: Position | None = None) -> Iterator[Event]:
        """Every event held after ``after`` (None: from the start), in position order, each
        once (a marker a sink repeats, as the Kafka sink does per partition, comes once), read
        in pages so that memory stays bounded whatever the sink holds."""


REVISION_FIELDS = ("mod_revision", "create_revision", "version", "lease")
"""What etcd keeps of a key besides its value, in the order its ``KeyValue`` lists them."""


class StateReader(SinkReader):
    """The state a mirror sink durably holds."""

    kept: ClassVar[frozenset[str]] = frozenset(REVISION_FIELDS)
    """The ``REVISION_FIELDS`` the mirror keeps; ``items`` gives 0 for the others, which
    ``verify`` then does not compare."""

    @abc.abstractmethod
    def revision(self) -> int:
        """The revision the mirror's state is at (0: it holds nothing yet)."""

    @abc.abstractmethod
    def items(self) -> Iterator[Event]:
        """One ``snapshot`` event per key the mirror holds, in key order (bytes), with the
        key's value, revisions, version and lease, read in pages."""
