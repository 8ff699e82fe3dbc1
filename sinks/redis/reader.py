"""Readers of what the redis sink holds (``bridge.reader``), one per mode.

Every command here reads (XRANGE, SMEMBERS, HGET, EXISTS, HSCAN, HMGET): a reader creates no
key, no group and moves no position, so it is safe beside a running bridge. A key that does
not exist holds nothing. Errors are the sink's own one-liners (``sinks.redis.client.translate``):
the URL's password never shows.

- ``stream``: the stream, an XRANGE page at a time from ``after`` (entry ids *are* positions,
  so ``after`` is an exclusive XRANGE start and costs nothing). Each entry's ``event`` field
  is decoded with the sink's format.
- ``stream`` with a routing template: the streams the sink lists in ``<checkpoint>:streams``,
  each read as above and merged by position (``bridge.merge``); a marker, which the sink adds
  to every stream, comes once.
- ``mirror``: a ``StateReader``. The revision is the checkpoint's. Its items come in key
  order, which a hash cannot give: HSCAN walks it in pages in no order (and may return a
  field twice), so the reader gathers the *field names* (O(keys) memory: the keys, never the
  values), sorts them, and fetches values and mod_revisions a page at a time with HMGET.
- ``pubsub``: no reader; a published message is gone once delivered.
"""

from collections.abc import Iterator

import redis
import redis.exceptions

from bridge.errors import SinkRejectedError, SinkUnavailableError
from bridge.events import Event, EventType, Op, Position
from bridge.formats import EventFormat
from bridge.merge import merge_by_position
from bridge.reader import NoReaderError, SinkReader, StateReader, StreamReader
from sinks.redis.client import as_bytes, checkpoint_key, connect, translate
from sinks.redis.settings import RedisMode, RedisSettings

PAGE = 1000
"""Entries per XRANGE, fields per HSCAN or HMGET."""


def reader_of(settings: RedisSettings, *, pipeline: str, record_format: EventFormat) -> SinkReader:
    """The reader of what the sink holds with ``settings`` (see the module docstring)."""
    checkpoint = checkpoint_key(settings, pipeline=pipeline)
    if settings.mode is RedisMode.PUBSUB:
        raise NoReaderError(
            "redis: pubsub mode keeps nothing to read back: a PUBLISH reaches the subscribers "
            "connected at that moment and is gone (BRIDGE_REDIS__MODE=stream keeps every event)"
        )
    if settings.mode is RedisMode.MIRROR:
        return RedisMirrorReader(settings, checkpoint=checkpoint)
    if settings.template.routed:
        return RedisStreamReader(
            settings, record_format=record_format, listed=f"{checkpoint}:streams"
        )
    return RedisStreamReader(settings, record_format=record_format, stream=settings.template.name)


class _Connected:
    """A lazily opened client, and the sink's error translation for what it reads."""

    def __init__(self, settings: RedisSettings, *, names: list[str]) -> None:
        self._settings = settings
        self._names = names
        self._client: redis.Redis | None = None

    def client(self) -> "redis.Redis":
        if self._client is None:
            self._client = connect(self._settings)
        return self._client

    def failed(self, error: redis.exceptions.RedisError, *, doing: str) -> Exception:
        return translate(error, settings=self._settings, names=self._names, doing=doing)

    def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            client.close()


class RedisStreamReader(StreamReader):
    """One stream, or every stream a template routed to, as one stream of events."""

    def __init__(
        self,
        settings: RedisSettings,
        *,
        record_format: EventFormat,
        stream: bytes | None = None,
        listed: str | None = None,
    ) -> None:
        self._stream = stream
        self._listed = listed
        self._format = record_format
        names = [f"key {stream!r}"] if stream is not None else [f"keys {listed!r}, the streams"]
        self._redis = _Connected(settings, names=names)

    def events(self, *, after: Position | None = None) -> Iterator[Event]:
        if self._stream is not None:
            yield from self._entries(self._stream, after=after)
            return
        try:
            listed = self._redis.client().smembers(self._listed or "")
            streams = sorted(as_bytes(stream) for stream in listed)
        except redis.exceptions.RedisError as error:
            raise self._redis.failed(
                error, doing=f"listing the streams in {self._listed!r}"
            ) from error
        yield from merge_by_position(self._entries(stream, after=after) for stream in streams)

    def _entries(self, stream: bytes, *, after: Position | None) -> Iterator[Event]:
        """The events of ``stream`` after ``after``, an XRANGE page at a time."""
        start = "-" if after is None else f"({after}"
        name = stream.decode(errors="replace")
        while True:
            try:
                page = self._redis.client().xrange(stream, min=start, max="+", count=PAGE)
            except redis.exceptions.RedisError as error:
                raise self._redis.failed(error, doing=f"reading stream {name!r}") from error
            entries = page or []
            for raw_id, fields in entries:
                yield self._event_of(as_bytes(raw_id), (fields or {}).get(b"event"), stream=name)
            if len(entries) < PAGE:
                return
            start = "(" + as_bytes(entries[-1][0]).decode()

    def _event_of(self, raw_id: bytes, record: object, *, stream: str) -> Event:
        try:
            if record is None:
                raise ValueError("no 'event' field")
            return self._format.decode(as_bytes(record))
        except (ValueError, KeyError, TypeError) as error:
            raise SinkRejectedError(
                f"redis: entry {raw_id.decode()} of stream {stream!r} is not an etcd-bridge "
                f"{self._format.name.value} record ({error}); set BRIDGE_REDIS__FORMAT to the "
                "format the stream holds"
            ) from error

    def close(self) -> None:
        self._redis.close()


class RedisMirrorReader(StateReader):
    """The mirror hash and the revision its checkpoint says it is at."""

    kept = frozenset({"mod_revision"})
    """The hash holds values, and ``<mirror_key>:rev`` each key's mod_revision: no more."""

    def __init__(self, settings: RedisSettings, *, checkpoint: str) -> None:
        self._mirror = settings.mirror_key
        self._revisions = f"{settings.mirror_key}:rev"
        self._checkpoint = checkpoint
        names = [f"keys {self._mirror!r}, {self._revisions!r}, {checkpoint!r}"]
        self._redis = _Connected(settings, names=names)

    def revision(self) -> int:
        """The checkpoint's revision, or the one before it while a revision that spans several
        script calls is staged (the mirror applies a revision whole). While a resync snapshot
        is built aside, the mirror still holds the state before it, whose revision the
        checkpoint no longer says: unavailable until the snapshot ends."""
        client = self._redis.client()
        try:
            raw = client.hget(self._checkpoint, "event")
            if raw is None:
                return 0
            last = Event.from_json(as_bytes(raw))
            rebuilding = last.op in (Op.SNAPSHOT_BEGIN, Op.SNAPSHOT)
            if rebuilding and not client.exists(self._mirror):
                return 0  # the first snapshot: nothing is mirrored yet
        except redis.exceptions.RedisError as error:
            raise self._redis.failed(
                error, doing=f"reading checkpoint {self._checkpoint!r}"
            ) from error
        except (ValueError, KeyError) as error:
            raise SinkRejectedError(
                f"redis: checkpoint {self._checkpoint!r} does not hold an etcd-bridge event "
                f"({error}); set BRIDGE_REDIS__CHECKPOINT_KEY to the key of this pipeline"
            ) from error
        if rebuilding:
            raise SinkUnavailableError(
                f"redis: mirror {self._mirror!r} is being replaced by the snapshot at revision "
                f"{last.revision} (a resync); read it again once that snapshot ends"
            )
        return last.revision - 1 if last.more else last.revision

    def items(self) -> Iterator[Event]:
        """One ``snapshot`` event per field, in key order, numbered as a snapshot at
        ``revision()`` would number them (from 1); the mirror keeps each key's value and
        mod_revision only, so create_revision, version and lease are 0."""
        revision = self.revision()
        client = self._redis.client()
        try:
            keys = sorted(self._fields(client))
            for start in range(0, len(keys), PAGE):
                page = keys[start : start + PAGE]
                values = client.hmget(self._mirror, page)
                mod_revisions = client.hmget(self._revisions, page)
                for offset, (key, value, mod) in enumerate(
                    zip(page, values, mod_revisions, strict=True)
                ):
                    if value is None:
                        continue  # deleted since the scan by a running bridge
                    yield Event(
                        revision=revision,
                        index=start + offset + 1,
                        type=EventType.PUT,
                        op=Op.SNAPSHOT,
                        key=key,
                        value=as_bytes(value),
                        mod_revision=0 if mod is None else int(mod),
                    )
        except redis.exceptions.RedisError as error:
            raise self._redis.failed(error, doing=f"reading mirror {self._mirror!r}") from error

    def _fields(self, client: "redis.Redis") -> set[bytes]:
        """Every field of the mirror (HSCAN may repeat one: a set)."""
        fields: set[bytes] = set()
        cursor = 0
        while True:
            cursor, page = client.hscan(self._mirror, cursor, count=PAGE)
            fields.update(as_bytes(field) for field in page)
            if cursor == 0:
                return fields

    def close(self) -> None:
        self._redis.close()
