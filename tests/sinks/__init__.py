"""Each built-in sink as the runs of the real bridge see it: one module per sink.

The chaos suite (tests/chaos), the data shape tests (tests/integration/test_shapes.py) and
the benchmarks (bench/) never name a sink: they look its ``Destination`` up here by the name
``BRIDGE_SINKS`` uses, start its ``server``, point the bridge at a ``fresh`` place with its
``env``, and read that place back (``streams``, ``events``, ``tail``, ``reader``). Adding a
sink to all of them is one module here, a ``Destination`` subclass (see ``base``), and its
line in ``SINKS``.
"""

from collections.abc import Mapping
from typing import Any

from tests.sinks.base import Destination
from tests.sinks.file import FileDestination
from tests.sinks.kafka import KafkaDestination
from tests.sinks.nats import NatsDestination
from tests.sinks.postgres import PostgresDestination
from tests.sinks.redis import RedisDestination

SINKS: dict[str, type[Destination]] = {
    kind.name: kind
    for kind in (
        FileDestination,
        RedisDestination,
        KafkaDestination,
        NatsDestination,
        PostgresDestination,
    )
}
"""Every sink by name, in the order runs list them."""


def destination_of(config: Mapping[str, Any]) -> Destination:
    """The destination a ``Destination.config()`` describes."""
    return SINKS[str(config["sink"])].from_config(config)
