"""``/positions`` and ``POST /resnapshot`` of the HTTP endpoint, served in-process: what they
answer, and that the admin one is off without a token and refuses a wrong one."""

import logging
from collections.abc import Iterator

import orjson
import pytest

from bridge.events import Position
from bridge.health import HealthServer, Phase, PipelineHealth
from tests.fixtures.bridge import get

TOKEN = "s3cret-admin-token-0123"  # noqa: S105 - a test's own token


@pytest.fixture
def pipelines() -> list[PipelineHealth]:
    watching = PipelineHealth(sink="admin-a", guarantee="exactly-once", format="debezium")
    watching.enter(Phase.WATCHING)
    watching.stats.position = Position(40, 2)
    watching.stats.etcd_revision = 45
    standby = PipelineHealth(sink="admin-b")
    standby.enter(Phase.STANDBY)
    return [watching, standby]


def serve(pipelines: list[PipelineHealth], token: str | None) -> Iterator[int]:
    server = HealthServer(pipelines, host="127.0.0.1", port=0, silence_limit=30, admin_token=token)
    server.start()
    try:
        yield server.port
    finally:
        server.stop()


@pytest.fixture
def port(pipelines: list[PipelineHealth]) -> Iterator[int]:
    yield from serve(pipelines, TOKEN)


@pytest.fixture
def port_without_token(pipelines: list[PipelineHealth]) -> Iterator[int]:
    yield from serve(pipelines, None)


def request(
    port: int, path: str, *, method: str = "GET", token: str | None = None
) -> tuple[int, dict[str, object]]:
    status, body = get(port, path, method=method, token=token)
    return status, orjson.loads(body)


def test_positions_tell_where_each_sink_stands(port: int) -> None:
    status, body = request(port, "/positions")
    assert status == 200
    first, second = body["pipelines"]  # type: ignore[misc]
    assert first["sink"] == "admin-a" and first["phase"] == "watching"
    assert (first["position"], first["etcd_revision"], first["lag_revisions"]) == ("40-2", 45, 5)
    assert (first["guarantee"], first["format"]) == ("exactly-once", "debezium")
    assert second["position"] is None and second["phase"] == "standby"


def test_a_snapshot_is_asked_for_with_the_token(port: int, pipelines: list[PipelineHealth]) -> None:
    status, body = request(port, "/resnapshot?sink=admin-a", method="POST", token=TOKEN)
    assert (status, body) == (202, {"sink": "admin-a", "snapshot": "requested"})
    assert pipelines[0].snapshot_request.take()
    assert not pipelines[1].snapshot_request.pending


def test_a_wrong_or_missing_token_is_refused_and_not_logged(
    port: int, pipelines: list[PipelineHealth], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="bridge.health")
    wrong = "not-the-token-at-all-9876"
    assert request(port, "/resnapshot?sink=admin-a", method="POST", token=wrong)[0] == 401
    assert request(port, "/resnapshot?sink=admin-a", method="POST")[0] == 401
    assert not pipelines[0].snapshot_request.pending
    assert len(caplog.records) == 2
    assert all(wrong not in str(record.__dict__) for record in caplog.records)
    assert all(TOKEN not in str(record.__dict__) for record in caplog.records)


def test_without_a_token_set_admin_endpoints_are_off(
    port_without_token: int, pipelines: list[PipelineHealth]
) -> None:
    status, body = request(port_without_token, "/resnapshot?sink=admin-a", method="POST")
    assert status == 403 and "BRIDGE_HTTP__ADMIN_TOKEN" in str(body["error"])
    assert not pipelines[0].snapshot_request.pending


@pytest.mark.parametrize(
    ("query", "status"),
    [("sink=nope", 404), ("", 404), ("sink=admin-a&sink=admin-b", 404), ("sink=admin-b", 409)],
    ids=["unknown-sink", "no-sink", "two-sinks", "standby"],
)
def test_a_request_that_cannot_be_served_says_why(port: int, query: str, status: int) -> None:
    answer, body = request(port, f"/resnapshot?{query}", method="POST", token=TOKEN)
    assert answer == status and body["error"]
