"""Find sink classes by name through the ``etcd_bridge.sinks`` entry point group.

Our own sinks are registered in pyproject.toml exactly like a third party's would be, so there
is one path for all of them: a package that declares
``[project.entry-points."etcd_bridge.sinks"] mysink = "mypkg.sink:MySink"`` is selectable as
``BRIDGE_SINKS=mysink`` once installed, without touching this code.

Every sink's section holds, besides the sink's own ``settings_model``, the fields of
``config.output.OutputSettings`` (``BRIDGE_<NAME>__FORMAT``...) and of
``config.refusal.RefusalSettings`` (``BRIDGE_<NAME>__ON_REFUSED``...): ``settings_model`` here
gives the model with all of them, ``build_sink`` hands the sink the format they select, and
``refusal_settings`` gives the pipeline its policy, so a third party's sink gets formats and
refusal policies exactly as ours do.

A sink's client library is an install extra of the package that provides the sink (ours are
``etcd-bridge[kafka]``, ``etcd-bridge[redis]``...): a sink whose extra is missing fails to
import, and that becomes one line naming what to install, not a traceback.
"""

import functools
from importlib.metadata import EntryPoint, entry_points
from typing import NotRequired, TypedDict, TypeVar, Unpack

from pydantic import BaseModel, create_model

from bridge.formats import FormatContext, build_format
from bridge.reader import SinkReader
from bridge.sink import Sink, SinkContext
from config.errors import ConfigError
from config.keyspace import KeySpace
from config.output import OutputSettings, ValuesMode
from config.refusal import RefusalPolicy, RefusalSettings
from config.settings import variable_name

GROUP = "etcd_bridge.sinks"
Fields = TypeVar("Fields", bound=BaseModel)


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


@functools.cache
def settings_model(sink_class: type[Sink]) -> type[BaseModel]:
    """The model of a sink's whole section: its own ``settings_model`` and the output and
    refusal fields every sink has."""
    own = sink_class.settings_model
    combined: type[BaseModel] = create_model(
        own.__name__, __base__=(own, OutputSettings, RefusalSettings)
    )
    return combined


def output_settings(name: str, sink_class: type[Sink], section: BaseModel) -> OutputSettings:
    """The output fields of a sink's loaded section; ConfigError naming
    ``BRIDGE_<NAME>__FORMAT`` if the sink does not write the format chosen."""
    output = _fields_of(OutputSettings, section)
    if output.format not in sink_class.formats:
        offered = ", ".join(sorted(sink_class.formats))
        raise ConfigError(
            f"{variable_name((name, 'format'))}: the {name} sink does not write "
            f"{output.format.value} records (it writes: {offered})"
        )
    return output


def refusal_settings(name: str, section: BaseModel) -> RefusalSettings:
    """The refusal fields of a sink's loaded section; ConfigError naming
    ``BRIDGE_<NAME>__DEAD_LETTER_PATH`` when it is missing for ``dead_letter``, or set for
    another policy (which would silently not use it)."""
    refusal = _fields_of(RefusalSettings, section)
    dead_letter = refusal.on_refused is RefusalPolicy.DEAD_LETTER
    if dead_letter != (refusal.dead_letter_path is not None):
        policy = variable_name((name, "on_refused"))
        raise ConfigError(
            f"{variable_name((name, 'dead_letter_path'))}: "
            + (
                f"required with {policy}=dead_letter"
                if dead_letter
                else f"set, but {policy} is {refusal.on_refused.value}: set it to dead_letter"
            )
        )
    return refusal


def section_format(section: BaseModel) -> str:
    """The record format a loaded section (``settings_model``) selects."""
    return _fields_of(OutputSettings, section).format.value


def _fields_of(model: type[Fields], section: BaseModel) -> Fields:
    """The fields ``settings_model`` joined from ``model`` onto a loaded ``section``."""
    return model.model_validate({field: getattr(section, field) for field in model.model_fields})


class Surroundings(TypedDict):
    """What a sink is built with besides its own section: the pipeline's name
    (``BRIDGE_NAME``), its watched keyspace, and, optionally, the cluster's name, how values
    are embedded and whether instances are elected (``BRIDGE_CLUSTER``, ``BRIDGE_VALUES``,
    ``BRIDGE_HA__ENABLED``)."""

    pipeline: str
    keyspace: KeySpace
    cluster: NotRequired[str]
    values: NotRequired[ValuesMode]
    ha: NotRequired[bool]


def build_sink(name: str, section: BaseModel, **surroundings: Unpack[Surroundings]) -> Sink:
    """The sink registered as ``name``, built from its loaded ``section`` (``settings_model``)
    with the format the section selects: how the bridge builds every sink, and the tests too."""
    sink_class, context = _resolve(name, section, **surroundings)
    return sink_class.from_settings(section, context=context)


def build_reader(name: str, section: BaseModel, **surroundings: Unpack[Surroundings]) -> SinkReader:
    """The reader of what the sink registered as ``name`` holds with ``section``, decoding
    with the format the section selects; NoReaderError if it keeps nothing readable."""
    sink_class, context = _resolve(name, section, **surroundings)
    return sink_class.reader(section, context=context)


def _resolve(
    name: str,
    section: BaseModel,
    *,
    pipeline: str,
    keyspace: KeySpace,
    cluster: str = "etcd",
    values: ValuesMode = ValuesMode.BYTES,
    ha: bool = False,
) -> tuple[type[Sink], SinkContext]:
    """The sink class registered as ``name`` and the context it is built with."""
    sink_class = load(name)
    output = output_settings(name, sink_class, section)
    context = FormatContext(pipeline=pipeline, cluster=cluster, keyspace=keyspace, values=values)
    return sink_class, SinkContext(
        pipeline=pipeline,
        keyspace=keyspace,
        format=build_format(output, context=context),
        ha=ha,
    )
