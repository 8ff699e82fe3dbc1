"""Shared fixtures: each module under tests/fixtures starts one kind of real server."""

pytest_plugins = [
    "tests.fixtures.bridge",
    "tests.fixtures.etcd",
    "tests.fixtures.kafka",
    "tests.fixtures.postgres",
    "tests.fixtures.nats",
    "tests.fixtures.redis",
]
