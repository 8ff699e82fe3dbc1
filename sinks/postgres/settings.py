"""The ``postgres`` sink (``BRIDGE_POSTGRES__*``); see docs/postgres.md.

The DSN may carry a password (``postgresql://app:secret@db/etcd`` or ``password=secret``), so it
is a ``SecretStr`` and nothing here puts it in a message: libpq's own parse errors quote the
text around the mistake, which may be the password, so they are replaced by a sentence of ours;
``safe_dsn`` (user, hosts, ports, database, never the password) is what logs and errors show.
``password`` may also be given on its own (from a Kubernetes secret) and wins over the DSN's.

Table names are checked here, once, so that a name PostgreSQL would silently truncate (over 63
bytes) or that needs quoting stops the bridge at start naming the variable, not at the first
write.
"""

import enum
import re
from typing import Any

from psycopg import ProgrammingError
from psycopg.conninfo import conninfo_to_dict
from pydantic import (
    BaseModel,
    Field,
    FilePath,
    PositiveFloat,
    PositiveInt,
    SecretStr,
    field_validator,
    model_validator,
)

NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
"""A PostgreSQL name that needs no quotes, so that queries can write it as it is."""
MAX_NAME_BYTES = 63
"""NAMEDATALEN - 1: PostgreSQL truncates longer names (with a mere notice)."""
NAME_SUFFIXES = ("changelog", "changelog_key", "mirror", "staging", "positions")
"""What follows ``table_prefix`` in the names of the sink's tables and index (docs/postgres.md)."""


class PostgresMode(enum.StrEnum):
    """What the sink keeps in PostgreSQL."""

    CHANGELOG = "changelog"
    """One row per event, primary key (pipeline, revision, index): the prefix's history."""
    MIRROR = "mirror"
    """One row per key: the prefix's state at one revision, applied a revision at a time."""


class SslMode(enum.StrEnum):
    """libpq's ``sslmode``."""

    DISABLE = "disable"
    ALLOW = "allow"
    PREFER = "prefer"
    REQUIRE = "require"
    VERIFY_CA = "verify-ca"
    VERIFY_FULL = "verify-full"


class PostgresSettings(BaseModel):
    """Where and how the PostgreSQL sink writes."""

    dsn: SecretStr = Field(
        default=SecretStr("postgresql://postgres@127.0.0.1:5432/postgres"),
        description="libpq connection string: a postgresql:// URL or key=value pairs "
        "(host, port, dbname, user, password, any libpq parameter). Never logged.",
    )
    password: SecretStr | None = Field(
        default=None, description="Password; wins over the DSN's when set."
    )
    mode: PostgresMode = Field(default=PostgresMode.CHANGELOG, description="changelog or mirror.")
    schema_name: str = Field(
        default="public",
        description="Schema of the sink's tables; created if missing (needs CREATE on the "
        "database then).",
    )
    table_prefix: str = Field(
        default="etcd_bridge_",
        description="Prefix of the table names: <prefix>changelog, <prefix>mirror, "
        "<prefix>staging, <prefix>positions.",
    )
    sslmode: SslMode | None = Field(
        default=None,
        description="TLS: disable, allow, prefer, require, verify-ca or verify-full; wins "
        "over the DSN's. Unset: the DSN's, else libpq's default (prefer).",
    )
    ca_file: FilePath | None = Field(
        default=None, description="CA bundle to verify the server (libpq sslrootcert)."
    )
    cert_file: FilePath | None = Field(
        default=None, description="Client certificate for TLS client authentication (sslcert)."
    )
    key_file: FilePath | None = Field(
        default=None, description="Client private key for TLS client authentication (sslkey)."
    )
    connect_timeout: PositiveInt = Field(
        default=10, description="Longest wait to connect and log in, seconds."
    )
    timeout: PositiveFloat = Field(
        default=60.0,
        description="Longest wait for one reply of PostgreSQL (a statement, the commit, a "
        "lock), seconds; also the session's statement_timeout and "
        "idle_in_transaction_session_timeout. A server that does not answer in time is "
        "treated as unavailable.",
    )

    @field_validator("dsn")
    @classmethod
    def _dsn_parses(cls, dsn: SecretStr) -> SecretStr:
        # Messages here must not echo the DSN: it may hold a password.
        ports = str(parse(dsn).get("port") or "5432")
        if not all(port.isdigit() and 0 < int(port) < 65536 for port in ports.split(",")):
            raise ValueError("the port is not a number from 1 to 65535")
        return dsn

    @field_validator("schema_name", "table_prefix")
    @classmethod
    def _is_a_plain_name(cls, name: str) -> str:
        if not NAME.match(name):
            raise ValueError(
                "use lowercase letters, digits and '_', not starting with a digit (a "
                "PostgreSQL name that needs no quotes)"
            )
        return name

    @field_validator("table_prefix")
    @classmethod
    def _tables_fit(cls, prefix: str) -> str:
        longest = max(NAME_SUFFIXES, key=len)
        if len(prefix) + len(longest) > MAX_NAME_BYTES:
            raise ValueError(
                f"at most {MAX_NAME_BYTES - len(longest)} characters: PostgreSQL names hold "
                f"{MAX_NAME_BYTES} bytes and the longest name is <prefix>{longest}"
            )
        return prefix

    @field_validator("schema_name")
    @classmethod
    def _schema_fits(cls, name: str) -> str:
        if len(name) > MAX_NAME_BYTES:
            raise ValueError(f"at most {MAX_NAME_BYTES} characters (PostgreSQL's limit)")
        return name

    @model_validator(mode="after")
    def _tls_files_need_tls(self) -> "PostgresSettings":
        if self.effective_sslmode == SslMode.DISABLE.value:
            for name in ("ca_file", "cert_file", "key_file"):
                if getattr(self, name) is not None:
                    raise ValueError(
                        f"BRIDGE_POSTGRES__{name.upper()} needs TLS, but sslmode is disable"
                    )
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("set both BRIDGE_POSTGRES__CERT_FILE and BRIDGE_POSTGRES__KEY_FILE")
        return self

    @property
    def effective_sslmode(self) -> str | None:
        """The sslmode libpq will use, when it is known without libpq's environment."""
        if self.sslmode is not None:
            return self.sslmode.value
        mode = parse(self.dsn).get("sslmode")
        return None if mode is None else str(mode)

    @property
    def user(self) -> str:
        """The role the sink logs in as, as the DSN names it (libpq's default otherwise)."""
        return str(parse(self.dsn).get("user") or "(libpq default user)")

    @property
    def safe_dsn(self) -> str:
        """The DSN without its password or options: what logs and error messages show."""
        parts = parse(self.dsn)
        user = parts.get("user")
        host = parts.get("host") or parts.get("hostaddr") or "localhost"
        port = parts.get("port") or "5432"
        hosts = ",".join(
            f"{name}:{number}"
            for name, number in zip(
                str(host).split(","), _spread(str(port), len(str(host).split(","))), strict=True
            )
        )
        database = parts.get("dbname") or user or ""
        return f"postgresql://{f'{user}@' if user else ''}{hosts}/{database}"

    def connection_options(self, *, application_name: str) -> dict[str, Any]:
        """What ``psycopg.connect`` gets besides the DSN: these settings win over the DSN's."""
        options: dict[str, Any] = {
            "connect_timeout": self.connect_timeout,
            "application_name": parse(self.dsn).get("application_name") or application_name,
        }
        if self.password is not None:
            options["password"] = self.password.get_secret_value()
        if self.sslmode is not None:
            options["sslmode"] = self.sslmode.value
        files = {"sslrootcert": self.ca_file, "sslcert": self.cert_file, "sslkey": self.key_file}
        options.update({name: str(path) for name, path in files.items() if path is not None})
        return options

    def table(self, suffix: str) -> str:
        """The name of one of the sink's tables in its schema (see ``NAME_SUFFIXES``)."""
        return f"{self.table_prefix}{suffix}"


def parse(dsn: SecretStr) -> dict[str, Any]:
    """The DSN's parameters; ValueError without the DSN's text when it does not parse."""
    try:
        return conninfo_to_dict(dsn.get_secret_value())
    except ProgrammingError:
        raise ValueError(
            "not a valid libpq connection string (use postgresql://user@host:port/database "
            "or key=value pairs)"
        ) from None


def _spread(ports: str, hosts: int) -> list[str]:
    """libpq's rule: one port for every host, or one port per host."""
    listed = ports.split(",")
    if len(listed) == hosts:
        return listed
    return [listed[0]] * hosts
