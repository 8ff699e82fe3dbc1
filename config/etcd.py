"""How to reach etcd and what to read from it (``BRIDGE_ETCD__*``)."""

import functools
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, FilePath, PositiveFloat, SecretStr, field_validator

from config.keyspace import KeySpace
from config.types import CommaList

_MIN_WATCH_RESPONSE_BYTES = 4 * 1024 * 1024
"""Above etcd's default fragment size (--max-request-bytes, 1.5 MiB, plus framing) and any
one change under it (a value and its previous value)."""


class EtcdSettings(BaseModel):
    """Endpoints, the watched prefixes, credentials and timing of the etcd side."""

    endpoints: CommaList = Field(
        default=["http://127.0.0.1:2379"],
        description="Comma-separated client URLs (http:// or https://); the bridge fails over "
        "between them.",
    )
    prefix: CommaList = Field(
        default=[],
        description="The watched key prefix (UTF-8), or several, comma-separated; they are "
        "streamed as one, in revision order. Empty means the whole keyspace.",
    )
    include: CommaList = Field(
        default=[],
        description="Comma-separated shell-style patterns on the key below its prefix (* any "
        "characters, / included; ? one byte; [...] a set): only matching keys are streamed. "
        "Empty: every key. Changing filters for an existing destination is like changing the "
        "prefix: give it a new one.",
    )
    exclude: CommaList = Field(
        default=[],
        description="Comma-separated patterns, as for include: matching keys are not streamed.",
    )
    timeout: PositiveFloat = Field(
        default=10.0, description="Deadline of one unary request (range, status), seconds."
    )
    stall_timeout: PositiveFloat = Field(
        default=15.0,
        description="A watch stream silent this long (no event, no progress answer) is "
        "considered stalled and reopened, seconds. Progress is requested after a third of it.",
    )
    snapshot_page_bytes: int = Field(
        default=4 * 1024 * 1024,
        ge=64 * 1024,
        description="Target size of one snapshot page, bytes; the key count per page adapts "
        "to the values' size.",
    )
    watch_response_bytes: int = Field(
        default=32 * 1024 * 1024,
        ge=8 * 1024 * 1024,
        description="Largest watch response taken whole, bytes, shared by the pipelines "
        "(each gets an equal part, at least 4 MiB); a larger one (a huge revision, a replay of "
        "large values) is read again in fragments, which etcd >= 3.4 cuts at its "
        "--max-request-bytes.",
    )
    ca_file: FilePath | None = Field(default=None, description="CA bundle for https endpoints.")
    cert_file: FilePath | None = Field(default=None, description="Client certificate (mTLS).")
    key_file: FilePath | None = Field(default=None, description="Client private key (mTLS).")
    user: str | None = Field(default=None, description="etcd user name (auth enabled).")
    password: SecretStr | None = Field(default=None, description="etcd password.")

    @field_validator("endpoints")
    @classmethod
    def _endpoints_are_urls(cls, endpoints: list[str]) -> list[str]:
        if not endpoints:
            raise ValueError("at least one endpoint is required")
        for endpoint in endpoints:
            parts = urlsplit(endpoint)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"{endpoint!r} is not an http(s)://host:port URL")
            try:
                parts.port  # noqa: B018 - parsing the port validates it
            except ValueError as error:
                raise ValueError(f"{endpoint!r}: {error}") from error
        return endpoints

    def watch_response_bytes_per_pipeline(self, pipelines: int) -> int:
        """Each pipeline's part of ``watch_response_bytes``: a response held whole costs about
        four times its size in memory while it is parsed and handed on, in every pipeline."""
        return max(_MIN_WATCH_RESPONSE_BYTES, self.watch_response_bytes // max(1, pipelines))

    @functools.cached_property
    def keyspace(self) -> KeySpace:
        """Built once: with key filters it compiles their patterns, and etcd's current
        revision is asked for through it."""
        return KeySpace.of(
            (prefix.encode("utf-8") for prefix in self.prefix),
            include=self.include,
            exclude=self.exclude,
        )

    @property
    def tls_files(self) -> tuple[Path | None, Path | None, Path | None]:
        return self.ca_file, self.cert_file, self.key_file
