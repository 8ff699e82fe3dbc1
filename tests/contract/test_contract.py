"""Every sink, the built-in ones and the sample plug-in, runs the whole contract kit.

One test per (sink, check); a check the harness cannot support (no way to make the file
system unavailable, nothing the file or PostgreSQL sink refuses) is reported as skipped, with
the reason.
"""

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bridge import contract
from tests.contract.harnesses import (
    FileHarness,
    KafkaHarness,
    NatsHarness,
    PostgresChangelogHarness,
    PostgresMirrorHarness,
    RedisMirrorHarness,
    RedisStreamHarness,
    SqliteHarness,
    StdoutHarness,
)

Factory = Callable[[pytest.FixtureRequest, Path], contract.SinkHarness]

HARNESSES: dict[str, Factory] = {
    "file": lambda _request, directory: FileHarness(directory),
    "stdout": lambda _request, directory: StdoutHarness(directory),
    "redis-stream": lambda request, _directory: RedisStreamHarness(
        request.getfixturevalue("redis_server")
    ),
    "redis-mirror": lambda request, _directory: RedisMirrorHarness(
        request.getfixturevalue("redis_server")
    ),
    "kafka": lambda request, _directory: KafkaHarness(request.getfixturevalue("kafka")),
    "nats": lambda request, _directory: NatsHarness(request.getfixturevalue("nats_pausable")),
    "postgres-changelog": lambda request, _directory: PostgresChangelogHarness(
        request.getfixturevalue("postgres_pausable")
    ),
    "postgres-mirror": lambda request, _directory: PostgresMirrorHarness(
        request.getfixturevalue("postgres_pausable")
    ),
    "sqlite-plugin": lambda _request, directory: SqliteHarness(directory),
}


@pytest.fixture(params=list(HARNESSES))
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[contract.SinkHarness]:
    with HARNESSES[request.param](request, tmp_path) as made:
        yield made


@pytest.mark.parametrize("check", contract.CHECKS, ids=contract.check_id)
def test_contract(check: contract.Check, harness: contract.SinkHarness) -> None:
    try:
        check(harness)
    except contract.NotApplicable as reason:
        pytest.skip(str(reason))
