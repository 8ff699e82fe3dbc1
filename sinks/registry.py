"""Find sink classes by name through the ``etcd_bridge.sinks`` entry point group.

Our own sinks are registered in pyproject.toml exactly like a third party's would be, so there
is one path for all of them: a package that declares
``[project.entry-points."etcd_bridge.sinks"] mysink = "mypkg.sink:MySink"`` is selectable as
``BRIDGE_SINKS=mysink`` once installed, without touching this code.
"""

from importlib.metadata import entry_points

from bridge.errors import ConfigError
from sinks.base import Sink

GROUP = "etcd_bridge.sinks"


def available() -> list[str]:
    """Names of every installed sink, sorted."""
    return sorted(entry.name for entry in entry_points(group=GROUP))


def load(name: str) -> type[Sink]:
    """The sink class registered as ``name``; ConfigError naming BRIDGE_SINKS if none is."""
    matches = entry_points(group=GROUP, name=name)
    if not matches:
        raise ConfigError(
            f"BRIDGE_SINKS: unknown sink {name!r}; installed sinks: {', '.join(available())}"
        )
    (entry,) = tuple(matches)[:1]
    sink_class = entry.load()
    if not (isinstance(sink_class, type) and issubclass(sink_class, Sink)):
        raise ConfigError(
            f"BRIDGE_SINKS: entry point {name!r} ({entry.value}) is not a sinks.base.Sink"
        )
    return sink_class
