"""The contract between the pump and a sink.

A sink is opened once, written in batches, flushed, and closed. The pump owns the order and
the positions; the sink owns durability. The contract, which every sink's tests check:

``open() -> Event | None``
    Connect, verify the sink is usable (fail here with a clear ``SinkError`` rather than at the
    first write), and return the **last event the sink durably holds**, or None when it holds
    nothing of this pipeline. Read it back from the sink itself wherever possible (the file's
    last complete line, the stream's last entry, the tails of the partitions); otherwise from a
    checkpoint written atomically with the data, or after it (then say: at-least-once).

``write(batch)``
    Accept a batch of events. Positions in a batch strictly increase and are all greater than
    the durable tail. A batch may end inside a revision (one revision can hold a million
    changes, and a snapshot is one revision of any size): positions are per event, so a sink
    may hold part of a revision durably. A sink that must apply a revision whole (a mirror)
    waits for its last change, the one whose ``more`` is unset, staging the rest durably
    with its position. A sink may buffer; it must not reorder. An event whose values were
    left out (``omitted_bytes`` set, ``value`` and ``prev_value`` None: the sink refused it
    whole before) is written like any other.

``flush()``
    Return only when every event written so far is durable, so that ``open()`` on a fresh
    instance would return the last of them, or an earlier one if that sink itself skips what
    it already holds past it (the Kafka sink's checkpoint may lag one batch behind its
    partitions, whose tails it reads back and skips to). Raise ``SinkUnavailableError`` for a
    transient failure (the pump reopens the sink and rewrites from its durable tail) and
    ``SinkRejectedError`` for a permanent one (the message names the key and revision). Give
    it the refused event's ``position`` where the sink refuses that event for what it is (too
    large for the destination): the pump then applies the sink's ``ON_REFUSED`` policy
    (``bridge.refusal``), reopening the sink and delivering again from its tail; without a
    position (a permission, a setting) the pipeline stops.

``close()``
    Release connections. Idempotent. Never called concurrently with the others.

``reader(settings, context=...) -> SinkReader`` (optional, a class method)
    What the sink holds, read back without changing anything (``bridge.reader``): for
    ``etcd-bridge verify`` and consumers. A sink that keeps nothing readable raises
    ``NoReaderError`` saying why (the default).

``peek() -> Event | None`` (optional)
    The durable tail, read without changing anything, for ``etcd-bridge status`` beside a
    running bridge. By default ``open()`` then ``close()``, which suits a sink whose ``open``
    only reads and creates what is missing; a sink whose ``open`` repairs its data (the file
    sink cuts a torn last line) reads without repairing.

The pump never writes an event at or below the durable tail, so a sink that reads its tail
back from its own data is exactly once across ``kill -9``. It also remembers what it flushed:
a reopened sink whose tail is behind that (more than ``flushes_behind`` flushes) lost data it
had acknowledged, and gets a new snapshot (reason ``lost``) instead of a resume in the middle.

One destination, one writer: a sink that can tell refuses to open a destination another
bridge writes (a lock, an owner marker), with a ``SinkRejectedError`` naming the other one;
with HA (``SinkContext.ha``) it lets another instance of its own pipeline go, since the
election already keeps a paused former leader from writing.

A sink is a plug-in: found by name through the ``etcd_bridge.sinks`` entry point group (see
``bridge.plugins``), configured by its own pydantic model (``settings_model``) that the bridge
fills from ``BRIDGE_<NAME>__*`` variables and validates with the core's one-line errors, and
built by ``from_settings``. The core never names a sink; the built-in ones are registered in
pyproject.toml exactly like a third party's.
"""

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict

from bridge.closing import Closing
from bridge.events import Event
from bridge.formats import EventFormat, FormatContext
from bridge.formats.native import NativeFormat
from bridge.reader import NoReaderError, SinkReader
from config.keyspace import KeySpace
from config.output import FormatName, OutputSettings

NATIVE = NativeFormat(
    FormatContext(pipeline="", cluster="", keyspace=KeySpace.of([])), OutputSettings()
)
"""The default format: native records with byte values, which name nothing of the pipeline."""


class NoSettings(BaseModel):
    """The settings of a sink that has none."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True, slots=True)
class SinkContext:
    """What a sink may know of the pipeline besides its own settings."""

    pipeline: str
    """``BRIDGE_NAME``: namespaces whatever the sink keeps per pipeline (checkpoints)."""
    keyspace: KeySpace
    """The watched prefixes, for routing by key segment (``bridge.keytemplate``)."""
    format: EventFormat = NATIVE
    """What the sink's records look like (``BRIDGE_<NAME>__FORMAT``, ``BRIDGE_VALUES``): a
    sink that declares more than the native format in ``Sink.formats`` encodes with it, and
    reads its tail back with it where it reads records back."""
    ha: bool = False
    """``BRIDGE_HA__ENABLED``: instances of this pipeline take turns under the election, so a
    destination held by another instance of the same pipeline (a paused former leader) is
    taken over rather than refused."""


class Sink(Closing, abc.ABC):
    """Base class of every sink; see the module docstring for the contract."""

    name: ClassVar[str]
    """The name users select the sink by in ``BRIDGE_SINKS``."""

    settings_model: ClassVar[type[BaseModel]] = NoSettings
    """The sink's own settings, read from ``BRIDGE_<NAME>__<FIELD>`` (nested models add
    ``__<FIELD>``); field descriptions are what ``etcd-bridge settings`` prints."""

    formats: ClassVar[frozenset[FormatName]] = frozenset({FormatName.NATIVE})
    """The record formats the sink writes through ``context.format``; selecting another one
    is a configuration error. A sink that writes events as records (rather than rows or
    state) should accept every ``FormatName``."""

    flushes_behind: ClassVar[int] = 0
    """How many flushes the tail ``open()`` reports may lag behind the last flush (the Kafka
    sink's checkpoint travels with the next flush: 1). The pump takes a tail further behind
    than that for data the sink lost."""

    guarantee: str = "exactly-once"
    """What a consumer gets across crashes (``exactly-once``, ``at-least-once``, ...); a sink
    whose guarantee depends on its settings sets it per instance. Shown by ``check`` and logs."""

    @classmethod
    @abc.abstractmethod
    def from_settings(cls, settings: Any, *, context: SinkContext) -> Self:
        """Build the sink from its validated ``settings_model`` instance; connect later, in
        ``open``, so that building never fails for a server that is down."""

    @abc.abstractmethod
    def open(self) -> Event | None:
        """Connect and return the last event durably held, or None."""

    @abc.abstractmethod
    def write(self, batch: Sequence[Event]) -> None:
        """Accept events past the durable tail, in order; may buffer."""

    @abc.abstractmethod
    def flush(self) -> None:
        """Make everything written durable before returning."""

    @classmethod
    def reader(cls, settings: Any, *, context: SinkContext) -> SinkReader:
        """A reader of what the sink holds with ``settings`` (see the module docstring)."""
        raise NoReaderError(f"the {cls.name} sink offers no reader of what it holds")

    def peek(self) -> Event | None:
        """The durable tail, read without changing anything (see the module docstring)."""
        with self:
            return self.open()
