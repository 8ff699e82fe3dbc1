"""The lease keeper ends the term by the local deadline when every refresh hangs (a
partition drops packets), instead of after a refresh's full timeout (issue 16)."""

import threading
import time

from bridge.election import Leadership
from bridge.errors import EtcdUnavailableError
from config.etcd import EtcdSettings
from config.ha import HaSettings


class HangingConnection:
    """Every refresh waits out its timeout and fails, as across a partition."""

    def __init__(self) -> None:
        self.refreshes: list[float] = []
        self.failovers = 0

    def keep_alive(self, lease: int, *, timeout: float) -> int:
        self.refreshes.append(timeout)
        time.sleep(timeout)
        raise EtcdUnavailableError("etcd: DEADLINE_EXCEEDED")

    def failover(self) -> None:
        self.failovers += 1


def test_term_ends_at_the_local_deadline_when_refreshes_hang() -> None:
    leadership = Leadership(EtcdSettings(), ha=HaSettings(ttl=3), pipeline="p")
    connection = HangingConnection()
    leadership._connection = connection  # type: ignore[assignment]  # noqa: SLF001
    leadership._lease = 1  # noqa: SLF001
    deadline = time.monotonic() + 2.5
    leadership._deadline = deadline  # noqa: SLF001 - as a campaign that just won sets it
    keeper = threading.Thread(target=leadership._keep, args=(threading.Event(),))  # noqa: SLF001
    keeper.start()
    assert leadership.lost.wait(5)
    ended = time.monotonic()
    keeper.join()
    assert deadline <= ended < deadline + 0.2
    assert not leadership.valid()
    assert connection.failovers >= 2  # retried on the next endpoint, not only after a pause
    assert all(timeout <= 1.0 for timeout in connection.refreshes)  # at most a third of the TTL
