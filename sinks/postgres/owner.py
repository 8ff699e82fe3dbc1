"""The PostgreSQL sink's claim on its pipeline's rows: a session-level advisory lock, so that a
second bridge of the same pipeline started without HA is refused with a line naming the
first (``bridge.ownership``) instead of taking turns with it.

Other pipelines are not refused: they share the tables by design, each with rows of its own
(rows and positions carry the pipeline). So the lock's key is the positions table and the
pipeline and mode, two ``hashtext`` values (the two-key form, which never meets the one-key
lock ``open`` takes while creating tables).

Why an advisory lock: PostgreSQL releases it with the session, and ends a session whose
client is gone, so nothing has to expire. A process killed with ``kill -9`` has its
connection closed by its kernel, and the server ends the session at once; a machine that
vanished is found by the keepalive probes every sink session asks for (``KEEPALIVES``: about
11 s of silence, or 10 s of unacknowledged data). Hence what a claim that finds the lock held
does:

- under HA, an instance of the pipeline goes on without it: the election fences a paused
  former leader that still holds it;
- a holder that runs on this machine (its session name, ``etcd-bridge`` and its
  ``Owner.marker``, says which process it is) is refused at once;
- otherwise its session may belong to a client that is gone and that the server has not
  dropped yet (a restart right after ``kill -9``, a lost machine): the sink reports itself
  unavailable, which the pump retries with backoff, for up to ``PATIENCE_SECONDS``, then takes
  a lock still held for a running bridge's, and refuses.

A session name set in ``BRIDGE_POSTGRES__DSN`` (``application_name``) wins over the marker; a
holder is then named by its session only, and waited for before it is refused.
"""

import logging
from datetime import datetime

import psycopg

from bridge.errors import SinkRejectedError, SinkUnavailableError
from bridge.ownership import Claim, Claimant, Owner

log = logging.getLogger(__name__)

PATIENCE_SECONDS = 15.0
"""How long a held lock may belong to a client that is gone: longer than ``KEEPALIVES`` take
to find one."""
KEEPALIVES = {
    "tcp_keepalives_idle": "5",
    "tcp_keepalives_interval": "2",
    "tcp_keepalives_count": "3",
    "tcp_user_timeout": "10000",
}
"""The server's probes of this session's client (seconds, and milliseconds for unacknowledged
data): a vanished bridge's session, and its lock, end within ``PATIENCE_SECONDS``."""
_NAME_PREFIX = "etcd-bridge "
_NAME_BYTES = 63
"""PostgreSQL cuts a longer session name (NAMEDATALEN - 1)."""

_HOLDER = """
SELECT a.pid, a.application_name, host(a.client_addr), a.backend_start
FROM pg_locks AS l LEFT JOIN pg_stat_activity AS a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND l.classid = hashtext(%s)::oid AND l.objid = hashtext(%s)::oid
"""


def session_name(owner: Owner) -> str:
    """The session's ``application_name``: ``etcd-bridge`` and ``owner``'s marker where that
    fits, else ``etcd-bridge:<pipeline>`` (cut by the server if need be)."""
    name = _NAME_PREFIX + owner.marker.decode()
    if len(name.encode()) <= _NAME_BYTES:
        return name
    return f"etcd-bridge:{owner.pipeline}"


def _owner_of(name: str | None) -> Owner | None:
    if not name or not name.startswith(_NAME_PREFIX) or len(name.encode()) >= _NAME_BYTES:
        return None  # another program's name, or one the server may have cut
    return Owner.decode(name.removeprefix(_NAME_PREFIX).encode())


class PipelineLock:
    """One sink's claim on its pipeline's rows; see the module docstring. One per sink
    object, kept across its reopenings (the waiting is counted across them)."""

    def __init__(self, *, claimant: Claimant, positions: str, mode: str, where: str) -> None:
        """``positions``: the positions table, qualified; ``where``: the server, for
        messages."""
        self._claimant = claimant
        self._key = (positions, f"{claimant.owner.pipeline}/{mode}")
        self._positions = positions
        self._mode = mode
        self._where = where

    def claim(self, connection: psycopg.Connection[tuple[object, ...]]) -> None:
        """Take the lock for this session, or go on without it under HA; else raise:
        SinkRejectedError naming the holder, SinkUnavailableError while it may be gone.
        psycopg's errors go through to the caller's translation."""
        row = connection.execute(
            "SELECT pg_try_advisory_lock(hashtext(%s), hashtext(%s))", self._key
        ).fetchone()
        if row is not None and row[0]:
            return
        holder = connection.execute(_HOLDER, self._key).fetchone()
        if holder is None:  # released between the two statements
            raise SinkUnavailableError(
                f"{self._where}: the lock of pipeline {self._pipeline!r} was released "
                "meanwhile; trying again"
            )
        server_pid, name, address, started = holder
        owner = _owner_of(name if isinstance(name, str) else None)
        session = _session(server_pid, name, address, started)
        if self._claimant.ha:
            log.warning(
                "postgres: taking over from another instance of this pipeline",
                extra={"holder": session},
            )
            return
        who = f"{owner}, {session}" if owner else session
        if owner is not None and owner != self._claimant.owner and owner.running():
            verdict = Claim.REFUSE
        else:
            verdict = self._claimant.wait_for(server_pid, lapses_in=PATIENCE_SECONDS)
        if verdict is Claim.WAIT:
            raise SinkUnavailableError(
                f"{self._where}: pipeline {self._pipeline!r} is locked by another session "
                f"({who}), whose client may be gone; waiting up to "
                f"{self._claimant.remaining():.0f}s for PostgreSQL to end it"
            )
        raise SinkRejectedError(
            f"{self._where}: another bridge writes pipeline {self._pipeline!r} "
            f"({self._mode}, {self._positions}): {who}; one pipeline takes one writer: stop "
            "that one, or give this one another BRIDGE_NAME (instances of one pipeline share "
            "it only with BRIDGE_HA__ENABLED)"
        )

    @property
    def _pipeline(self) -> str:
        return self._claimant.owner.pipeline


def _session(server_pid: object, name: object, address: object, started: object) -> str:
    """The holding session in words: what an operator finds in ``pg_stat_activity``."""
    since = f", since {started:%Y-%m-%d %H:%M:%S %Z}" if isinstance(started, datetime) else ""
    source = f", from {address}" if address else ""  # hidden from other roles, or a socket
    named = f" '{name}'" if name else ""
    return f"session{named} (server pid {server_pid}{source}{since})"
