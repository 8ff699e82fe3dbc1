"""The root of the configuration: every ``BRIDGE_*`` environment variable lands here.

Variables use the ``BRIDGE_`` prefix and ``__`` between a section and its field
(``BRIDGE_ETCD__ENDPOINTS``); a ``.env`` file in the working directory is read too, the
environment winning. ``load_settings`` turns pydantic's multi-line report into one line per
problem that names the variable to fix, which is what an operator reading a crash-looping
container needs.
"""

import re
from pathlib import Path

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bridge.errors import ConfigError
from config.etcd import EtcdSettings
from config.file import FileSettings
from config.ha import HaSettings
from config.http import HttpSettings
from config.kafka import KafkaSettings
from config.logging import LogSettings
from config.pump import PumpSettings
from config.redis import RedisSettings
from config.types import CommaList

ENV_PREFIX = "BRIDGE_"
NESTED_DELIMITER = "__"
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


class Settings(BaseSettings):
    """Everything the bridge is configured with."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=NESTED_DELIMITER,
        env_file=".env",
        extra="ignore",
        validate_default=True,
    )

    name: str = Field(
        default="default",
        description="The pipeline's name: it namespaces checkpoints, so two bridges with "
        "different names never share a position.",
    )
    sinks: CommaList = Field(
        default=["stdout"], description="Comma-separated sink names: stdout, file, kafka, redis."
    )
    checkpoint_dir: Path = Field(
        default=Path(".etcd-bridge"),
        description="Directory of the checkpoint files of sinks that cannot hold their own "
        "position (stdout).",
    )
    etcd: EtcdSettings = EtcdSettings()
    file: FileSettings = FileSettings()
    kafka: KafkaSettings = KafkaSettings()
    redis: RedisSettings = RedisSettings()
    pump: PumpSettings = PumpSettings()
    http: HttpSettings = HttpSettings()
    ha: HaSettings = HaSettings()
    log: LogSettings = LogSettings()

    @field_validator("name")
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

    @model_validator(mode="after")
    def _file_sink_has_a_path(self) -> "Settings":
        if "file" in self.sinks and self.file.path is None:
            raise ValueError("BRIDGE_FILE__PATH is required when BRIDGE_SINKS includes file")
        return self


def variable_name(location: tuple[int | str, ...]) -> str:
    """The environment variable behind a pydantic error location, e.g. BRIDGE_ETCD__PREFIX."""
    fields = [str(part) for part in location if isinstance(part, str)]
    return ENV_PREFIX + NESTED_DELIMITER.join(fields).upper()


def load_settings(**overrides: object) -> Settings:
    """Read the settings; raise ConfigError with one line per problem, each naming its variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as error:
        lines = []
        for problem in error.errors():
            message = problem["msg"].removeprefix("Value error, ")
            if problem["loc"]:
                lines.append(f"{variable_name(problem['loc'])}: {message}")
            else:
                lines.append(message)
        raise ConfigError("\n".join(lines)) from None
