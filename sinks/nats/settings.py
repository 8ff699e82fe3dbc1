"""The ``nats`` sink (``BRIDGE_NATS__*``); docs/nats.md explains every field.

Secrets (``password``, ``token``) are ``SecretStr`` and the files holding them (NKey seed,
``.creds``) are paths the client reads itself, so nothing the bridge prints holds a secret. For
the same reason a server URL may not carry ``user:password@``: credentials have fields of their
own, and the URLs are then safe to show in every message. Validation messages never echo a
value.

``subject`` is a subject or a routing template (``bridge.keytemplate``); it is parsed and
checked here (``sinks.nats.subjects.check_template``), so that a bad one stops the bridge at
start naming ``BRIDGE_NATS__SUBJECT``. ``stream_subjects`` defaults to the filter the template
implies (``etcd.{1}`` -> ``etcd.*``) and, when set, must capture it.
"""

from typing import Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    Field,
    FilePath,
    NonNegativeFloat,
    PositiveFloat,
    SecretStr,
    field_validator,
    model_validator,
)

from bridge.keytemplate import KeyTemplate
from config.types import CommaList
from sinks.nats.subjects import check_template, covers, stream_filter

_SCHEMES = ("nats", "tls", "ws", "wss")
_TLS_SCHEMES = ("tls", "wss")
_STREAM_NAME = r"^[A-Za-z0-9_-]{1,255}$"


class NatsSettings(BaseModel):
    """Where and how the NATS sink publishes; see docs/nats.md."""

    servers: CommaList = Field(
        default=["nats://127.0.0.1:4222"],
        description="Comma-separated nats://, tls:// (TLS), ws:// or wss:// URLs of the NATS "
        "servers, without credentials (use the fields below).",
    )
    user: str | None = Field(default=None, description="User name (with PASSWORD).")
    password: SecretStr | None = Field(default=None, description="Password of USER. Never logged.")
    token: SecretStr | None = Field(default=None, description="Authentication token. Never logged.")
    nkey_seed_file: FilePath | None = Field(
        default=None, description="File holding an NKey seed (SU...) to authenticate with."
    )
    credentials_file: FilePath | None = Field(
        default=None, description="A .creds file (user JWT and NKey seed), as nsc writes it."
    )
    ca_file: FilePath | None = Field(
        default=None, description="CA bundle to verify the servers (enables TLS)."
    )
    cert_file: FilePath | None = Field(
        default=None, description="Client certificate for mutual TLS (with KEY_FILE)."
    )
    key_file: FilePath | None = Field(
        default=None, description="Client private key for mutual TLS."
    )
    subject: str = Field(
        default="etcd-bridge",
        description="Subject of every event, or a routing template whose {1}..{9} are the "
        "'/'-separated segments of the key below the watched prefix (etcd.{1}.{2}).",
    )
    stream: str = Field(
        default="etcd-bridge",
        pattern=_STREAM_NAME,
        description="JetStream stream the events are stored in; one per pipeline (BRIDGE_NAME).",
    )
    stream_subjects: CommaList | None = Field(
        default=None,
        description="Subjects of a stream the bridge creates; unset: the filter SUBJECT "
        "implies (etcd.{1} -> etcd.*).",
    )
    create_stream: bool = Field(
        default=True,
        description="Create the stream when it is missing; when false a missing stream stops "
        "the bridge with its name.",
    )
    storage: Literal["file", "memory"] = Field(
        default="file", description="Storage of a stream the bridge creates: file or memory."
    )
    replicas: int = Field(
        default=1, ge=1, le=5, description="Replicas of a stream the bridge creates (1 to 5)."
    )
    max_age: NonNegativeFloat = Field(
        default=0.0,
        description="Seconds a stream the bridge creates keeps each message; 0 keeps them "
        "for ever.",
    )
    duplicate_window: PositiveFloat = Field(
        default=120.0,
        description="Seconds a stream the bridge creates remembers Nats-Msg-Id values.",
    )
    timeout: PositiveFloat = Field(
        default=10.0,
        description="Deadline of connecting and of one JetStream API request, seconds.",
    )
    flush_timeout: PositiveFloat = Field(
        default=30.0,
        description="Seconds a flush waits for the acknowledgements of its messages before "
        "reporting the server unavailable (the batch is then rewritten after a reopen).",
    )

    @field_validator("servers")
    @classmethod
    def _servers_are_urls(cls, servers: list[str]) -> list[str]:
        # Messages here must not echo a URL: it could hold a password.
        if not servers:
            raise ValueError("name at least one server")
        urls = []
        for number, server in enumerate(servers, 1):
            url = server if "://" in server else f"nats://{server}"
            parts = urlsplit(url)
            if parts.scheme not in _SCHEMES:
                raise ValueError(f"server {number}: use a nats://, tls://, ws:// or wss:// URL")
            if parts.username is not None or parts.password is not None:
                raise ValueError(
                    f"server {number} holds credentials: set BRIDGE_NATS__USER and "
                    "BRIDGE_NATS__PASSWORD (or TOKEN, NKEY_SEED_FILE, CREDENTIALS_FILE) instead"
                )
            if not parts.hostname:
                raise ValueError(f"server {number} has no host")
            try:
                parts.port  # noqa: B018 - parsing the port validates it
            except ValueError:
                raise ValueError(
                    f"server {number}: the port is not a number from 0 to 65535"
                ) from None
            urls.append(url)
        return urls

    @field_validator("subject")
    @classmethod
    def _subject_template(cls, subject: str) -> str:
        check_template(KeyTemplate.parse(subject))
        return subject

    @model_validator(mode="after")
    def _consistent(self) -> "NatsSettings":
        if (self.user is None) != (self.password is None):
            raise ValueError("set both BRIDGE_NATS__USER and BRIDGE_NATS__PASSWORD")
        methods = [
            name
            for name, value in (
                ("USER/PASSWORD", self.user),
                ("TOKEN", self.token),
                ("NKEY_SEED_FILE", self.nkey_seed_file),
                ("CREDENTIALS_FILE", self.credentials_file),
            )
            if value is not None
        ]
        if len(methods) > 1:
            raise ValueError(
                "authenticate one way: BRIDGE_NATS__"
                + " and BRIDGE_NATS__".join(methods)
                + " are both set"
            )
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("set both BRIDGE_NATS__CERT_FILE and BRIDGE_NATS__KEY_FILE")
        if self.stream_subjects is not None:
            wanted = self.subject_filter
            if not any(covers(subject, wanted) for subject in self.stream_subjects):
                raise ValueError(
                    f"BRIDGE_NATS__STREAM_SUBJECTS must capture {wanted!r}, every subject "
                    "BRIDGE_NATS__SUBJECT gives"
                )
        return self

    @property
    def template(self) -> KeyTemplate:
        return KeyTemplate.parse(self.subject)

    @property
    def subject_filter(self) -> str:
        """The filter capturing every subject of the template (``etcd.*.*``)."""
        return stream_filter(self.template)

    @property
    def tls(self) -> bool:
        """Whether connections use TLS: a tls:// or wss:// server, or a TLS file."""
        return (
            self.ca_file is not None
            or self.cert_file is not None
            or any(urlsplit(server).scheme in _TLS_SCHEMES for server in self.servers)
        )

    @property
    def authentication(self) -> str:
        """How the sink authenticates, for messages: the setting(s) to check."""
        if self.user is not None:
            return f"user {self.user!r} (BRIDGE_NATS__USER/PASSWORD)"
        if self.token is not None:
            return "BRIDGE_NATS__TOKEN"
        if self.nkey_seed_file is not None:
            return f"the NKey seed in {self.nkey_seed_file} (BRIDGE_NATS__NKEY_SEED_FILE)"
        if self.credentials_file is not None:
            return f"the credentials in {self.credentials_file} (BRIDGE_NATS__CREDENTIALS_FILE)"
        return (
            "no credentials (set BRIDGE_NATS__USER/PASSWORD, TOKEN, NKEY_SEED_FILE or "
            "CREDENTIALS_FILE)"
        )
