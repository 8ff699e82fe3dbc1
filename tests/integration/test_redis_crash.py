"""Crashes around the Redis sink: the writer killed with SIGKILL, and Redis itself killed.

The writer runs in a subprocess (this module's ``main``) that behaves like the pump
(``bridge.contract.deliver_with_retries``): open the sink, take its tail, write every event
after it in small batches, flush each, reopen with backoff while Redis is unavailable. The
test kills it with SIGKILL at several points of a stream of thousands of changes, restarting
it each time, then checks what a consumer reads: every event exactly once, in position order.
The writer paces itself a little (a short pause per batch) only so that a kill lands
mid-stream rather than after the end; the test itself never sleeps, it polls the stream's
length.

The Redis test kills redis-server (AOF, ``appendfsync always``) while an in-process writer is
busy, restarts it, and expects the writer to reopen with backoff and finish exactly once.
"""

import argparse
import sys
import threading
from pathlib import Path

import pytest

from bridge.contract import PREFIX, History, deliver_with_retries
from bridge.events import Event, SnapshotReason
from tests.fixtures.processes import ManagedProcess, wait_for
from tests.fixtures.redis import RedisFactory, RedisNames, RedisServer
from tests.integration.test_redis_sink import make_sink

ROOT = Path(__file__).resolve().parents[2]
MODES = ("stream", "routed", "mirror")


def history_and_events(seed: int) -> tuple[History, list[Event]]:
    """Thousands of changes: a snapshot, random changes, a resync snapshot, more changes."""
    history = History(prefix=PREFIX)
    for number in range(300):
        history.put(PREFIX + f"g{number % 4}/{number:04d}".encode(), b"seed")
    events = history.snapshot()
    events += history.random_changes(count=1500, seed=seed, keys=200)
    history.random_changes(count=50, seed=seed + 1, keys=200)  # lost to a "compaction"
    events += history.snapshot(reason=SnapshotReason.COMPACTED)
    events += history.random_changes(count=1500, seed=seed + 2, keys=200)
    return history, events


def sink_settings(mode: str, names: RedisNames) -> dict[str, str]:
    if mode == "routed":
        return {"stream": f"test:{names.tag}:{{1}}"}
    if mode == "mirror":
        return {"mode": "mirror", "mirror_key": names.mirror}
    return {}


def main() -> None:
    parser = argparse.ArgumentParser(description="A writer to be killed by test_redis_crash.")
    parser.add_argument("url")
    parser.add_argument("tag")
    parser.add_argument("mode", choices=MODES)
    parser.add_argument("--seed", type=int, default=5)
    options = parser.parse_args()
    names = RedisNames(tag=options.tag)
    _, events = history_and_events(options.seed)
    settings = sink_settings(options.mode, names)
    deliver_with_retries(
        lambda: make_sink(options.url, names, **settings), events, sizes=(10,), pace=0.002
    )


def progress(server: RedisServer, mode: str, names: RedisNames, events: list[Event]) -> int:
    """How many of ``events`` a writer has made durable: what a fresh sink's peek() says
    (open() would claim the destination the running writer owns)."""
    with make_sink(server.url, names, **sink_settings(mode, names)) as sink:
        tail = sink.peek()
    if tail is None:
        return 0
    return next(n for n, event in enumerate(events, 1) if event.position == tail.position)


def stream_ids(server: RedisServer, stream: str) -> list[str]:
    with server.client() as client:
        return [entry_id.decode() for entry_id, _ in client.xrange(stream)]


def check_exactly_once(
    server: RedisServer, mode: str, names: RedisNames, history: History, events: list[Event]
) -> None:
    if mode == "stream":
        assert stream_ids(server, names.stream) == [str(e.position) for e in events]
    elif mode == "routed":
        for group in range(4):
            ids = stream_ids(server, f"test:{names.tag}:g{group}")
            assert ids == sorted(set(ids), key=lambda i: tuple(map(int, i.split("-"))))
            keyed = [e for e in events if e.key.startswith(PREFIX + f"g{group}/".encode())]
            assert {str(e.position) for e in keyed} <= set(ids)
            markers = [e for e in events if e.op.value.startswith("snapshot_")]
            assert len(ids) == len(keyed) + len(markers)
    else:
        with server.client() as client:
            assert dict(client.hgetall(names.mirror)) == history.values()
    with make_sink(server.url, names, **sink_settings(mode, names)) as sink:
        assert sink.open() == events[-1]


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_kill_9_of_the_writer_leaves_every_change_exactly_once(
    redis_server: RedisServer, redis_names: RedisNames, tmp_path: Path, mode: str
) -> None:
    history, events = history_and_events(seed=5)
    command = [
        sys.executable,
        "-m",
        "tests.integration.test_redis_crash",
        redis_server.url,
        redis_names.tag,
        mode,
    ]
    kills = 0
    for fraction in (0.1, 0.25, 0.4, 0.55, 0.7, 0.85):
        writer = ManagedProcess(command=command, log_path=tmp_path / f"writer-{kills}.log")
        writer.start()
        try:
            threshold = int(fraction * len(events))

            def passed(threshold: int = threshold, writer: ManagedProcess = writer) -> bool:
                done = progress(redis_server, mode, redis_names, events) >= threshold
                return done or not writer.running

            wait_for(
                passed,
                timeout=60,
                what=f"the writer to pass {threshold} entries",
            )
            if writer.running:
                writer.kill()
                kills += 1
        finally:
            writer.stop()
    writer = ManagedProcess(command=command, log_path=tmp_path / "writer-final.log")
    writer.start()
    assert writer.process is not None
    assert writer.process.wait(60) == 0, writer.log_tail()
    assert kills >= 4, "the writer finished before it could be killed: slow it down"
    check_exactly_once(redis_server, mode, redis_names, history, events)


@pytest.mark.slow
def test_redis_killed_and_restarted_mid_stream_resumes_exactly_once(
    redis_factory: RedisFactory, redis_names: RedisNames
) -> None:
    server = redis_factory.start(persistent=True)
    history, events = history_and_events(seed=8)
    restarts = 0

    def crash_redis() -> None:
        nonlocal restarts
        for threshold in (len(events) // 4, len(events) // 2):
            wait_for(
                lambda: progress(server, "stream", redis_names, events) >= threshold,  # noqa: B023
                timeout=60,
                what=f"{threshold} entries before killing redis",
            )
            server.kill()
            server.start()
            restarts += 1

    crasher = threading.Thread(target=crash_redis, daemon=True)
    crasher.start()
    reopens = deliver_with_retries(
        lambda: make_sink(server.url, redis_names, timeout=2), events, sizes=(10,), pace=0.001
    )
    crasher.join(60)
    assert restarts == 2
    assert reopens >= 1
    check_exactly_once(server, "stream", redis_names, history, events)


if __name__ == "__main__":
    main()
