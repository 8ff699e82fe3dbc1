"""Pure logic of the Redis sink: where chunks may end, how its script calls are packed, and
how Redis errors are reported."""

from collections.abc import Sequence

import pytest
import redis.exceptions
from redis.connection import Connection

from bridge.contract import History
from bridge.errors import SinkRejectedError, SinkUnavailableError
from bridge.events import Event, EventType, Op
from bridge.sink import SinkContext
from config.keyspace import KeySpace
from config.settings import load_section
from sinks.redis.client import Arguments, Script
from sinks.redis.settings import RedisSettings
from sinks.redis.sink import RedisSink, checkpoint_key, cut_point

SECRET = "pa55-w0rd"  # noqa: S105 - a test value that must never show


def put(revision: int, index: int, *, key: bytes = b"/k") -> Event:
    return Event(
        revision=revision, index=index, type=EventType.PUT, op=Op.UPDATE, key=key, value=b"v"
    )


class TestCutPoint:
    def test_everything_fits(self) -> None:
        events = [put(1, 0), put(2, 0)]
        assert cut_point(events, limit=5) == 2

    def test_ends_anywhere_even_inside_a_revision(self) -> None:
        events = [put(2, n) for n in range(6)] + [put(3, 0)]
        assert cut_point(events, limit=2) == 2
        assert cut_point(events, limit=4) == 4

    def test_a_snapshot_splits_anywhere(self) -> None:
        history = History(prefix=b"/p/")
        for number in range(5):
            history.put(f"/p/{number}".encode(), b"v")
        snapshot = history.snapshot()
        assert cut_point(snapshot, limit=3) == 3
        assert cut_point(snapshot, limit=1) == 1


def sink(**redis_settings: object) -> RedisSink:
    settings = load_section(
        "redis",
        RedisSettings,
        url=f"redis://writer:{SECRET}@127.0.0.1:6390/0",
        **redis_settings,
    )
    return RedisSink.from_settings(
        settings, context=SinkContext(pipeline="orders", keyspace=KeySpace.of([]))
    )


def packed_by_redis_py(
    script: Script,
    keys: Sequence[bytes | str],
    values: Sequence[bytes | str | int],
    *,
    loaded: bool,
) -> bytes:
    """What redis-py sends for ``script`` called with ``keys`` and ``values``."""
    name, code = ("EVALSHA", script.sha) if loaded else ("EVAL", script.source)
    return b"".join(Connection().pack_command(name, code, len(keys), *keys, *values))


class TestPacking:
    """The sink packs its script calls itself (``sinks.redis.client``): Redis must receive the
    bytes redis-py sends for the same arguments, EVALSHA and its EVAL fallback alike."""

    @pytest.mark.parametrize("loaded", [True, False])
    def test_arguments_are_the_bytes_redis_py_sends(self, *, loaded: bool) -> None:
        deleted = Event(
            revision=2**53 - 1, index=70_000, type=EventType.DELETE, op=Op.DELETE, key=b"\r\n\xff"
        )
        events = [put(7, 0), put(7, 1023, key="ключ".encode()), put(8, 1024), deleted]
        head: list[bytes | str | int] = ["", "ключ", b"\x00\r\n", 0, -1]
        args = Arguments(*head)
        values = list(head)
        for number, event in enumerate(events):
            payload = b"$%d\r\n" % number * number
            args.change(event, payload)
            values += (event.revision, event.index, event.op.value, event.key, payload)
        args.add(-1, 2**53)
        values += (-1, 2**53)
        keys = [b"stream", "checkpoint:ключ"]
        script = Script.of("return {#KEYS, #ARGV}")
        packed = script.packed(keys, args, loaded=loaded)
        assert packed == packed_by_redis_py(script, keys, values, loaded=loaded)

    def test_the_stream_layout_sends_each_events_position_op_key_and_record(self) -> None:
        layout = sink(stream="events", maxlen=500)._layout
        chunk = [put(9, 0), put(9, 1), put(12, 0, key=b"/other")]
        keys, args = layout.call(chunk)
        values: list[bytes | str | int] = ["500"]
        for event in chunk:
            values += (event.revision, event.index, event.op.value, event.key, event.to_json())
        assert keys == [b"events"]
        assert layout.script.packed(keys, args, loaded=True) == packed_by_redis_py(
            layout.script, keys, values, loaded=True
        )


@pytest.mark.parametrize(
    ("error", "kind", "words"),
    [
        (
            redis.exceptions.AuthenticationError("invalid username-password pair"),
            SinkRejectedError,
            ["authentication as user 'writer' failed", "BRIDGE_REDIS__URL"],
        ),
        (
            redis.exceptions.NoPermissionError(
                "the user may not run XADD on key 'events' script: "
                "0123456789abcdef0123456789abcdef01234567, on @user_script:9."
            ),
            SinkRejectedError,
            ["ACL user 'writer'", "XADD on key 'events'", "ACL SETUSER writer"],
        ),
        (
            redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:6390."),
            SinkUnavailableError,
            ["unreachable"],
        ),
        (redis.exceptions.TimeoutError("Timeout reading"), SinkUnavailableError, ["unreachable"]),
        (
            redis.exceptions.BusyLoadingError("Redis is loading the dataset in memory"),
            SinkUnavailableError,
            ["unreachable"],
        ),
        (
            redis.exceptions.ResponseError("OOM command not allowed when used memory"),
            SinkUnavailableError,
            ["refused a write for now", "OOM"],
        ),
        (  # what redis-py makes of an OOM reply: a class of its own, the code dropped
            redis.exceptions.OutOfMemoryError("command not allowed when used memory"),
            SinkUnavailableError,
            ["refused a write for now", "used memory"],
        ),
        (
            redis.exceptions.ReadOnlyError("You can't write against a read only replica."),
            SinkUnavailableError,
            ["read-only replica"],
        ),
        (
            redis.exceptions.ResponseError("Error compiling script (new function): ..."),
            SinkRejectedError,
            ["Redis 7.0 or later"],
        ),
        (
            redis.exceptions.ResponseError("WRONGTYPE Operation against a key"),
            SinkRejectedError,
            ["BRIDGE_REDIS__STREAM"],
        ),
    ],
)
def test_errors_are_one_line_without_the_password(
    error: redis.exceptions.RedisError, kind: type[Exception], words: list[str]
) -> None:
    translated = sink()._translate(error, doing="opening stream 'events'")
    assert type(translated) is kind
    message = str(translated)
    assert "\n" not in message
    assert SECRET not in message
    assert "redis://writer@127.0.0.1:6390/0" in message
    assert "script: 0123" not in message
    for word in words:
        assert word in message


def test_checkpoint_keys_are_namespaced_by_pipeline_and_target() -> None:
    def key(**redis_settings: object) -> str:
        return checkpoint_key(
            load_section("redis", RedisSettings, **redis_settings), pipeline="orders"
        )

    assert key(mode="mirror", mirror_key="m") == "etcd-bridge:orders:mirror:m"
    assert key(mode="pubsub", channel="c") == "etcd-bridge:orders:pubsub:c"
    assert key(stream="s:{1}") == "etcd-bridge:orders:stream:s:{1}"
    assert key(mode="pubsub", checkpoint_key="mine") == "mine"
