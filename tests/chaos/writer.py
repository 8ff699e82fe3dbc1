"""The writer of a chaos run: mixed operations on the prefix, planned from the seed alone.

What an operation does is a function of the seed and its number only, never of what etcd
answered, so a seed always asks for the same operations. An attempt that fails is retried on
the next member of the cluster (one may be paused or partitioned). What etcd made of them (which
revision, whether a lease had expired, whether an attempt cut off by a pause had landed) is
not recorded here: the check reads it back from etcd's own history. Operations the run names
(``oversized_at``) put a value too large for Kafka and NATS instead, for ``--refusals``.
"""

import contextlib
import random
import threading
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from pyetcd import etcdrpc

from config.keyspace import prefix_range
from tests.chaos.common import PREFIX, etcd_client
from tests.fixtures.etcd import EtcdServer
from tests.fixtures.processes import wait_for

OUTSIDE = b"/chaos-outside/"
"""Keys some transactions also touch: outside the prefix, so no sink may hold them."""
OVERSIZED = PREFIX + b"big/"
"""Where the oversized values go (``--refusals``): keys no other operation touches, so that
only their creation carries such a value (never a later event's previous value)."""
OVERSIZED_BYTES = 1_100_000
"""An oversized value: above the 1 MB records of Kafka (librdkafka's ``message.max.bytes``)
and NATS (nats-server's ``max_payload``), below etcd's 1.5 MiB request limit."""
KEYS = 400
GROUPS = 8
"""Keys are spread over this many ``g<n>/`` groups, the unit of a range delete."""


@dataclass(frozen=True)
class Operation:
    """One writer operation: one etcd transaction, optionally under a fresh short lease."""

    puts: tuple[tuple[bytes, bytes], ...] = ()
    deletes: tuple[tuple[bytes, bytes], ...] = ()
    """(key, range_end): an empty range_end deletes one key."""
    lease_ttl: int = 0


class Writer:
    """Mixed operations on the prefix, each retried until etcd takes it; records nothing."""

    def __init__(
        self, servers: Sequence[EtcdServer], *, seed: int, oversized: Collection[int] = ()
    ) -> None:
        """``oversized``: the numbers of the operations that put an oversized value instead
        (``oversized_at``)."""
        self.servers = list(servers)
        self.oversized = frozenset(oversized)
        self._turn = 0
        self.random = random.Random(f"writer-{seed}")  # noqa: S311 - reproducible, not security
        self.operations = 0
        self.retries = 0
        self.leases = 0
        self._client: Any = None

    # planning: a function of the seed only, never of what etcd answered

    def _key(self) -> bytes:
        roll = self.random.random()
        if roll < 0.02:
            return PREFIX + b"bin/\xfe\xff" + bytes([self.random.randrange(16)])
        number = self.random.randrange(KEYS)
        return PREFIX + b"g%d/k%04d" % (number % GROUPS, number)

    def _value(self, number: int) -> bytes:
        roll = self.random.random()
        if roll < 0.80:
            return (
                b"v%d-" % number
                + self.random.randbytes(self.random.randrange(0, 16)).hex().encode()
            )
        if roll < 0.90:
            return self.random.randbytes(self.random.randrange(1, 40))  # mostly not UTF-8
        if roll < 0.95:
            return b""
        return b"L%d-" % number + b"x" * self.random.randrange(512, 4096)

    def plan(self, number: int) -> Operation:
        """Operation ``number``: a put, a delete, a transaction of 2-8 keys (some also
        outside the prefix), puts under a 1-2 s lease, a range delete of a group, or an
        update with a short value."""
        roll = self.random.random()
        if roll < 0.40:
            return Operation(puts=((self._key(), self._value(number)),))
        if roll < 0.52:
            return Operation(deletes=((self._key(), b""),))
        if roll < 0.75:
            keys = sorted({self._key() for _ in range(self.random.randrange(2, 9))})
            puts, deletes = [], []
            for key in keys:
                if self.random.random() < 0.3:
                    deletes.append((key, b""))
                else:
                    puts.append((key, self._value(number)))
            if self.random.random() < 0.1:
                puts.append((OUTSIDE + b"k%d" % self.random.randrange(20), b"o%d" % number))
            return Operation(puts=tuple(puts), deletes=tuple(deletes))
        if roll < 0.88:
            keys = sorted({self._key() for _ in range(self.random.randrange(1, 4))})
            return Operation(
                puts=tuple((key, self._value(number)) for key in keys),
                lease_ttl=self.random.choice((1, 2)),
            )
        if roll < 0.90:
            group = PREFIX + b"g%d/" % self.random.randrange(GROUPS)
            return Operation(deletes=(prefix_range(group),))
        return Operation(puts=((self._key(), b"u%d" % number),))  # short, mostly an update

    # executing

    def populate(self, count: int) -> None:
        """The keys the bridges' initial snapshot will hold."""
        for number in range(count):
            self.execute(Operation(puts=((self._key(), self._value(-number)),)))

    def step(self, number: int, *, abort: threading.Event) -> None:
        """Operation ``number`` of the run, planned and applied (an oversized put where
        ``oversized`` says: planned all the same, so that the others stay as the seed says)."""
        operation = self.plan(number)
        if number in self.oversized:
            value = b"R%d-" % number + b"r" * OVERSIZED_BYTES
            operation = Operation(puts=((OVERSIZED + b"%d" % number, value),))
        self.execute(operation, abort=abort)
        self.operations += 1

    def execute(self, operation: Operation, *, abort: threading.Event | None = None) -> int:
        """Apply ``operation``, retrying while etcd is away; the revision etcd gave it."""
        delay = 0.05
        deadline = time.monotonic() + 180
        while True:
            try:
                return self._apply(operation)
            except Exception:  # etcd paused, restarting or timing out: try again
                self.retries += 1
                self.close()
                self._turn += 1
                if (abort is not None and abort.is_set()) or time.monotonic() > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 1.0)

    def _apply(self, operation: Operation) -> int:
        if self._client is None:
            self._client = etcd_client(self.servers[self._turn % len(self.servers)], timeout=2)
        lease = 0
        if operation.lease_ttl:
            grant = self._client.leasestub.LeaseGrant(
                etcdrpc.LeaseGrantRequest(TTL=operation.lease_ttl), timeout=2
            )
            lease = int(grant.ID)
            self.leases += 1
        requests = [
            etcdrpc.RequestOp(request_put=etcdrpc.PutRequest(key=key, value=value, lease=lease))
            for key, value in operation.puts
        ] + [
            etcdrpc.RequestOp(
                request_delete_range=etcdrpc.DeleteRangeRequest(key=key, range_end=end)
            )
            for key, end in operation.deletes
        ]
        response = self._client.kvstub.Txn(etcdrpc.TxnRequest(success=requests), timeout=2)
        return int(response.header.revision)

    def close(self) -> None:
        """Drop the client; the next operation opens a fresh one (see ``etcd_client``)."""
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = None


def oversized_at(*, operations: int, count: int, seed: int) -> list[int]:
    """``count`` operation numbers drawn from the seed, spread over the middle of the run."""
    chooser = random.Random(f"oversized-{seed}")  # noqa: S311 - reproducible, not security
    return sorted(chooser.sample(range(operations // 10 + 1, operations * 9 // 10 + 1), count))


def wait_leases_expired(server: EtcdServer) -> None:
    """Until etcd has expired every key the writer bound to a lease (their DELETEs count)."""

    def gone() -> bool:
        client = etcd_client(server, timeout=5)
        try:
            response = client.kvstub.Range(
                etcdrpc.RangeRequest(key=PREFIX, range_end=prefix_range(PREFIX)[1], keys_only=True),
                timeout=5,
            )
        finally:
            client.close()
        return not any(kv.lease for kv in response.kvs)

    wait_for(gone, timeout=60, what="the writer's leases to expire", interval=0.2)
