"""``EtcdConnection.failover`` turns every later request to the next endpoint, not only the
next ``connect``: the election never calls ``connect`` (issue 16, partitions)."""

from bridge.etcd import EtcdConnection
from config.etcd import EtcdSettings

ENDPOINTS = ["http://10.0.0.1:2379", "http://10.0.0.2:2379", "http://10.0.0.3:2379"]


def test_failover_moves_the_endpoint_requests_use() -> None:
    connection = EtcdConnection(EtcdSettings(endpoints=ENDPOINTS))
    seen = [connection.endpoint]
    for _ in range(3):
        connection.failover()
        seen.append(connection.endpoint)
    assert seen == [*ENDPOINTS, ENDPOINTS[0]]
