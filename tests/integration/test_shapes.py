"""Exactly once across kill -9 for the data shapes that break naive code, in every sink.

- **A huge revision.** One DeleteRange of a prefix of 100,000 keys is ONE revision of 100,000
  DELETE events, each with its previous value (~17 MB as one watch response). A bridge that
  holds a revision whole needs about 750 MB for it (1.5 GB at 200,000), three times the
  memory limit below; one that hands it on in pieces must resume in the middle of it. etcd
  runs with small fragments here (``SMALL_FRAGMENTS``) only to keep the run short: the bridge
  reads such a revision in etcd's fragments either way.
- **Large values.** 1 MiB binary values (etcd's default request limit is 1.5 MiB): in the
  snapshot, and overwritten, so that one event carries 1 MiB twice (value and previous value).

The bridge (``python -m bridge run``, a subprocess) is killed with SIGKILL while it delivers
such a revision, each time only once it says (``/positions``) that the sink holds more of that
revision than the sink held after the previous kill, and restarted. What the sink holds at the
end is read back by the test's own means (``tests.sinks``: the file's lines, XRANGE, aiokafka,
a JetStream pull consumer) and compared with the independent record of what was written to
etcd (``tests.history``). Each bridge process's peak RSS (VmHWM) is read just before it is
killed or stopped, and must stay under 250 MB: a revision must not be held in memory whole.
"""

import contextlib
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from bridge.events import Event, EventType, Op
from tests.fixtures.bridge import BridgeFactory, BridgeProcess, get
from tests.fixtures.etcd import EtcdFactory, EtcdServer
from tests.fixtures.processes import serve, wait_for
from tests.history import RecordingWriter, assert_exactly_once, assert_snapshot
from tests.sinks import SINKS, Destination

PIPELINE = "shapes"
HUGE_KEYS = 100_000
HUGE_KILLS = (0.1, 0.4)
"""Kill once the sink holds over 10% of the huge revision, and again over 40%."""
SHAPED_SINKS = ("file", "redis", "kafka")
"""The sinks of the huge revision. Not NATS nor PostgreSQL, whose kill -9 loops are in
test_nats_sink.py and test_postgres_bridge.py: 100,000 more events each would add minutes to
the suite. (``bench.shapes`` measures a million.)"""
LARGE_VALUE_SINKS = (*SHAPED_SINKS, "nats")
"""The sinks of the 1 MiB values: NATS too, on a server of its own taking messages of up to
8 MiB (``tests.sinks.nats``: nats-server's default ``max_payload`` of 1 MiB refuses them).
PostgreSQL's ``bytea`` takes them whatever the size; its kill -9 loops are elsewhere."""
BIG_KEYS = 40
MIB = 1024 * 1024
RSS_LIMIT = 250_000_000
"""Bytes (250 MB = 238 MiB): the bridge's peak RSS in every run."""
SMALL_FRAGMENTS = ("--max-request-bytes=262144",)
"""etcd cuts a response it fragments at --max-request-bytes + 512 KiB, in time quadratic in
the events per fragment: 200,000 deletes took ~24 s at the default 1.5 MiB, ~9 s at this."""
EXITED = -1


@dataclass
class SinkUnderTest:
    """One sink behind a dedicated etcd: where it writes, and the bridge's settings for it."""

    etcd: EtcdServer
    prefix: str
    destination: Destination
    env: dict[str, str]

    @property
    def name(self) -> str:
        return self.destination.name

    def held(self, revision: int, count: int) -> int:
        """How many of the ``count`` events of ``revision`` it holds (polled while the bridge
        writes)."""
        return self.destination.held(
            revision=revision, count=count, pipeline=PIPELINE, prefix=self.prefix.encode()
        )

    def read(self) -> list[Event]:
        """Everything it holds, in order."""
        return self.destination.events(pipeline=PIPELINE)


@pytest.fixture
def etcd_args() -> tuple[str, ...]:
    """Extra etcd flags; a test parametrizes ``etcd_args`` to change them."""
    return ()


@pytest.fixture
def sink(
    request: pytest.FixtureRequest,
    etcd_args: tuple[str, ...],
    etcd_factory: EtcdFactory,
    prefix: str,
    tmp_path: Path,
) -> Iterator[SinkUnderTest]:
    """A fresh etcd and a fresh server of the sink a test parametrizes ``sink`` with
    (indirectly), so that hundreds of MB of test data are freed at the end of the test
    instead of weighing on the session's servers."""
    etcd = etcd_factory.start(extra_args=etcd_args)
    kind = SINKS[request.param]
    (tmp_path / kind.name).mkdir()
    server = kind.server(tmp_path / kind.name, persistent=False)
    with contextlib.ExitStack() as stack:
        if server is not None:
            stack.enter_context(contextlib.contextmanager(serve)(server))
        destination = kind.fresh(server, directory=tmp_path, tag=f"shapes-{uuid.uuid4().hex[:12]}")
        stack.callback(destination.close)
        env = {
            "BRIDGE_ETCD__ENDPOINTS": etcd.url,
            "BRIDGE_ETCD__PREFIX": prefix,
            "BRIDGE_NAME": PIPELINE,
            "BRIDGE_SINKS": kind.name,
            **destination.env(),
        }
        yield SinkUnderTest(etcd=etcd, prefix=prefix, destination=destination, env=env)


class Bridges:
    """The bridge under test, one process after another, and the peak RSS of each."""

    def __init__(self, factory: BridgeFactory, env: dict[str, str]) -> None:
        self.factory = factory
        self.env = env
        self.peaks: list[int] = []
        self.current: BridgeProcess = factory.start(**env)

    def kill(self) -> None:
        self.peaks.append(self.current.peak_rss())
        self.current.kill()

    def restart(self) -> None:
        self.current = self.factory.start(**self.env)

    def stop(self) -> int:
        """SIGTERM; the exit code."""
        self.peaks.append(self.current.peak_rss())
        return self.current.terminate()

    def describe_peaks(self) -> str:
        return ", ".join(f"{peak / MIB:.0f}" for peak in self.peaks) + " MiB"


def wait_beyond(
    bridges: Bridges, held: Callable[[], int], *, than: int, what: str, interval: float = 0.02
) -> int:
    """Until ``held()`` (events of one revision) is more than ``than``: that many; fails,
    showing its log, if the bridge exits meanwhile."""

    def more() -> int | None:
        if not bridges.current.running:
            return EXITED
        now = held()
        return now if now > than else None

    found = wait_for(more, timeout=120, what=f"more than {than} {what}", interval=interval)
    assert found != EXITED, f"the bridge exited:\n{bridges.current.log_tail()}"
    return found


def wait_for_more(
    bridges: Bridges, sink: SinkUnderTest, *, revision: int, count: int, than: int
) -> int:
    """Until the sink holds more than ``than`` of the ``count`` events of ``revision``: how
    many it holds."""
    return wait_beyond(
        bridges,
        lambda: sink.held(revision, count),
        than=than,
        what=f"of revision {revision} in {sink.name}",
    )


def wait_for_all(bridges: Bridges, sink: SinkUnderTest, *, revision: int, count: int) -> None:
    wait_for_more(bridges, sink, revision=revision, count=count, than=count - 1)


def flushed(bridge: BridgeProcess, *, revision: int, count: int) -> int:
    """How many of the ``count`` events of ``revision`` the bridge says its sink holds, from
    its ``/positions``: cheap enough to poll every few milliseconds, where reading 100,000
    events back from a sink lets the bridge deliver tens of thousands more meanwhile."""
    assert bridge.port is not None
    _status, body = get(bridge.port, "/positions", host=bridge.host)
    position = orjson.loads(body)["pipelines"][0]["position"]
    if position is None:
        return 0
    at, _, index = position.partition("-")
    if int(at) == revision:
        return int(index) + 1
    return count if int(at) > revision else 0


def wait_for_flushed(bridges: Bridges, *, revision: int, count: int, than: int) -> int:
    """Until the bridge says its sink holds more than ``than`` of the ``count`` events of
    ``revision``: how many, by its word."""
    return wait_beyond(
        bridges,
        lambda: flushed(bridges.current, revision=revision, count=count),
        than=than,
        what=f"of revision {revision} flushed",
        interval=0.005,
    )


def held_at_least(sink: SinkUnderTest, *, revision: int, count: int, least: int) -> int:
    """How many of the ``count`` events of ``revision`` the sink holds, once its reader shows
    at least ``least``: what the bridge said it flushed is durable, but a reader (Kafka's
    follower) may not have read that far yet."""

    def enough() -> int | None:
        held = sink.held(revision, count)
        return held if held >= least else None

    return wait_for(enough, timeout=60, what=f"{least} of revision {revision} in {sink.name}")


def kill_in_the_middle(
    bridges: Bridges, sink: SinkUnderTest, *, revision: int, count: int, at: Sequence[float]
) -> int:
    """Kill -9 the bridge while it delivers ``revision`` (``count`` events), once per fraction
    of ``at``: as soon as it says its sink holds more than that fraction of the revision, and
    more than the sink held after the previous kill. Restart it after each kill. Returns how
    many kills left the sink holding part of the revision (past the fraction, not all of it),
    as read back from the sink."""
    in_the_middle = 0
    held = 0
    for fraction in at:
        threshold = max(held, int(fraction * count))
        done = wait_for_flushed(bridges, revision=revision, count=count, than=threshold)
        if done >= count:
            break
        bridges.kill()
        held = held_at_least(sink, revision=revision, count=count, least=done)
        in_the_middle += threshold < held < count
        print(f"{sink.name}: killed holding {held} of the {count} events of revision {revision}")
        bridges.restart()
    return in_the_middle


def shortfalls(bridges: Bridges, *, in_the_middle: int, kills: int, revision: int) -> list[str]:
    """What a run fell short of besides exactly once: kills in the middle, and memory."""
    found = []
    if in_the_middle < kills:
        found.append(
            f"only {in_the_middle} of {kills} kills left part of revision {revision} in the "
            "sink (it was delivered before a kill could land in the middle)"
        )
    peak = max(bridges.peaks)
    if peak >= RSS_LIMIT:
        found.append(
            f"peak RSS {peak / MIB:.0f} MiB >= {RSS_LIMIT / MIB:.0f} MiB (250 MB); "
            f"per process: {bridges.describe_peaks()}"
        )
    return found


@pytest.mark.slow
@pytest.mark.parametrize("sink", SHAPED_SINKS, indirect=True)
@pytest.mark.parametrize("etcd_args", [SMALL_FRAGMENTS], ids=["small-fragments"])
def test_a_revision_of_100000_deletes_arrives_once_across_kills(
    sink: SinkUnderTest, bridge_factory: BridgeFactory
) -> None:
    with sink.etcd.client() as client:
        writer = RecordingWriter(client, prefix=sink.prefix, seed=31)
        snapshot_revision = writer.load(
            count=HUGE_KEYS, value=lambda number: (b"%06d:" % number).ljust(100, b"v")
        )
        state = dict(writer.state)
        bridges = Bridges(bridge_factory, sink.env)
        wait_for_all(bridges, sink, revision=snapshot_revision, count=HUGE_KEYS + 2)
        deleted = writer.delete_prefix()
        in_the_middle = kill_in_the_middle(
            bridges, sink, revision=deleted, count=HUGE_KEYS, at=HUGE_KILLS
        )
        for _ in range(20):  # the stream goes on after the huge revision
            writer.step()
        last = writer.changes[-1].revision
        in_last = sum(change.revision == last for change in writer.changes)
        wait_for_all(bridges, sink, revision=last, count=in_last)
    assert bridges.stop() == 0
    print(f"{sink.name}: peak RSS per bridge process {bridges.describe_peaks()}")
    events = sink.read()
    assert assert_snapshot(events, state) == snapshot_revision
    assert_exactly_once(events, writer.changes, after=snapshot_revision)
    deletes = [event for event in events if event.revision == deleted]
    assert [event.index for event in deletes] == list(range(HUGE_KEYS))
    assert all(event.type is EventType.DELETE and event.op is Op.DELETE for event in deletes)
    assert [(event.key, event.prev_value) for event in deletes] == sorted(state.items())
    problems = shortfalls(
        bridges, in_the_middle=in_the_middle, kills=len(HUGE_KILLS), revision=deleted
    )
    assert not problems, "; ".join(problems)


@pytest.mark.slow
@pytest.mark.parametrize("sink", LARGE_VALUE_SINKS, indirect=True)
def test_one_mebibyte_values_arrive_once_and_bytes_exact(
    sink: SinkUnderTest, bridge_factory: BridgeFactory
) -> None:
    sink.env.update(sink.destination.env(**sink.destination.large_values))
    with sink.etcd.client() as client:
        writer = RecordingWriter(client, prefix=sink.prefix, seed=41)
        keys = [sink.prefix.encode() + b"big/%02d" % number for number in range(BIG_KEYS)]
        for key in keys:
            snapshot_revision = writer.put_keys([(key, writer.random.randbytes(MIB))])
        state = dict(writer.state)
        bridges = Bridges(bridge_factory, sink.env)
        # The snapshot's events: its begin marker, one per key, its end marker.
        in_the_middle = kill_in_the_middle(
            bridges, sink, revision=snapshot_revision, count=BIG_KEYS + 2, at=(0.25,)
        )
        wait_for_all(bridges, sink, revision=snapshot_revision, count=BIG_KEYS + 2)
        for number, key in enumerate(keys):  # 1 MiB value, 1 MiB previous value
            writer.put_keys([(key, writer.random.randbytes(MIB))])
            if number == BIG_KEYS // 2:  # whatever the bridge is doing at that moment
                bridges.kill()
                bridges.restart()
        wait_for_all(bridges, sink, revision=writer.changes[-1].revision, count=1)
    assert bridges.stop() == 0
    print(f"{sink.name}: peak RSS per bridge process {bridges.describe_peaks()}")
    events = sink.read()
    assert assert_snapshot(events, state) == snapshot_revision
    assert_exactly_once(events, writer.changes, after=snapshot_revision)
    updates = [event for event in events if event.op is Op.UPDATE]
    assert len(updates) == BIG_KEYS
    assert all(len(e.value or b"") == len(e.prev_value or b"") == MIB for e in updates)
    problems = shortfalls(bridges, in_the_middle=in_the_middle, kills=1, revision=snapshot_revision)
    assert not problems, "; ".join(problems)
