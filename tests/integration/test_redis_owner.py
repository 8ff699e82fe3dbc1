"""The Redis sink's owner key against a real redis-server (``sinks.redis.owner``): a second
bridge on one destination refused naming the first, at open and at every flush; a claim left
by a gone process taken at once, one from elsewhere waited for until it lapses; HA taking
over; renewal while idle; release on close; an ACL without the key warned about, not refused.

The other bridge is played by a marker the test writes itself (as that bridge's renewals
would), naming a process the test controls: one that runs, one that is gone, or one on
another machine. Two sinks of different pipelines in this process are two real claimants.
"""

import logging
import subprocess

import pytest

from bridge.contract import PREFIX, History, deliver
from bridge.errors import SinkRejectedError, SinkUnavailableError
from bridge.events import Event
from bridge.ownership import Owner
from bridge.sink import Sink
from sinks.redis import owner as redis_owner
from tests.fixtures.bridge import BridgeFactory, BridgeProcess
from tests.fixtures.etcd import EtcdServer
from tests.fixtures.owners import gone_process
from tests.fixtures.processes import wait_for
from tests.fixtures.redis import RedisNames, RedisServer
from tests.integration.test_file_faults import phase_of
from tests.integration.test_redis_bridge import bridge_env
from tests.integration.test_redis_sink import make_sink

SIZES = (50,)
OTHER = RedisNames(tag="other")
"""Another pipeline's names (its stream is the test's, given explicitly)."""


def owner_key(names: RedisNames) -> str:
    return f"{names.stream}:owner"


def plant(server: RedisServer, names: RedisNames, owner: Owner, *, ttl_ms: int) -> None:
    """The marker another bridge would keep on ``names``' stream."""
    with server.client() as client:
        client.set(owner_key(names), owner.marker, px=ttl_ms)


def held(server: RedisServer, names: RedisNames) -> tuple[Owner | None, int]:
    """Whom the marker names, and its TTL in milliseconds (-2: no marker)."""
    with server.client() as client:
        raw, ttl = client.get(owner_key(names)), int(client.pttl(owner_key(names)))
    return (None if raw is None else Owner.decode(raw)), ttl


def events(count: int = 30) -> list[Event]:
    return History(prefix=PREFIX).random_changes(count=count, seed=4)


def opened(sink: Sink) -> bool:
    sink.open()
    return True


def waits(bridge: BridgeProcess) -> float:
    """How often ``bridge``'s Redis pipeline reported the sink unavailable (no sample: never)."""
    try:
        return bridge.metric("etcd_bridge_errors_total", sink="redis", kind="SinkUnavailableError")
    except AssertionError:
        return 0.0


def test_a_second_pipeline_is_refused_naming_the_first_until_it_closes(
    redis_server: RedisServer, redis_names: RedisNames
) -> None:
    first = make_sink(redis_server.url, redis_names)
    with first:
        first.open()
        owner, ttl = held(redis_server, redis_names)
        assert owner == Owner.this_process(redis_names.pipeline)
        assert 0 < ttl <= redis_owner.TTL_SECONDS * 1000
        second = make_sink(redis_server.url, OTHER, stream=redis_names.stream)
        with second, pytest.raises(SinkRejectedError) as refused:
            second.open()
        message = str(refused.value)
        assert f"pipeline {redis_names.pipeline!r}, pid {owner.pid} on host" in message
        assert f"stream {redis_names.stream!r}" in message and "\n" not in message
    assert held(redis_server, redis_names) == (None, -2), "close released the marker"
    with make_sink(redis_server.url, OTHER, stream=redis_names.stream) as then:
        assert then.open() is None


@pytest.mark.parametrize("pipeline", ["same", "other"])
def test_a_running_bridge_of_this_machine_is_refused_at_once(
    redis_server: RedisServer,
    redis_names: RedisNames,
    bystander: subprocess.Popen[bytes],
    pipeline: str,
) -> None:
    name = redis_names.pipeline if pipeline == "same" else "someone-else"
    other = Owner.of_process(name, pid=bystander.pid)
    plant(redis_server, redis_names, other, ttl_ms=60_000)
    with make_sink(redis_server.url, redis_names) as sink, pytest.raises(SinkRejectedError) as got:
        sink.open()
    assert f"pid {bystander.pid} on host" in str(got.value)
    assert held(redis_server, redis_names)[0] == other, "the marker was left alone"


def test_a_marker_left_by_a_gone_process_of_this_machine_is_taken_at_once(
    redis_server: RedisServer, redis_names: RedisNames
) -> None:
    """A restart after kill -9 on the same machine: no wait for the old marker to expire."""
    gone = gone_process(redis_names.pipeline)
    plant(redis_server, redis_names, gone, ttl_ms=60_000)
    with make_sink(redis_server.url, redis_names) as sink:
        assert deliver(sink, events(), sizes=SIZES) is None
        assert held(redis_server, redis_names)[0] == Owner.this_process(redis_names.pipeline)


def test_a_marker_from_another_machine_is_waited_for_then_taken_when_it_lapses(
    redis_server: RedisServer, redis_names: RedisNames
) -> None:
    elsewhere = Owner(redis_names.pipeline, "other-host", 1, "0123456789ab/42")
    plant(redis_server, redis_names, elsewhere, ttl_ms=1500)
    sink = make_sink(redis_server.url, redis_names)
    with sink:
        with pytest.raises(SinkUnavailableError, match="other-host.*may be gone"):
            sink.open()  # retried by the pump, as here
        wait_for(lambda: opened(sink), timeout=10, what="the marker to lapse", interval=0.2)
        assert held(redis_server, redis_names)[0] == Owner.this_process(redis_names.pipeline)


def test_a_marker_from_another_machine_that_is_renewed_is_refused_in_the_end(
    redis_server: RedisServer, redis_names: RedisNames
) -> None:
    elsewhere = Owner(redis_names.pipeline, "other-host", 1, "0123456789ab/42")
    sink = make_sink(redis_server.url, redis_names)

    def refused() -> str | None:
        plant(redis_server, redis_names, elsewhere, ttl_ms=1000)  # its renewal
        try:
            sink.open()
        except SinkUnavailableError:
            return None  # still waiting for it to lapse
        except SinkRejectedError as error:
            return str(error)
        raise AssertionError("the sink took a marker that was being renewed")

    with sink:
        message = wait_for(refused, timeout=15, what="the refusal", interval=0.2)
    assert "pipeline" in message and "pid 1 on host other-host" in message


def test_with_ha_an_instance_of_the_pipeline_takes_over_and_writes_beside_its_marker(
    redis_server: RedisServer, redis_names: RedisNames, bystander: subprocess.Popen[bytes]
) -> None:
    """A paused former leader still holds the marker; the new leader writes anyway, and the
    former one, resuming, is let through by the scripts (the election fences it)."""
    paused = Owner.of_process(redis_names.pipeline, pid=bystander.pid)
    plant(redis_server, redis_names, paused, ttl_ms=60_000)
    batch = events()
    with make_sink(redis_server.url, redis_names, ha=True) as leader:
        assert leader.open() is None
        assert held(redis_server, redis_names)[0] == Owner.this_process(redis_names.pipeline)
        plant(redis_server, redis_names, paused, ttl_ms=60_000)  # it renews once more
        leader.write(batch)
        leader.flush()
    assert len(redis_server.stream_events(redis_names.stream)) == len(batch)


def test_every_flush_checks_the_marker_with_its_writes(
    redis_server: RedisServer, redis_names: RedisNames
) -> None:
    """The marker lapsed while this bridge was paused, and another bridge took the stream:
    the next batch is refused whole instead of interleaving."""
    batch = events()
    with make_sink(redis_server.url, redis_names) as sink:
        sink.open()
        sink.write(batch[:10])
        sink.flush()
        intruder = Owner("intruder", "other-host", 7, "0123456789ab/42")
        plant(redis_server, redis_names, intruder, ttl_ms=60_000)
        with pytest.raises(SinkRejectedError, match="pipeline 'intruder', pid 7 on host other"):
            sink.write(batch[10:])
            sink.flush()
    assert redis_server.stream_events(redis_names.stream) == batch[:10]


def test_the_marker_is_renewed_while_the_sink_is_idle(
    redis_server: RedisServer, redis_names: RedisNames
) -> None:
    with make_sink(redis_server.url, redis_names) as sink:
        sink.open()
        with redis_server.client() as client:
            client.pexpire(owner_key(redis_names), 3000)
        wait_for(
            lambda: held(redis_server, redis_names)[1] > 5000,
            timeout=redis_owner.RENEW_SECONDS * 3,
            what="a renewal",
        )


def test_an_acl_without_the_owner_key_is_warned_about_and_writes(
    redis_server: RedisServer, redis_names: RedisNames, caplog: pytest.LogCaptureFixture
) -> None:
    """Rules written before the marker existed keep working, without a marker."""
    user, password = f"old{redis_names.tag}", f"pw-{redis_names.tag}"
    rules = f"+eval +evalsha +xrevrange +xadd +xinfo|stream +exists ~{redis_names.stream}"
    url = redis_server.add_user(user, password=password, rules=rules)
    with caplog.at_level(logging.WARNING), make_sink(url, redis_names) as sink:
        assert deliver(sink, events(), sizes=SIZES) is None
    assert any("owner key" in record.getMessage() for record in caplog.records)
    assert held(redis_server, redis_names) == (None, -2)


def test_a_second_bridge_process_is_refused_and_a_restart_after_kill_9_is_not(
    etcd: EtcdServer,
    redis_server: RedisServer,
    redis_names: RedisNames,
    bridge_factory: BridgeFactory,
    prefix: str,
) -> None:
    env = bridge_env(etcd, redis_server.url, redis_names, prefix=prefix)
    first = bridge_factory.start(**env)
    first.wait_watching()
    second = bridge_factory.start(**{**env, "BRIDGE_NAME": "another"})
    assert second.process is not None and first.process is not None
    assert second.process.wait(30) == 1
    refusal = next(line for line in second.log_text().splitlines() if "ERROR" in line)
    assert f"pipeline {redis_names.pipeline!r}, pid {first.process.pid} on host" in refusal
    assert redis_names.stream in refusal, refusal
    first.kill()
    restarted = bridge_factory.start(**env)
    restarted.wait_watching()
    assert phase_of(restarted, "redis") == "watching"
    assert not waits(restarted), "the restart waited for the killed bridge's owner key"
    assert restarted.terminate() == 0
