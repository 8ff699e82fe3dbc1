"""What every part of a chaos run agrees on: the names the bridges are configured with and
the sinks are named after (each sink's own names come from its module in ``tests.sinks``),
progress output, and etcd clients.

The names are fixed rather than drawn per run: one run owns its servers, so nothing else
can collide with them, and a kept working directory reads the same way every time.
"""

import sys
import time
from typing import Any

import pyetcd

from tests.fixtures.etcd import EtcdServer

PREFIX = b"/chaos/"
PIPELINE = "chaos"
"""The bridges' ``BRIDGE_NAME``, and the tag each sink's destination is named after."""
_STARTED = time.monotonic()


def say(message: str) -> None:
    """Progress on stderr, so that stdout carries the one line of figures only."""
    print(f"[chaos {time.monotonic() - _STARTED:7.1f}s] {message}", file=sys.stderr, flush=True)


def etcd_client(server: EtcdServer, *, timeout: float) -> Any:
    """A fresh client: pyetcd refuses an endpoint for minutes once a call to it failed."""
    return pyetcd.client(
        host=server.host,
        port=server.port,
        timeout=timeout,
        grpc_options=[("grpc.max_receive_message_length", -1)],
    )
