"""The PostgreSQL sink's lock on its pipeline (``sinks.postgres.owner``) against a real server:
a second bridge of the same pipeline refused naming the first (at once when the first runs on
this machine, after waiting when it may be gone), other pipelines not refused, HA taking
over, and the lock gone with a killed bridge's session, so that its restart does not wait.

The first bridge is a real sink whose owner is a process the test controls (one that runs,
or one on another machine), or a real bridge process killed with SIGKILL.
"""

import subprocess
import sys
from pathlib import Path

import pytest

from bridge.contract import PREFIX, History, deliver
from bridge.errors import SinkRejectedError, SinkUnavailableError
from bridge.events import Event
from bridge.ownership import Claimant, Owner
from bridge.sink import Sink
from config.settings import load_section
from sinks.postgres import owner as postgres_owner
from sinks.postgres.settings import PostgresSettings
from sinks.postgres.sink import PostgresSink
from tests.fixtures.postgres import PostgresDatabase
from tests.fixtures.processes import ManagedProcess, wait_for
from tests.integration.test_postgres_sink import PIPELINE, make_sink

SIZES = (50,)


def sink_of(dsn: str, owner: Owner) -> PostgresSink:
    """A sink of ``owner``'s pipeline whose claim names ``owner``, without HA."""
    settings = load_section("postgres", PostgresSettings, dsn=dsn)
    return PostgresSink(
        settings=settings, pipeline=owner.pipeline, claimant=Claimant(owner, ha=False)
    )


def events() -> list[Event]:
    return History(prefix=PREFIX).random_changes(count=30, seed=6)


def test_a_running_bridge_of_this_machine_is_refused_at_once_until_it_stops(
    postgres_database: PostgresDatabase, bystander: subprocess.Popen[bytes]
) -> None:
    first = sink_of(postgres_database.dsn, Owner.of_process(PIPELINE, pid=bystander.pid))
    with first:
        first.open()
        with make_sink(postgres_database.dsn) as second, pytest.raises(SinkRejectedError) as got:
            second.open()
        message = str(got.value)
        assert f"pipeline {PIPELINE!r}, pid {bystander.pid} on host" in message, message
        assert "server pid" in message and "BRIDGE_NAME" in message and "\n" not in message
    with make_sink(postgres_database.dsn) as second:
        assert deliver(second, events(), sizes=SIZES) is None, "the lock went with its session"


def test_other_pipelines_share_the_tables_unrefused(
    postgres_database: PostgresDatabase,
) -> None:
    with (
        make_sink(postgres_database.dsn) as first,
        make_sink(postgres_database.dsn, pipeline="another") as second,
    ):
        assert deliver(first, events(), sizes=SIZES) is None
        assert deliver(second, events(), sizes=SIZES) is None


def test_with_ha_an_instance_of_the_pipeline_goes_on_without_the_lock(
    postgres_database: PostgresDatabase, bystander: subprocess.Popen[bytes]
) -> None:
    """A paused former leader still holds the lock; the election fences it."""
    with sink_of(postgres_database.dsn, Owner.of_process(PIPELINE, pid=bystander.pid)) as paused:
        paused.open()
        with make_sink(postgres_database.dsn, ha=True) as leader:
            assert deliver(leader, events(), sizes=SIZES) is None


def test_a_holder_elsewhere_is_waited_for_then_refused(
    postgres_database: PostgresDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its client may be gone while the server has not noticed yet; still held after the
    patience, it belongs to a running bridge."""
    monkeypatch.setattr(postgres_owner, "PATIENCE_SECONDS", 0.5)
    elsewhere = Owner(PIPELINE, "other-host", 1, "0123456789ab/42")
    second = make_sink(postgres_database.dsn)

    def refused() -> str | None:
        try:
            second.open()
        except SinkUnavailableError as waiting:
            assert "may be gone" in str(waiting), waiting
            return None
        except SinkRejectedError as error:
            return str(error)
        raise AssertionError("the sink opened while another session held the lock")

    with sink_of(postgres_database.dsn, elsewhere) as first, second:
        first.open()
        with pytest.raises(SinkUnavailableError):
            second.open()
        message = wait_for(refused, timeout=10, what="the refusal", interval=0.2)
    assert "pid 1 on host other-host" in message, message


HOLDER = """
import sys, time
from tests.integration.test_postgres_sink import make_sink
with make_sink(sys.argv[1]) as sink:
    sink.open()
    print("open", flush=True)
    time.sleep(120)
"""
"""A bridge's claim, in a process the test kills: a sink opened, then nothing."""


def test_a_restart_after_kill_9_takes_the_lock_without_waiting(
    postgres_database: PostgresDatabase, tmp_path: Path
) -> None:
    """The killed bridge's session ends with its connection: the restart waits for nothing
    like the patience given to a client that may be gone."""
    holder = ManagedProcess(
        command=[sys.executable, "-c", HOLDER, postgres_database.dsn],
        log_path=tmp_path / "holder.log",
    )
    holder.start()
    try:
        wait_for(lambda: "open" in holder.log_tail(), timeout=30, what="the holder's open")
        with make_sink(postgres_database.dsn) as refused, pytest.raises(SinkRejectedError):
            refused.open()
        holder.kill()
        with make_sink(postgres_database.dsn) as restarted:
            wait_for(
                lambda: opens(restarted),
                timeout=postgres_owner.PATIENCE_SECONDS / 3,
                what="the lock of the killed holder",
                interval=0.05,
            )
    finally:
        holder.stop()


def opens(sink: Sink) -> bool:
    sink.open()
    return True
