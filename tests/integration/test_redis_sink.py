"""The Redis sink against a real redis-server, driven directly (no etcd, no pump).

The contract kit stands in for etcd and the pump (``History``; ``deliver`` in batches of 50
events unless a test needs others, ``feed`` for a replay); each test checks what a consumer
reads back from Redis (XRANGE, SUBSCRIBE, HGETALL) and what a fresh sink's ``open()``
reports, since that is the whole of exactly once: the tail read back is the last event
written, and nothing at or below it is ever added again.
"""

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import redis

from bridge.contract import PREFIX, History, after, deliver, feed
from bridge.errors import SinkRejectedError, SinkUnavailableError
from bridge.events import Event, Op, SnapshotReason
from bridge.sink import Sink
from config.settings import load_section
from sinks.redis import lua
from sinks.redis.client import Arguments, Script, connect
from sinks.redis.settings import RedisSettings
from sinks.redis.sink import checkpoint_key
from tests.contract.harnesses import build
from tests.fixtures.processes import free_port, wait_for
from tests.fixtures.redis import (
    RedisFactory,
    RedisNames,
    RedisServer,
    TlsFiles,
    published_events,
)

SIZES = (50,)
"""The pump stand-in's batch sizes unless a test needs others."""


def make_sink(url: str, names: RedisNames, **settings: Any) -> Sink:
    """The redis sink on ``names``' pipeline (and stream, unless ``settings`` name one), the
    kit's key space."""
    own = {"url": url, "stream": names.stream, **settings}
    return build("redis", pipeline=names.pipeline, **own)


def deliver_and_reopen(
    url: str, names: RedisNames, events: Sequence[Event], *, size: int = 50, **settings: Any
) -> None:
    """``events`` through a new sink, which must find nothing; then a second new sink must
    read the last of them back as its tail: what the bridge relies on after a restart."""
    with make_sink(url, names, **settings) as sink:
        assert deliver(sink, events, sizes=(size,)) is None
    with make_sink(url, names, **settings) as fresh:
        assert fresh.open() == events[-1]


def stream_entries(client: redis.Redis, stream: str) -> list[tuple[str, dict[bytes, bytes]]]:
    return [(entry_id.decode(), fields) for entry_id, fields in client.xrange(stream)]


def seeded_history(keys: int = 20) -> History:
    history = History(prefix=PREFIX, revision=1)
    history.seed(keys)
    return history


def mixed_events(history: History) -> list[Event]:
    """A snapshot, then puts, updates, deletes and multi-key transactions."""
    events = history.snapshot()
    events += history.put(PREFIX + b"a", b"1")
    events += history.put(PREFIX + b"a", b"2")
    events += history.delete(PREFIX + b"seed/000")
    events += history.txn([(PREFIX + b"t1", b"x"), (PREFIX + b"t2", b"y"), (PREFIX + b"a", None)])
    events += history.put(PREFIX + "ключ".encode(), b"\xff\x00binary")
    events += history.random_changes(count=200, seed=7)
    return events


class TestStreamMode:
    def test_ids_are_positions_and_entries_hold_the_events(
        self, redis_server: RedisServer, redis_names: RedisNames
    ) -> None:
        events = mixed_events(seeded_history())
        deliver_and_reopen(redis_server.url, redis_names, events, size=37)
        with redis_server.client() as client:
            entries = stream_entries(client, redis_names.stream)
        assert [entry_id for entry_id, _ in entries] == [str(e.position) for e in events]
        for (_, fields), event in zip(entries, events, strict=True):
            assert fields[b"op"] == event.op.value.encode()
            assert fields[b"key"] == event.key
            assert fields[b"event"] == event.to_json()

    def test_a_replayed_batch_is_detected_and_not_duplicated(
        self, redis_server: RedisServer, redis_names: RedisNames
    ) -> None:
        events = mixed_events(seeded_history())
        first, second = events[:100], events[100:]
        with make_sink(redis_server.url, redis_names) as sink:
            deliver(sink, first, sizes=SIZES)
        with make_sink(redis_server.url, redis_names) as sink:
            assert sink.open() == first[-1]
            # Whole replay, then a batch overlapping the tail, then the rest.
            feed(sink, first)
            overlap = 120
            sink.write(events[80:overlap])
            sink.flush()
            feed(sink, after(second, events[overlap - 1]))
        assert redis_server.stream_events(redis_names.stream) == events

    def test_a_server_that_lost_the_script_is_sent_its_source(
        self, redis_factory: RedisFactory, redis_names: RedisNames
    ) -> None:
        """EVALSHA answered NOSCRIPT (a restarted or flushed server) falls back to EVAL."""
        server = redis_factory.start()
        events = mixed_events(seeded_history())
        sha = Script.of(lua.STREAM).sha
        with make_sink(server.url, redis_names) as sink, server.client() as client:
            sink.open()
            feed(sink, events[:100])
            client.script_flush()
            assert client.script_exists(sha) == [False]
            feed(sink, events[100:])
            assert client.script_exists(sha) == [True], "EVAL loaded it again"
        assert server.stream_events(redis_names.stream) == events

    def test_small_script_batches_split_anywhere(
        self, redis_server: RedisServer, redis_names: RedisNames
    ) -> None:
        history = seeded_history()
        events = history.snapshot()
        events += history.txn([(PREFIX + f"big/{n}".encode(), b"v") for n in range(9)])
        events += history.random_changes(count=50, seed=3)
        with make_sink(redis_server.url, redis_names, batch_size=4) as sink:
            sink.open()
            sink.write(events)
            sink.flush()
        assert redis_server.stream_events(redis_names.stream) == events

    def test_maxlen_trims_but_keeps_the_position(
        self, redis_server: RedisServer, redis_names: RedisNames
    ) -> None:
        history = History(prefix=PREFIX)
        events = history.random_changes(count=3000, seed=11)
        deliver_and_reopen(redis_server.url, redis_names, events, size=200, maxlen=100)
        with redis_server.client() as client:
            length = client.xlen(redis_names.stream)
            assert 100 <= length < len(events)

    def test_a_stream_not_written_by_the_bridge_is_refused(
        self, redis_server: RedisServer, redis_names: RedisNames
    ) -> None:
        with redis_server.client() as client:
            client.xadd(redis_names.stream, {"hello": "world"})
        with (
            make_sink(redis_server.url, redis_names) as sink,
            pytest.raises(SinkRejectedError, match="BRIDGE_REDIS__STREAM"),
        ):
            sink.open()

    def test_a_key_of_another_type_is_refused_at_open(
        self, redis_server: RedisServer, redis_names: RedisNames
    ) -> None:
        with redis_server.client() as client:
            client.set(redis_names.stream, "not a stream")
        with (
            make_sink(redis_server.url, redis_names) as sink,
            pytest.raises(SinkRejectedError, match="WRONGTYPE.*BRIDGE_REDIS__STREAM"),
        ):
            sink.open()


class TestRoutedStreams:
    def test_template_routes_keys_and_markers_reach_every_stream(
        self, redis_server: RedisServer, redis_names: RedisNames
    ) -> None:
        template = f"test:{redis_names.tag}:{{1}}"
        history = History(prefix=PREFIX)
        for group in ("users", "orders"):
            for number in range(3):
                history.put(PREFIX + f"{group}/{number}".encode(), b"v")
        events = history.snapshot()
        events += history.put(PREFIX + b"users/9", b"new")
        events += history.put(PREFIX + b"carts/1", b"first cart")  # a stream after the snapshot
        events += history.put(PREFIX + b"loose", b"no second segment")
        history.delete(PREFIX + b"orders/0")  # missed: a resync follows
        events += history.snapshot(reason=SnapshotReason.COMPACTED)
        deliver_and_reopen(redis_server.url, redis_names, events, size=5, stream=template)

        def stream(name: str) -> list[Event]:
            return redis_server.stream_events(f"test:{redis_names.tag}:{name}")

        users = stream("users")
        ops = [event.op for event in users]
        assert ops == [
            Op.SNAPSHOT_BEGIN,
            *[Op.SNAPSHOT] * 3,
            Op.SNAPSHOT_END,
            Op.CREATE,
            Op.SNAPSHOT_BEGIN,
            *[Op.SNAPSHOT] * 4,
            Op.SNAPSHOT_END,
        ]
        assert all(
            e.key.startswith(PREFIX + b"users/")
            for e in users
            if e.op is not Op.SNAPSHOT_BEGIN and e.op is not Op.SNAPSHOT_END
        )
        orders = stream("orders")
        assert [e.key for e in orders if e.op is Op.SNAPSHOT][-2:] == [
            PREFIX + b"orders/1",
            PREFIX + b"orders/2",
        ]
        carts = stream("carts")
        assert [e.op for e in carts] == [
            Op.CREATE,
            Op.SNAPSHOT_BEGIN,
            Op.SNAPSHOT,
            Op.SNAPSHOT_END,
        ]
        assert [e.op for e in stream("loose")] == [
            Op.CREATE,
            Op.SNAPSHOT_BEGIN,
            Op.SNAPSHOT,
            Op.SNAPSHOT_END,
        ]

    def test_a_stream_first_written_inside_a_snapshot_gets_its_begin_marker(
        self, redis_server: RedisServer, redis_names: RedisNames
    ) -> None:
        template = f"test:{redis_names.tag}:{{1}}"
        history = History(prefix=PREFIX)
        for group in ("a", "b", "c"):
            history.put(PREFIX + f"{group}/1".encode(), b"v")
        events = history.snapshot()
        # One event per batch and a reopen between batches: markers written long before the
        # first key of stream "c" must still precede it there.
        for event in events:
            with make_sink(redis_server.url, redis_names, stream=template) as sink:
                tail = sink.open()
                sink.write(after([event], tail))
                sink.flush()
        with redis_server.client() as client:
            for group in ("a", "b", "c"):
                found = stream_entries(client, f"test:{redis_names.tag}:{group}")
                assert [fields[b"op"] for _, fields in found] == [
                    b"snapshot_begin",
                    b"snapshot",
                    b"snapshot_end",
                ]
                assert found[0][0] == f"{events[0].revision}-0"


class TestPubSubMode:
    def test_subscribers_get_every_event_in_order_and_replays_are_not_republished(
        self, redis_server: RedisServer, redis_names: RedisNames
    ) -> None:
        events = mixed_events(seeded_history())
        with redis_server.client() as client, client.pubsub() as subscriber:
            subscriber.subscribe(redis_names.channel)
            wait_for(
                lambda: subscriber.get_message(timeout=0.1),
                timeout=5,
                what="the subscription confirmation",
            )
            with make_sink(
                redis_server.url, redis_names, mode="pubsub", channel=redis_names.channel
            ) as sink:
                assert deliver(sink, events[:150], sizes=SIZES) is None
            with make_sink(
                redis_server.url, redis_names, mode="pubsub", channel=redis_names.channel
            ) as sink:
                assert sink.open() == events[149]
                feed(sink, events[:150])  # a replay: nothing is published again
                feed(sink, after(events, events[149]))
            received = published_events(
                subscriber, until=lambda got: len(got) >= len(events), timeout=10
            )
            assert received == events

    def test_the_checkpoint_is_namespaced_by_the_pipeline_name(
        self, redis_server: RedisServer, redis_names: RedisNames
    ) -> None:
        events = History(prefix=PREFIX).random_changes(count=10, seed=1)
        with make_sink(
            redis_server.url, redis_names, mode="pubsub", channel=redis_names.channel
        ) as sink:
            deliver(sink, events, sizes=SIZES)
        other = RedisNames(tag=redis_names.tag + "x")
        settings = load_section(
            "redis",
            RedisSettings,
            url=redis_server.url,
            mode="pubsub",
            channel=redis_names.channel,
        )
        checkpoint = checkpoint_key(settings, pipeline=redis_names.pipeline)
        with redis_server.client() as client:
            assert client.hget(checkpoint, "event") == events[-1].to_json()
        with make_sink(redis_server.url, other, mode="pubsub", channel=redis_names.channel) as sink:
            assert sink.open() is None


class TestMirrorMode:
    def mirror(self, server: RedisServer, names: RedisNames) -> dict[bytes, bytes]:
        with server.client() as client:
            return dict(client.hgetall(names.mirror))

    def test_the_mirror_equals_the_prefix_through_snapshot_changes_and_resync(
        self, redis_server: RedisServer, redis_names: RedisNames
    ) -> None:
        history = seeded_history()
        settings = {"mode": "mirror", "mirror_key": redis_names.mirror}
        with make_sink(redis_server.url, redis_names, **settings) as sink:
            assert deliver(sink, mixed_events(history), sizes=(23,)) is None
        assert self.mirror(redis_server, redis_names) == history.values()
        with redis_server.client() as client:
            revisions = client.hgetall(redis_names.mirror + ":rev")
        assert revisions == {
            k: str(entry.mod_revision).encode() for k, entry in history.state.items()
        }

        # A gap the bridge never saw (compaction), with deletes and creates, then a resync.
        history.random_changes(count=100, seed=99)
        history.delete(PREFIX + b"seed/001")
        resync = history.snapshot(reason=SnapshotReason.COMPACTED)
        later = history.random_changes(count=100, seed=100)
        with make_sink(redis_server.url, redis_names, **settings) as sink:
            tail = sink.open()
            assert tail is not None
            begin_and_half = resync[: len(resync) // 2]
            feed(sink, begin_and_half, sizes=(7,))
            before = self.mirror(redis_server, redis_names)
            assert before != history.values()  # readers still see the old, complete mirror
            assert PREFIX + b"seed/001" in before
        with make_sink(redis_server.url, redis_names, **settings) as sink:
            assert sink.open() == begin_and_half[-1]
            feed(sink, after(resync + later, begin_and_half[-1]), sizes=(7,))
        assert self.mirror(redis_server, redis_names) == history.values()

    def test_a_replay_never_rolls_a_value_back(
        self, redis_server: RedisServer, redis_names: RedisNames
    ) -> None:
        history = History(prefix=PREFIX)
        old = history.put(PREFIX + b"k", b"old")
        new = history.put(PREFIX + b"k", b"new")
        gone = history.put(PREFIX + b"gone", b"x") + history.delete(PREFIX + b"gone")
        settings = {"mode": "mirror", "mirror_key": redis_names.mirror}
        with make_sink(redis_server.url, redis_names, **settings) as sink:
            deliver(sink, history.snapshot() + old + new + gone, sizes=SIZES)
            feed(sink, old + gone[:1])  # replayed: the checkpoint skips them
        assert self.mirror(redis_server, redis_names) == {PREFIX + b"k": b"new"}

    def test_a_revision_split_across_calls_and_a_restart_is_applied_whole(
        self, redis_server: RedisServer, redis_names: RedisNames
    ) -> None:
        history = History(prefix=PREFIX)
        keys = [PREFIX + f"k{number}".encode() for number in range(10)]
        start = history.snapshot() + history.txn([(key, b"old") for key in keys])
        big = history.txn(
            [(key, None if number % 2 else b"new") for number, key in enumerate(keys)]
        )
        assert [event.more for event in big] == [True] * 9 + [False]
        settings = {"mode": "mirror", "mirror_key": redis_names.mirror, "batch_size": 3}
        with make_sink(redis_server.url, redis_names, **settings) as sink:
            deliver(sink, start, sizes=SIZES)
            before = self.mirror(redis_server, redis_names)
            sink.write(big[:4])
            sink.flush()  # two script calls, both inside the revision
            assert self.mirror(redis_server, redis_names) == before
        with make_sink(redis_server.url, redis_names, **settings) as sink:
            assert sink.open() == big[3]  # a restart inside the revision
            assert self.mirror(redis_server, redis_names) == before
            feed(sink, big[2:8])  # replays its first part, stages more
            assert self.mirror(redis_server, redis_names) == before
            feed(sink, big[8:])
        assert self.mirror(redis_server, redis_names) == history.values()
        with redis_server.client() as client:
            assert not client.exists(redis_names.mirror + ":txn")

    def test_an_empty_snapshot_empties_the_mirror(
        self, redis_server: RedisServer, redis_names: RedisNames
    ) -> None:
        history = History(prefix=PREFIX)
        events = history.put(PREFIX + b"k", b"v") + history.delete(PREFIX + b"k")
        settings = {"mode": "mirror", "mirror_key": redis_names.mirror}
        with make_sink(redis_server.url, redis_names, **settings) as sink:
            deliver(sink, History(prefix=PREFIX).put(PREFIX + b"stale", b"v"), sizes=SIZES)
            assert self.mirror(redis_server, redis_names) == {PREFIX + b"stale": b"v"}
            history.revision = 10
            feed(sink, events[1:] + history.snapshot(reason=SnapshotReason.COMPACTED))
        assert self.mirror(redis_server, redis_names) == {}


class TestFailures:
    def test_an_acl_user_without_xadd_gets_a_clear_error_at_open(
        self, redis_server: RedisServer, redis_names: RedisNames
    ) -> None:
        user, password = f"u{redis_names.tag}", f"pw-{redis_names.tag}"
        url = redis_server.add_user(user, password=password, rules="~* &* +@all -xadd")
        with make_sink(url, redis_names) as sink, pytest.raises(SinkRejectedError) as raised:
            sink.open()
        message = str(raised.value)
        assert "\n" not in message
        assert f"ACL user '{user}'" in message
        assert "XADD" in message
        assert redis_names.stream in message
        assert password not in message
        with redis_server.client() as client:
            assert client.exists(redis_names.stream) == 0

    def test_a_key_outside_the_users_patterns_is_named(
        self, redis_server: RedisServer, redis_names: RedisNames
    ) -> None:
        user, password = f"m{redis_names.tag}", f"pw-{redis_names.tag}"
        url = redis_server.add_user(user, password=password, rules=f"~{redis_names.mirror}* +@all")
        sink = make_sink(url, redis_names, mode="mirror", mirror_key=redis_names.mirror)
        with sink, pytest.raises(SinkRejectedError, match="etcd-bridge:") as raised:
            sink.open()
        assert "HMGET" in str(raised.value) or "permission" in str(raised.value)

    def test_a_wrong_password_is_rejected_without_showing_it(
        self, redis_server: RedisServer, redis_names: RedisNames
    ) -> None:
        secret = f"wrong-{redis_names.tag}"
        url = redis_server.url_for(user="nobody", password=secret)
        with make_sink(url, redis_names) as sink, pytest.raises(SinkRejectedError) as raised:
            sink.open()
        assert "authentication as user 'nobody' failed" in str(raised.value)
        assert "BRIDGE_REDIS__URL" in str(raised.value)
        assert secret not in str(raised.value)

    def test_a_reply_left_unread_by_a_timeout_is_not_the_next_calls(
        self, redis_factory: RedisFactory
    ) -> None:
        """A call that timed out leaves its reply coming: its connection must be dropped, not
        handed back to the pool for the next call to read that reply as its own. The script
        runs 1 s against a timeout of 0.7 s, so the next call, sent at once, is answered
        while its own timeout still runs, right after the late reply."""
        server = redis_factory.start()
        slow = Script.of(
            "#!lua\nlocal start = redis.call('TIME')\nlocal now = start\n"
            "while (now[1] - start[1]) * 1000000 + now[2] - start[2] < tonumber(ARGV[1]) do\n"
            "  now = redis.call('TIME')\nend\nreturn 'late'"
        )
        with connect(load_section("redis", RedisSettings, url=server.url, timeout=0.7)) as client:
            with pytest.raises(redis.exceptions.TimeoutError):
                slow.run(client, [], Arguments(1_000_000))
            assert Script.of("return ARGV[1]").run(client, [], Arguments("mine")) == b"mine"

    def test_an_unreachable_server_is_retryable(self, redis_names: RedisNames) -> None:
        url = f"redis://user:secret@127.0.0.1:{free_port()}/0"
        with make_sink(url, redis_names, timeout=1) as sink:
            with pytest.raises(SinkUnavailableError) as raised:
                sink.open()
        assert "secret" not in str(raised.value)


OWNER_RULES = "+get +set +pttl +del"
MINIMAL_ACL = {
    "stream": "+eval +evalsha +xrevrange +xadd +xinfo|stream +exists ~{stream} "
    f"{OWNER_RULES} ~{{stream}}:owner",
    "routed": "+eval +evalsha +xadd +xinfo|stream +exists +hget +hmget +hset +hdel +smembers "
    f"+sismember +sadd {OWNER_RULES} ~{{stream}}:* ~etcd-bridge:{{pipeline}}:*",
    "pubsub": "+eval +evalsha +hget +hmget +hset +hdel +publish ~etcd-bridge:{pipeline}:* "
    f"{OWNER_RULES} ~{{channel}}:owner &{{channel}}",
    "mirror": "+eval +evalsha +hget +hmget +hset +hdel +hscan +unlink +exists +rename ~{mirror} "
    f"{OWNER_RULES} ~{{mirror}}:* ~etcd-bridge:{{pipeline}}:*",
}


@pytest.mark.parametrize("mode", sorted(MINIMAL_ACL))
def test_the_minimal_acl_of_the_docs_is_enough(
    redis_server: RedisServer, redis_names: RedisNames, mode: str
) -> None:
    """docs/redis.md lists these rules; a user holding only them delivers everything."""
    user, password = f"{mode}{redis_names.tag}", f"pw-{redis_names.tag}"
    rules = MINIMAL_ACL[mode].format(
        stream=redis_names.stream,
        pipeline=redis_names.pipeline,
        channel=redis_names.channel,
        mirror=redis_names.mirror,
    )
    url = redis_server.add_user(user, password=password, rules=rules)
    settings: dict[str, str] = {
        "mode": "stream" if mode == "routed" else mode,
        "channel": redis_names.channel,
        "mirror_key": redis_names.mirror,
    }
    if mode == "routed":
        settings["stream"] = redis_names.stream + ":{1}"
    deliver_and_reopen(url, redis_names, mixed_events(seeded_history()), **settings)
    destination = {
        "stream": redis_names.stream,
        "routed": settings.get("stream", ""),
        "pubsub": redis_names.channel,
        "mirror": redis_names.mirror,
    }[mode]
    with make_sink(url, redis_names, **settings) as sink, redis_server.client() as client:
        sink.open()
        assert client.pttl(f"{destination}:owner") > 0, "the rules let the sink keep its key"


def test_tls_with_client_certificates(
    redis_factory: RedisFactory, redis_names: RedisNames, tmp_path: Path
) -> None:
    tls = TlsFiles.create(tmp_path / "tls")
    server = redis_factory.start(tls=tls)
    assert server.url.startswith("rediss://")
    events = mixed_events(seeded_history())
    files = {
        "ca_file": str(tls.ca),
        "cert_file": str(tls.client_cert),
        "key_file": str(tls.client_key),
    }
    deliver_and_reopen(server.url, redis_names, events, **files)
    with server.client() as client:
        assert client.xlen(redis_names.stream) == len(events)
    untrusted = {key: value for key, value in files.items() if key != "ca_file"}
    with (
        make_sink(server.url, redis_names, **untrusted) as sink,
        pytest.raises(SinkRejectedError, match="BRIDGE_REDIS__CA_FILE"),
    ):
        sink.open()


def test_routed_streams_are_checked_for_permissions_at_open(
    redis_server: RedisServer, redis_names: RedisNames
) -> None:
    template = redis_names.stream + ":{1}"
    events = mixed_events(seeded_history())
    with make_sink(redis_server.url, redis_names, stream=template) as sink:
        deliver(sink, events, sizes=SIZES)
    user, password = f"r{redis_names.tag}", f"pw-{redis_names.tag}"
    url = redis_server.add_user(user, password=password, rules="~* +@all -xadd")
    with (
        make_sink(url, redis_names, stream=template) as sink,
        pytest.raises(SinkRejectedError, match="XADD on key"),
    ):
        sink.open()
