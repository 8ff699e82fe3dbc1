"""Shared fixtures: each module under tests/fixtures starts one kind of real server (``tls``
makes the certificates they use)."""

pytest_plugins = [
    "tests.fixtures.tls",  # first: the server fixtures import it
    "tests.fixtures.bridge",
    "tests.fixtures.etcd",
    "tests.fixtures.kafka",
    "tests.fixtures.postgres",
    "tests.fixtures.nats",
    "tests.fixtures.netns",
    "tests.fixtures.owners",
    "tests.fixtures.redis",
]
