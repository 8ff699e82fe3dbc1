"""A wall clock that jumps an hour back and forward moves neither the HA deadline nor the
watch's stall detection: both follow the monotonic clock (issue 16).

The bridge's own code runs in-process against a real etcd, while every reading of the wall
clock (``time.time``, ``time.time_ns``, ``datetime.now``) is an hour early or an hour late,
alternately, on every call. A deadline computed from wall time would then have passed an hour
ago or be an hour away: an election term would end at once or outlive its lease by an hour, a
quiet watch would be declared stalled at once or a stalled one never. Both are asserted not to
happen, to within the few tenths of a second the threads' polling allows.

Changing the machine's real clock would prove the same for the C libraries too (grpc and
the lock timeouts of CPython >= 3.11 read CLOCK_MONOTONIC), but it needs root and would move
the clock under every other process of the machine.
"""

import datetime
import sys
import threading
import time
import types
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

import bridge.election
import bridge.etcd
from bridge.election import Leadership
from bridge.errors import EtcdUnavailableError
from bridge.etcd import EtcdConnection
from config.etcd import EtcdSettings
from config.ha import HaSettings
from config.keyspace import KeySpace
from tests.fixtures.etcd import EtcdFactory, EtcdServer
from tests.fixtures.processes import wait_for

HOUR = 3600.0
TTL = 2
STALL_TIMEOUT = 1.5
SLACK = 0.75
"""What the threads' polling (the keeper's, the watchdog's, ours) may add on a busy machine."""


class JumpingClock:
    """Wall time an hour late, then an hour early, alternately on every reading."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sign = 1

    def offset(self) -> float:
        with self._lock:
            self._sign = -self._sign
            return self._sign * HOUR

    def time(self) -> float:
        return _REAL_TIME() + self.offset()

    def time_ns(self) -> int:
        return _REAL_TIME_NS() + int(self.offset() * 1e9)


_REAL_TIME, _REAL_TIME_NS = time.time, time.time_ns


class _Jumping(types.ModuleType):
    """A module as our code sees it: the same but for ``replaced``, its wall-clock readers."""

    def __init__(self, module: types.ModuleType, **replaced: object) -> None:
        super().__init__(module.__name__)
        self._module = module
        self.__dict__.update(replaced)

    def __getattr__(self, name: str) -> object:
        return getattr(self._module, name)


def _jumping_datetime(clock: JumpingClock) -> type[datetime.datetime]:
    class JumpingDatetime(datetime.datetime):
        @classmethod
        def now(cls, tz: datetime.tzinfo | None = None) -> "JumpingDatetime":
            return cls.fromtimestamp(clock.time(), tz)

        @classmethod
        def utcnow(cls) -> "JumpingDatetime":
            return cls.now(datetime.UTC).replace(tzinfo=None)

        @classmethod
        def today(cls) -> "JumpingDatetime":
            return cls.now()

    return JumpingDatetime


@pytest.fixture
def wall_clock(monkeypatch: pytest.MonkeyPatch) -> JumpingClock:
    """The jumping clock in place of every way our modules (``bridge``, ``sinks``,
    ``config``) can read the wall clock: ``time.time``/``time_ns`` through the module or
    imported by name, ``datetime.now``/``utcnow``/``today``.

    Only our modules: grpc's Python layer turns a call's timeout into a deadline with
    ``time.time()`` and hands it to its C core, which converts it back with the real clock at
    once. A real jump moves both; a patched ``time.time`` would move only the first and
    put every call's deadline an hour off, which no real jump does.
    """
    clock = JumpingClock()
    jumping_datetime = _jumping_datetime(clock)
    replacements: dict[int, object] = {
        id(time): _Jumping(time, time=clock.time, time_ns=clock.time_ns),
        id(_REAL_TIME): clock.time,
        id(_REAL_TIME_NS): clock.time_ns,
        id(datetime): _Jumping(datetime, datetime=jumping_datetime),
        id(datetime.datetime): jumping_datetime,
    }
    patched = 0
    for name, module in list(sys.modules.items()):
        if module is None or name.split(".")[0] not in ("bridge", "sinks", "config"):
            continue
        for attribute, value in list(vars(module).items()):
            if id(value) in replacements:
                monkeypatch.setattr(module, attribute, replacements[id(value)])
                patched += 1
    assert patched, "no module of ours reads the clock: nothing was patched"
    election_time = bridge.election.time
    assert abs(election_time.time() - election_time.time()) > HOUR, "the clock does not jump"
    return clock


def test_ha_deadline_follows_the_monotonic_clock(
    etcd: EtcdServer, prefix: str, wall_clock: JumpingClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    leadership = Leadership(
        EtcdSettings(endpoints=[etcd.url], timeout=2),
        ha=HaSettings(enabled=True, ttl=TTL, key_prefix=f"/leaders{prefix}"),
        pipeline="clock",
    )
    stop = threading.Event()
    try:
        assert leadership.acquire(stop)
        # Refreshes through the jumping wall clock: the deadline stays TTL (less the margin)
        # after the monotonic moment each refresh was sent, never an hour off.
        first = leadership._deadline
        refreshed = wait_for(
            lambda: leadership._deadline > first and leadership._deadline,
            timeout=TTL * 2,
            what="a lease refresh",
        )
        assert 0 < refreshed - time.monotonic() <= TTL
        assert leadership.valid()

        # Refreshes cut off (as by a partition): the term must end at the last deadline, by
        # the monotonic clock, while the wall clock keeps jumping.
        def unreachable(lease: int, *, timeout: float) -> int:
            raise EtcdUnavailableError("etcd cut off by the test", endpoint=etcd.url)

        monkeypatch.setattr(leadership._connection, "keep_alive", unreachable)
        ended = wait_for(
            lambda: not leadership.valid() and time.monotonic(),
            timeout=TTL + SLACK,
            what="the term to end",
            interval=0.01,
        )
        deadline = leadership._deadline  # the last one set: a refresh may have been in flight
        assert deadline <= ended <= deadline + SLACK
    finally:
        stop.set()
        leadership.release()


@dataclass
class Watched:
    """What a watch iterated in a thread showed: when each response came, how it ended."""

    arrivals: list[float] = field(default_factory=list)
    ended_at: float = 0.0
    error: Exception | None = None

    def follow(self, stream: Iterator[object]) -> None:
        try:
            for _chunk in stream:
                self.arrivals.append(time.monotonic())
        except EtcdUnavailableError as error:
            self.error = error
        finally:
            self.ended_at = time.monotonic()


def test_watch_stall_detection_follows_the_monotonic_clock(
    etcd_factory: EtcdFactory, wall_clock: JumpingClock
) -> None:
    server = etcd_factory.start()
    connection = EtcdConnection(
        EtcdSettings(endpoints=[server.url], timeout=2, stall_timeout=STALL_TIMEOUT)
    )
    stream = connection.watch(KeySpace.of([b"/quiet/"]), start_revision=1)  # a fresh etcd's
    watched = Watched()
    follower = threading.Thread(target=watched.follow, args=(iter(stream),), name="watch")
    follower.start()
    try:
        # A quiet prefix on a healthy etcd: progress answers keep the watch open for longer
        # than the stall timeout, though the wall clock says hours pass between readings.
        wait_for(
            lambda: (
                len(watched.arrivals) >= 2
                and watched.arrivals[-1] - watched.arrivals[0] > STALL_TIMEOUT
            ),
            timeout=STALL_TIMEOUT * 4,
            what="progress answers over a stall timeout",
        )
        assert watched.ended_at == 0.0, f"the watch ended: {watched.error}"

        # etcd frozen: the watch is declared stalled a stall timeout after it last heard
        # anything, by the monotonic clock.
        server.process.pause()
        try:
            wait_for(
                lambda: watched.ended_at,
                timeout=STALL_TIMEOUT * 2 + SLACK,
                what="the stall to be detected",
            )
        finally:
            server.process.resume()
        assert watched.error is not None and "stalled" in str(watched.error)
        silent = watched.ended_at - watched.arrivals[-1]
        assert STALL_TIMEOUT <= silent <= STALL_TIMEOUT + SLACK, silent
    finally:
        stream.close()
        follower.join(timeout=5)
        connection.close()
