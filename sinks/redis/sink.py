"""The ``redis`` sink: etcd changes into Redis streams, a pub/sub channel, or a mirror hash.

This is the only module that imports redis-py. Every batch is written by one Lua script call
(``sinks.redis.lua``) that also records the position the batch completes, so data and position
are never apart: Redis applies a script whole (and, with persistence, logs it whole), which is
what makes the sink exactly once across a ``kill -9`` of the bridge, whatever Redis's own
durability: if Redis loses its last writes, it loses the position with them, and the pump
rewrites exactly those.

Where the position lives, per mode (docs/redis.md has the consumer's view):

- ``stream`` with one stream: the stream itself. Entry ids are the events' positions
  ``<revision>-<index>``; ``open()`` reads the last entry back (XREVRANGE COUNT 1) and its
  ``event`` field is the full event. XADD ... MAXLEN ~ never trims the newest entry, so trimming
  never loses the position.
- ``stream`` with a routing template, ``pubsub``, ``mirror``: a checkpoint hash
  (``revision``, ``index``, ``event``) written by the same script as the data.

Batches: ``write`` sends chunks of ``batch_size`` events as they fill and ``flush`` sends the
rest, so a call holds at most one pump batch (bounded by ``BRIDGE_PUMP__BATCH_BYTES``). A
chunk may end anywhere, inside a revision too (a delete-range of a million keys is one
revision): positions are per event.
The mirror, which promises never to show half a transaction, stages the changes of a
revision that continues past a script call (``Event.more``) in a hash beside it and applies
them with the revision's last change.

Memory: with ``maxmemory-policy noeviction`` a full Redis refuses the script up front (OOM),
which is retried like an outage until memory is freed; an ``allkeys-*`` policy, which may
evict the stream or the checkpoint, is refused at open (``BRIDGE_REDIS__ACCEPT_EVICTION``
accepts it knowingly).

One destination, one writer: ``open`` claims the destination's owner key, a thread renews it
while the sink is open, and every script checks it with its writes, so that a second bridge
pointed at the same stream, channel or mirror is refused naming the first
(``sinks.redis.owner`` says why the key expires, and how a restart takes it over).

Errors: connection loss, timeouts, a loading or read-only server, OOM and MISCONF become
``SinkUnavailableError`` (the pump reopens and rewrites from the durable tail; the scripts skip
anything already held, so a reply lost after Redis applied a batch duplicates nothing). A wrong
password, a missing ACL permission, a key of the wrong type or a Redis older than 7 become
``SinkRejectedError`` with one line naming the user, permission or setting. No message ever
holds the URL's password: they show ``RedisSettings.safe_url``.
"""

import logging
from collections.abc import Sequence
from typing import Self

import redis
import redis.exceptions

from bridge.encoding import printable_key
from bridge.errors import SinkError, SinkRejectedError, SinkUnavailableError
from bridge.events import Event, EventType, Op, Position
from bridge.formats import EventFormat
from bridge.keytemplate import KeyTemplate
from bridge.ownership import Claimant, Owner
from bridge.reader import SinkReader
from bridge.sink import Sink, SinkContext
from config.errors import ConfigError
from config.keyspace import KeySpace
from config.output import FormatName
from sinks.redis import lua
from sinks.redis.client import (
    Arguments,
    Script,
    as_bytes,
    checkpoint_key,
    connect,
    owned_by,
    refuse_eviction,
    translate,
)
from sinks.redis.owner import OwnerMarker
from sinks.redis.reader import reader_of
from sinks.redis.settings import RedisMode, RedisSettings

log = logging.getLogger(__name__)


_STREAM = Script.of(lua.STREAM)
_ROUTED = Script.of(lua.ROUTED)
_PUBSUB = Script.of(lua.PUBSUB)
_MIRROR = Script.of(lua.MIRROR)


class _Layout:
    """What one mode reads back on open and sends per chunk: its keys and arguments."""

    script: Script
    target: str
    """Where the events go, for messages."""
    names: list[str]
    """The keys (and channel) the sink uses, for messages about ACL patterns."""

    def read_tail(self, client: "redis.Redis") -> Event | None:
        raise NotImplementedError

    def call(self, chunk: Sequence[Event]) -> tuple[list[bytes | str], Arguments]:
        raise NotImplementedError

    def committed(self, chunk: Sequence[Event]) -> None:
        """Called once a chunk's script call succeeded."""


def _checkpoint_tail(client: "redis.Redis", checkpoint: str) -> Event | None:
    raw = client.hget(checkpoint, "event")
    if raw is None:
        return None
    try:
        return Event.from_json(as_bytes(raw))
    except (ValueError, KeyError) as error:
        raise SinkRejectedError(
            f"redis: checkpoint {checkpoint!r} does not hold an etcd-bridge event ({error}); "
            "set BRIDGE_REDIS__CHECKPOINT_KEY to a key of this pipeline"
        ) from error


class _StreamLayout(_Layout):
    """One stream; entries ``op``, ``key``, ``event``; its last entry is the position."""

    script = _STREAM

    def __init__(self, *, stream: bytes, maxlen: int | None, record_format: EventFormat) -> None:
        self.stream = stream
        self.format = record_format
        self.maxlen = "" if maxlen is None else str(maxlen)
        self.target = f"stream {stream.decode(errors='replace')!r}"
        self.names = [f"key {stream.decode(errors='replace')!r}"]

    def read_tail(self, client: "redis.Redis") -> Event | None:
        entries = client.xrevrange(self.stream, count=1)
        if not entries:
            return None
        raw_id, fields = entries[0]
        entry_id = as_bytes(raw_id).decode()
        name = self.stream.decode(errors="replace")
        raw = (fields or {}).get(b"event")
        if raw is None:
            raise SinkRejectedError(
                f"redis: the last entry {entry_id} of stream {name!r} has no 'event' "
                "field: the stream is not etcd-bridge's; choose another BRIDGE_REDIS__STREAM"
            )
        try:
            event = self.format.decode(as_bytes(raw))
        except (ValueError, KeyError, TypeError) as error:
            raise SinkRejectedError(
                f"redis: the last entry of stream {name!r} is not an etcd-bridge "
                f"{self.format.name.value} record ({error}); choose another "
                "BRIDGE_REDIS__STREAM, or set BRIDGE_REDIS__FORMAT to the format it holds"
            ) from error
        if str(event.position) != entry_id:
            raise SinkRejectedError(
                f"redis: the last entry of stream {name!r} has id {entry_id} but holds "
                f"the event at {event.position}; the stream was not written by etcd-bridge"
            )
        return event

    def call(self, chunk: Sequence[Event]) -> tuple[list[bytes | str], Arguments]:
        args = Arguments(self.maxlen)
        change = args.change
        for event, record in zip(chunk, self.format.encode_batch(chunk), strict=True):
            change(event, record)
        return [self.stream], args


class _RoutedLayout(_Layout):
    """Streams chosen per key by a template; the position is a checkpoint hash."""

    script = _ROUTED

    def __init__(
        self,
        *,
        template: KeyTemplate,
        keyspace: KeySpace,
        maxlen: int | None,
        checkpoint: str,
        record_format: EventFormat,
    ) -> None:
        self.template = template
        self.format = record_format
        self.keyspace = keyspace
        self.maxlen = "" if maxlen is None else str(maxlen)
        self.checkpoint = checkpoint
        self.known_set = f"{checkpoint}:streams"
        self.known: set[bytes] = set()
        self.target = "the streams of BRIDGE_REDIS__STREAM"
        self.names = [
            f"keys {checkpoint!r}, {self.known_set!r}",
            f"the streams of template {template.source!r}",
        ]

    def read_tail(self, client: "redis.Redis") -> Event | None:
        self.known = {as_bytes(member) for member in client.smembers(self.known_set)}
        return _checkpoint_tail(client, self.checkpoint)

    def call(self, chunk: Sequence[Event]) -> tuple[list[bytes | str], Arguments]:
        slots: dict[bytes, int] = {}
        # Markers go to every known stream; the empty probe of open() checks them all too.
        if not chunk or any(event.type is EventType.MARKER for event in chunk):
            for stream in sorted(self.known):
                slots[stream] = len(slots) + 3
        args = Arguments(self.maxlen, chunk[-1].to_json() if chunk else b"")
        for event, record in zip(chunk, self.format.encode_batch(chunk), strict=True):
            if event.type is EventType.MARKER:
                slot = 0
            else:
                stream = self.template.render(event.key, keyspace=self.keyspace)
                slot = slots.setdefault(stream, len(slots) + 3)
            args.add(slot)
            args.change(event, record)
        return [self.checkpoint, self.known_set, *slots], args

    def committed(self, chunk: Sequence[Event]) -> None:
        for event in chunk:
            if event.type is not EventType.MARKER:
                self.known.add(self.template.render(event.key, keyspace=self.keyspace))


class _PubSubLayout(_Layout):
    """PUBLISH of each event's JSON on one channel; the position is a checkpoint hash."""

    script = _PUBSUB

    def __init__(self, *, channel: str, checkpoint: str, record_format: EventFormat) -> None:
        self.channel = channel
        self.format = record_format
        self.checkpoint = checkpoint
        self.target = f"channel {channel!r}"
        self.names = [f"key {checkpoint!r}", f"channel {channel!r}"]

    def read_tail(self, client: "redis.Redis") -> Event | None:
        return _checkpoint_tail(client, self.checkpoint)

    def call(self, chunk: Sequence[Event]) -> tuple[list[bytes | str], Arguments]:
        args = Arguments(self.channel, chunk[-1].to_json() if chunk else b"")
        for event, record in zip(chunk, self.format.encode_batch(chunk), strict=True):
            args.add(event.revision, event.index, record)
        return [self.checkpoint], args


class _MirrorLayout(_Layout):
    """A hash equal to the prefix, with a companion hash of mod_revisions."""

    script = _MIRROR

    def __init__(self, *, mirror_key: str, checkpoint: str) -> None:
        self.keys: list[bytes | str] = [
            checkpoint,
            mirror_key,
            f"{mirror_key}:rev",
            f"{mirror_key}:next",
            f"{mirror_key}:next:rev",
            f"{mirror_key}:txn",
        ]
        self.checkpoint = checkpoint
        self.target = f"mirror hash {mirror_key!r}"
        self.names = ["keys " + ", ".join(repr(key) for key in self.keys)]

    def read_tail(self, client: "redis.Redis") -> Event | None:
        return _checkpoint_tail(client, self.checkpoint)

    def call(self, chunk: Sequence[Event]) -> tuple[list[bytes | str], Arguments]:
        args = Arguments(chunk[-1].to_json() if chunk else b"")
        for event in chunk:
            guard = event.mod_revision if event.op is Op.SNAPSHOT else event.revision
            args.change(event, event.value if event.value is not None else b"")
            args.add(guard, 1 if event.more else 0)
        return self.keys, args


def _layout(own: RedisSettings, *, context: SinkContext) -> _Layout:
    checkpoint = checkpoint_key(own, pipeline=context.pipeline)
    record_format = context.format
    if own.mode is RedisMode.PUBSUB:
        return _PubSubLayout(
            channel=own.channel, checkpoint=checkpoint, record_format=record_format
        )
    if own.mode is RedisMode.MIRROR:
        if record_format.name is not FormatName.NATIVE:
            raise ConfigError(
                "BRIDGE_REDIS__FORMAT: the mirror mode holds the prefix's state, not records; "
                "it has no format (leave it native)"
            )
        return _MirrorLayout(mirror_key=own.mirror_key, checkpoint=checkpoint)
    template = own.template
    if template.routed:
        return _RoutedLayout(
            template=template,
            keyspace=context.keyspace,
            maxlen=own.maxlen,
            checkpoint=checkpoint,
            record_format=record_format,
        )
    return _StreamLayout(stream=template.name, maxlen=own.maxlen, record_format=record_format)


def cut_point(events: Sequence[Event], *, limit: int) -> int:
    """Where to end the next script call's chunk of ``events``: after ``limit`` events. Any
    position will do (positions are per event, and the mirror stages an unfinished revision);
    the bytes of a call are bounded by the pump's batch (``BRIDGE_PUMP__BATCH_BYTES``), since
    ``flush`` sends everything of a batch."""
    return min(limit, len(events))


class RedisSink(Sink):
    """Events into Redis by one Lua script call per chunk; see the module docstring."""

    name = "redis"
    settings_model = RedisSettings
    formats = frozenset(FormatName)

    def __init__(
        self, *, settings: RedisSettings, layout: _Layout, claimant: Claimant | None = None
    ) -> None:
        """``claimant``: who this instance is and whether HA fences it, for the owner key
        (``sinks.redis.owner``; default: this process of an unnamed pipeline, without HA)."""
        self._settings = settings
        if settings.mode is RedisMode.PUBSUB:
            self.guarantee = "at-most-once for subscribers (position exactly once)"
        self._layout = layout
        self._owner = OwnerMarker(
            settings=settings, claimant=claimant or Claimant(Owner.this_process(""), ha=False)
        )
        self._client: redis.Redis | None = None
        self._sound = False
        """Whether every call since open succeeded: only then does ``close`` release the owner
        key (a dead connection would hold ``close`` for the client's timeout)."""
        self._pending: list[Event] = []
        self._held: Position | None = None
        """What Redis held when last read or written: every script call checks Redis still
        holds it (``sinks.redis.lua``, step 4)."""

    @classmethod
    def from_settings(cls, settings: RedisSettings, *, context: SinkContext) -> Self:
        claimant = Claimant(Owner.this_process(context.pipeline), ha=context.ha)
        return cls(settings=settings, layout=_layout(settings, context=context), claimant=claimant)

    @classmethod
    def reader(cls, settings: RedisSettings, *, context: SinkContext) -> SinkReader:
        """What the mode holds, read back (``sinks.redis.reader``); none for pubsub."""
        return reader_of(settings, pipeline=context.pipeline, record_format=context.format)

    @property
    def mode(self) -> RedisMode:
        return self._settings.mode

    def open(self) -> Event | None:
        """Connect, claim the destination's owner key (``sinks.redis.owner``), read the tail
        back and run the script on an empty batch."""
        self.close()
        client = self._connect()
        self._client = client
        self._sound = True
        try:
            refuse_eviction(client, settings=self._settings)
            self._owner.claim(client)
            tail = self._layout.read_tail(client)
            self._held = None if tail is None else tail.position
            # An empty batch runs every ACL and type check of the script and writes nothing.
            self._run(client, [])
        except redis.exceptions.RedisError as error:
            self._sound = False
            self.close()
            raise self._translate(error, doing=f"opening {self._layout.target}") from error
        except SinkError:
            self.close()
            raise
        log.info(
            "redis sink ready",
            extra={
                "url": self._settings.safe_url,
                "mode": self.mode.value,
                "position": None if tail is None else str(tail.position),
            },
        )
        return tail

    def write(self, batch: Sequence[Event]) -> None:
        self._pending.extend(batch)
        limit = self._settings.batch_size
        while len(self._pending) >= limit:
            self._send(cut_point(self._pending, limit=limit))

    def flush(self) -> None:
        while self._pending:
            self._send(cut_point(self._pending, limit=self._settings.batch_size))

    def peek(self) -> Event | None:
        """The tail, read without claiming the owner key: beside a running bridge too."""
        client = self._connect()
        try:
            return self._layout.read_tail(client)
        except redis.exceptions.RedisError as error:
            raise self._translate(error, doing=f"reading {self._layout.target}") from error
        finally:
            client.close()

    def close(self) -> None:
        """Release the owner key if every call since open went through (else it lapses),
        then the connection."""
        self._pending.clear()
        if self._client is not None:
            client, self._client = self._client, None
            if self._sound:
                self._owner.release(client)
            client.close()
        self._owner.stop_renewing()

    def _connect(self) -> "redis.Redis":
        return connect(self._settings)

    def _send(self, end: int) -> None:
        client = self._client
        if client is None:
            raise SinkUnavailableError("redis: the sink is not open")
        chunk = self._pending[:end]
        try:
            written, skipped = self._run(client, chunk)
        except redis.exceptions.RedisError as error:
            self._pending.clear()
            self._sound = False
            first, last = chunk[0], chunk[-1]
            doing = (
                f"writing {first.position}..{last.position} (first key "
                f"{printable_key(first.key)!r}) to {self._layout.target}"
            )
            raise self._translate(error, doing=doing) from error
        del self._pending[:end]
        self._held = chunk[-1].position
        self._layout.committed(chunk)
        if skipped:
            log.warning(
                "redis sink skipped events it already held",
                extra={"skipped": skipped, "written": written, "last": str(chunk[-1].position)},
            )

    def _run(self, client: "redis.Redis", chunk: Sequence[Event]) -> tuple[int, int]:
        keys, args = self._layout.call(chunk)
        keys += self._owner.script_keys()
        held = self._held
        position = (-1, -1) if held is None else (held.revision, held.index)
        args.add(*self._owner.script_args(), *position)
        written, skipped = self._layout.script.run(client, keys, args)
        return int(written), int(skipped)

    def _translate(self, error: redis.exceptions.RedisError, *, doing: str) -> SinkError:
        held = owned_by(error)
        if held is not None:
            return self._owner.refusal(held)
        return translate(error, settings=self._settings, names=self._layout.names, doing=doing)
