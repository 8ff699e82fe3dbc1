"""Leader election through etcd, so that only one instance per pipeline writes.

Every instance with the same ``BRIDGE_NAME`` campaigns for one key (``BRIDGE_HA__KEY_PREFIX``
+ name) by creating it, bound to a lease of ``BRIDGE_HA__TTL`` seconds, only if it does not
exist. The winner keeps the lease alive; the others retry every fraction of the TTL, so a
killed winner is replaced about one TTL later, when etcd expires its lease and key.

The hard case is a winner that is paused or cut off: its lease expires and another instance
wins while it cannot notice. To stop writing *before* anyone else can start, the holder keeps
a local deadline: the time it *sent* its last successful keep-alive, plus the TTL etcd
granted, minus a margin. etcd started that TTL later than we sent the request, so our
deadline comes first. ``valid()`` compares the monotonic clock (which keeps counting while a
process is stopped) with it, and the pump asks before every write and flush. What is left is
the window between that question and the write itself; the README states what each sink
guarantees if an old instance resumes inside it.

A partition that drops packets makes every refresh hang until its timeout. So no refresh and
no wait of the keeper outlasts the deadline: a failed refresh is tried again at once on the
next endpoint, and once the deadline passes without one the term is over (``lost``), before
etcd can expire the lease and a standby win. Letting a late refresh run its full timeout
first would keep a cut-off holder counting itself active (its gauge, its phase, its pipelines
running) for seconds after its successor started.
"""

import logging
import os
import socket
import threading
import time

from bridge.errors import BridgeError, EtcdError
from bridge.etcd import EtcdConnection
from bridge.logs import error_fields
from bridge.retry import Backoff, Retry
from config.etcd import EtcdSettings
from config.ha import HaSettings

log = logging.getLogger(__name__)

_RETRY_SECONDS = 0.1
"""Pause before refreshing again on the next endpoint after a refresh failed."""


class Leadership:
    """Campaign for, hold and give up the election key of one pipeline."""

    def __init__(self, etcd: EtcdSettings, *, ha: HaSettings, pipeline: str) -> None:
        self._connection = EtcdConnection(etcd)
        self._ttl = ha.ttl
        self._margin = min(1.0, ha.ttl / 5)
        self.key = (ha.key_prefix + pipeline).encode()
        self.identity = f"{socket.gethostname()}:{os.getpid()}"
        self._lease = 0
        self._deadline = 0.0
        self.lost = threading.Event()
        self._keeper: threading.Thread | None = None

    def acquire(self, stop: threading.Event) -> bool:
        """Block until elected (True) or ``stop`` is set (False). A campaign that fails on a
        retryable error (etcd unavailable) is retried with backoff on the next endpoint."""
        self.lost.clear()
        retry = Retry(Backoff(initial=0.5, maximum=5.0), stop=stop)
        waiting_logged = False
        while not stop.is_set():
            elected = retry.call(self._campaign, on_error=self._campaign_failed)
            if elected is None:
                break
            if elected:
                log.info("leadership gained", extra={"key": self.key.decode(), "ttl": self._ttl})
                self._keeper = threading.Thread(
                    target=self._keep, args=(stop,), name="leadership", daemon=True
                )
                self._keeper.start()
                return True
            if not waiting_logged:
                log.info("standby: another instance is active", extra={"key": self.key.decode()})
                waiting_logged = True
            stop.wait(self._ttl / 4)
        return False

    def _campaign_failed(self, error: BridgeError) -> None:
        """Before the retry's wait: say so and turn to the next endpoint."""
        log.warning("election: etcd unavailable", extra=error_fields(error))
        self._connection.failover()

    def valid(self) -> bool:
        """Whether we certainly still hold the key (no other instance can have it)."""
        return not self.lost.is_set() and time.monotonic() < self._deadline

    def resign(self) -> None:
        """End this term: stop refreshing and revoke the lease, deleting the key if still ours.

        Called before every campaign (nothing to do before the first), so after every term,
        also one that ended because the local deadline passed while the keeper was still
        waiting on a refresh: that keeper must not go on renewing a lease nobody uses, or the
        key would outlive the term and block every campaign.
        """
        self.lost.set()
        if self._keeper is not None:
            self._keeper.join()
            self._keeper = None
        if self._lease:
            try:
                self._connection.revoke_lease(self._lease)
            except EtcdError as error:
                log.warning("could not revoke the lease; it will expire", extra=error_fields(error))
            self._lease = 0

    def release(self) -> None:
        """Give the key up at once (graceful stop), so a standby takes over without waiting."""
        self.resign()
        self._connection.close()

    def _campaign(self) -> bool:
        sent = time.monotonic()
        lease = self._connection.grant_lease(self._ttl)
        if self._connection.create_if_absent(self.key, value=self.identity.encode(), lease=lease):
            self._lease = lease
            self._deadline = sent + self._ttl - self._margin
            return True
        self._connection.revoke_lease(lease)
        return False

    def _keep(self, stop: threading.Event) -> None:
        """Refresh the lease every third of the TTL until stopped or lost; the term is lost
        when etcd says the lease expired or the local deadline passes unrefreshed (see the
        module docstring: neither a wait nor a refresh runs past it)."""
        pause = self._ttl / 3
        while not self.lost.wait(min(pause, self._left())) and not stop.is_set():
            sent = time.monotonic()
            if self._left() <= 0:
                self._lose("no lease refresh succeeded before the local deadline")
                return
            try:
                remaining = self._connection.keep_alive(
                    self._lease, timeout=min(self._ttl / 3, self._left())
                )
            except EtcdError as error:
                log.warning("lease refresh failed", extra=error_fields(error))
                self._connection.failover()
                pause = _RETRY_SECONDS
                continue
            if remaining <= 0:
                self._lose("the lease expired")
                return
            self._deadline = sent + remaining - self._margin
            pause = self._ttl / 3

    def _left(self) -> float:
        """Seconds until the local deadline (0 once it has passed)."""
        return max(0.0, self._deadline - time.monotonic())

    def _lose(self, why: str) -> None:
        log.error("leadership lost", extra={"key": self.key.decode(), "reason": why})
        self.lost.set()
