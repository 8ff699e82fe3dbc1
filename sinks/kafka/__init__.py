"""The ``kafka`` sink: one record per event, exactly once, without Kafka transactions.

docs/kafka.md is the operator's view (settings, record layout, the guarantee and its limits);
the modules' docstrings say why the code looks like this. Only this package imports
``confluent_kafka``. Each module has one job:

- ``sink``: ``KafkaSink``, the ``bridge.sink`` contract, and why it is exactly once;
- ``records``: what a record holds, the rank that orders a partition, the checkpoint record;
- ``settings``: ``BRIDGE_KAFKA__*``;
- ``routing``: the topic and partition of a record;
- ``tails``: reading back the last record of partitions;
- ``reader``: ``KafkaReader``, every partition read back as one stream (``bridge.reader``);
- ``topics``: topic metadata and creation;
- ``clients``: building librdkafka clients, property values kept out of logs and errors;
- ``failures``: what a failed delivery means and how it is reported.
"""

from sinks.kafka.routing import partition_for
from sinks.kafka.sink import KafkaSink

__all__ = ["KafkaSink", "partition_for"]
