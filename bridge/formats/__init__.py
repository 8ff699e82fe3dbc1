"""Record formats: what a sink's records look like (docs/formats.md).

- ``base``: the ``EventFormat`` contract and the ``FormatContext`` a format may name;
- ``values``: how values are embedded (``BRIDGE_VALUES``), shared by every format;
- ``native``: docs/events.md, the default;
- ``debezium``: Debezium's change-event envelope, for Flink, RisingWave and Kafka Connect;
- ``cloudevents``: CloudEvents 1.0, for Knative, event routers and the CloudEvents SDKs.

``build_format`` is the one place that picks a format by name; a sink never does.
"""

from bridge.formats.base import EventFormat, FormatContext
from bridge.formats.cloudevents import CloudEventsFormat
from bridge.formats.debezium import DebeziumFormat
from bridge.formats.native import NativeFormat
from config.output import FormatName, OutputSettings

__all__ = ["EventFormat", "FormatContext", "build_format"]


def build_format(output: OutputSettings, *, context: FormatContext) -> EventFormat:
    """The format ``output`` selects, for a pipeline described by ``context``."""
    if output.format is FormatName.NATIVE:
        return NativeFormat(context, output)
    if output.format is FormatName.DEBEZIUM:
        return DebeziumFormat(context, output)
    if output.format is FormatName.CLOUDEVENTS:
        return CloudEventsFormat(context, output)
    raise NotImplementedError(output.format)
