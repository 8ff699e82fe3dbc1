"""Find sink classes by name through the ``etcd_bridge.sinks`` entry point group.

Our own sinks are registered in pyproject.toml exactly like a third party's would be, so there
is one path for all of them: a package that declares
``[project.entry-points."etcd_bridge.sinks"] mysink = "mypkg.sink:MySink"`` is selectable as
``BRIDGE_SINKS=mysink`` once installed, without touching this code.

A sink's client library is an install extra of the package that provides the sink (ours are
``etcd-bridge[kafka]``, ``etcd-bridge[redis]``...): a sink whose extra is missing fails to
import, and that becomes one line naming what to install, not a traceback.
"""

from importlib.metadata import EntryPoint, entry_points

from bridge.sink import Sink
from config.errors import ConfigError

GROUP = "etcd_bridge.sinks"


def available() -> list[str]:
    """Names of every installed sink, sorted."""
    return sorted(entry.name for entry in entry_points(group=GROUP))


def load(name: str) -> type[Sink]:
    """The sink class registered as ``name``; ConfigError naming BRIDGE_SINKS if it cannot be
    loaded (unknown, its client library missing, not a ``Sink``)."""
    matches = tuple(entry_points(group=GROUP, name=name))
    if not matches:
        raise ConfigError(
            f"BRIDGE_SINKS: unknown sink {name!r}; installed sinks: {', '.join(available())}"
        )
    entry = matches[0]
    try:
        sink_class = entry.load()
    except ImportError as error:
        raise ConfigError(
            f"BRIDGE_SINKS: sink {name!r} cannot load its client library ({error}); "
            f"install it with: pip install '{_install_hint(entry)}'"
        ) from error
    if not (isinstance(sink_class, type) and issubclass(sink_class, Sink)):
        raise ConfigError(
            f"BRIDGE_SINKS: entry point {name!r} ({entry.value}) is not a bridge.sink.Sink"
        )
    return sink_class


def _install_hint(entry: EntryPoint) -> str:
    """``<distribution>[<sink>]`` when the distribution declares an extra named after the sink
    (our convention), else the distribution itself."""
    distribution = entry.dist
    if distribution is None:
        return entry.module
    extras = distribution.metadata.get_all("Provides-Extra") or []
    if entry.name in extras:
        return f"{distribution.name}[{entry.name}]"
    return distribution.name
