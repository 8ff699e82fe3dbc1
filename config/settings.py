"""The root of the configuration: every ``BRIDGE_*`` variable of the core lands here.

Variables use the ``BRIDGE_`` prefix and ``__`` between a section and its field
(``BRIDGE_ETCD__ENDPOINTS``); a ``.env`` file in the working directory is read too, the
environment winning. The root keeps only what every pipeline shares; each sink declares its own
model, read from ``BRIDGE_<NAME>__*`` by ``load_section`` with the same rules. Both turn
pydantic's multi-line report into one line per problem that names the variable to fix, which is
what an operator reading a crash-looping container needs.
"""

import re
from typing import Any, TypeVar

from pydantic import (
    BaseModel,
    Field,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from config.errors import ConfigError
from config.etcd import EtcdSettings
from config.ha import HaSettings
from config.http import HttpSettings
from config.journal import JournalSettings
from config.logging import LogSettings
from config.output import ValuesMode
from config.pump import PumpSettings
from config.types import CommaList

ENV_PREFIX = "BRIDGE_"
NESTED_DELIMITER = "__"
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_SOURCES = SettingsConfigDict(
    env_prefix=ENV_PREFIX,
    env_nested_delimiter=NESTED_DELIMITER,
    env_file=".env",
    extra="ignore",
    validate_default=True,
)
"""Where variables come from, for the root and every section alike. ``extra="ignore"`` only
because pydantic-settings would otherwise refuse the other sections' variables in ``.env``;
unknown variables are refused by ``config.variables`` instead, with the nearest valid name."""

Section = TypeVar("Section", bound=BaseModel)


class Settings(BaseSettings):
    """What every pipeline shares; each sink's own settings are its ``settings_model``."""

    model_config = _SOURCES

    name: str = Field(
        default="default",
        description="The pipeline's name: it namespaces checkpoints, so two bridges with "
        "different names never share a position.",
    )
    sinks: CommaList = Field(
        default=["stdout"],
        description="Comma-separated names of installed sinks; `etcd-bridge settings` lists them.",
    )
    cluster: str = Field(
        default="etcd",
        description="A logical name of the etcd cluster, as Debezium's topic.prefix names a "
        "database server: the CloudEvents source and the Debezium source block carry it.",
    )
    values: ValuesMode = Field(
        default=ValuesMode.BYTES,
        description="How values are embedded in every sink's records: bytes (UTF-8 text, "
        "else base64) or json (a value that parses as JSON is embedded as JSON; one that does "
        "not is delivered as with bytes and marked); docs/formats.md.",
    )
    etcd: EtcdSettings = EtcdSettings()
    pump: PumpSettings = PumpSettings()
    http: HttpSettings = HttpSettings()
    ha: HaSettings = HaSettings()
    journal: JournalSettings = JournalSettings()
    log: LogSettings = LogSettings()

    @field_validator("name", "cluster")
    @classmethod
    def _name_is_a_token(cls, name: str) -> str:
        if not _NAME_PATTERN.match(name):
            raise ValueError("use letters, digits, '.', '_' or '-' (at most 100)")
        return name

    @field_validator("sinks")
    @classmethod
    def _sinks_are_unique(cls, sinks: list[str]) -> list[str]:
        if not sinks:
            raise ValueError("name at least one sink")
        if len(set(sinks)) != len(sinks):
            raise ValueError("a sink is named twice")
        return sinks

    @model_validator(mode="after")
    def _election_key_is_outside_the_prefix(self) -> "Settings":
        election_key = (self.ha.key_prefix + self.name).encode("utf-8")
        if self.ha.enabled and election_key in self.etcd.keyspace:
            raise ValueError(
                "BRIDGE_HA__KEY_PREFIX: the election key must be outside BRIDGE_ETCD__PREFIX, "
                "or every lease renewal would be streamed as a change"
            )
        return self


def variable_name(location: tuple[int | str, ...]) -> str:
    """The environment variable behind a pydantic error location, e.g. BRIDGE_ETCD__PREFIX."""
    fields = [str(part) for part in location if isinstance(part, str)]
    return ENV_PREFIX + NESTED_DELIMITER.join(fields).upper()


def load_settings(**overrides: Any) -> Settings:
    """Read the root settings; raise ConfigError with one line per problem, each naming its
    variable. ``overrides`` take precedence over the environment (tests, tools)."""
    try:
        return Settings(**overrides)
    except ValidationError as error:
        raise ConfigError(_one_line_per_problem(error)) from error


def load_section(name: str, model: type[Section], **overrides: Any) -> Section:
    """Read one sink's settings from ``BRIDGE_<NAME>__*`` into ``model``, with the root's rules
    and errors (a missing required field is ``BRIDGE_<NAME>__<FIELD>: Field required``)."""
    fields: dict[str, Any] = {name: (model, Field(default_factory=dict))}
    holder = create_model(f"{model.__name__}Variables", __base__=_SectionSource, **fields)
    try:
        loaded = holder(**({name: overrides} if overrides else {}))
    except ValidationError as error:
        raise ConfigError(_one_line_per_problem(error)) from error
    section: Section = getattr(loaded, name)
    return section


class _SectionSource(BaseSettings):
    """The base of the one-field model ``load_section`` reads a sink's section through."""

    model_config = _SOURCES


def _one_line_per_problem(error: ValidationError) -> str:
    lines = []
    for problem in error.errors():
        message = problem["msg"].removeprefix("Value error, ")
        if problem["loc"]:
            lines.append(f"{variable_name(problem['loc'])}: {message}")
        else:
            lines.append(message)
    return "\n".join(lines)
