"""The ``redis`` sink (``BRIDGE_REDIS__*``); see docs/redis.md.

The URL may carry a password (``redis://user:secret@host:6379/0``), so it is a ``SecretStr``
and nothing here ever puts it in a message: validation errors describe the problem without
echoing the value, and ``safe_url`` (scheme, user, host, port, database, never the password) is
what logs and errors show. ``username``/``password`` may also be given separately (a password
from a Kubernetes secret), and win over the URL's.

``stream`` is either a stream name or a routing template such as ``etcd:{1}``
(``bridge.keytemplate``, the one template language of every sink); it is parsed here so that a
malformed one fails at start, naming ``BRIDGE_REDIS__STREAM``.
"""

import enum
from urllib.parse import unquote, urlsplit

from pydantic import (
    BaseModel,
    Field,
    FilePath,
    PositiveFloat,
    SecretStr,
    field_validator,
    model_validator,
)

from bridge.keytemplate import KeyTemplate

_SCHEMES = ("redis", "rediss", "unix")


class RedisMode(enum.StrEnum):
    """How events land in Redis."""

    STREAM = "stream"
    """One stream entry per event, id ``<revision>-<index>``: exactly once, replayable."""
    PUBSUB = "pubsub"
    """PUBLISH of the event JSON: at-most-once for subscribers that are not connected."""
    MIRROR = "mirror"
    """A hash equal to the etcd prefix: PUT sets a field, DELETE removes it."""


class RedisSettings(BaseModel):
    """Where and how the Redis sink writes."""

    url: SecretStr = Field(
        default=SecretStr("redis://127.0.0.1:6379/0"),
        description="redis://, rediss:// (TLS) or unix:// URL, optionally with user:password "
        "(ACL) and /database. Never logged.",
    )
    username: str | None = Field(
        default=None, description="ACL user; overrides the URL's user when set."
    )
    password: SecretStr | None = Field(
        default=None, description="Password; overrides the URL's password when set."
    )
    mode: RedisMode = Field(default=RedisMode.STREAM, description="stream, pubsub or mirror.")
    stream: str = Field(
        default="etcd-bridge",
        description="Stream mode: the stream name, or a routing template whose {1}..{9} are "
        "the '/'-separated segments of the key after the watched prefix (etcd:{1}).",
    )
    maxlen: int | None = Field(
        default=None,
        ge=1,
        description="Stream mode: trim each stream to about this many entries (XADD MAXLEN ~); "
        "unset keeps everything. The newest entry, which holds the position, is never trimmed.",
    )
    channel: str = Field(default="etcd-bridge", description="Pubsub mode: the channel.")
    mirror_key: str = Field(
        default="etcd-bridge:mirror",
        description="Mirror mode: the hash mirroring the prefix (field = etcd key, value = "
        "etcd value); '<mirror_key>:rev' holds each field's mod_revision.",
    )
    checkpoint_key: str | None = Field(
        default=None,
        description="Hash holding the position where it is not read back from the stream "
        "(routed streams, pubsub, mirror). Default: etcd-bridge:<name>:<mode>:<target>.",
    )
    batch_size: int = Field(
        default=1000,
        ge=1,
        description="Most events per Lua script call (soft: the changes of one etcd revision "
        "are never split).",
    )
    accept_eviction: bool = Field(
        default=False,
        description="Write to a Redis whose maxmemory-policy is allkeys-*, which may evict the "
        "stream or the checkpoint under memory pressure (the loss is found when the sink is "
        "reopened, and answered with a snapshot, reason lost). Off: such a Redis is refused.",
    )
    timeout: PositiveFloat = Field(
        default=10.0, description="Connect and reply timeout of one Redis call, seconds."
    )
    ca_file: FilePath | None = Field(default=None, description="CA bundle (rediss:// only).")
    cert_file: FilePath | None = Field(
        default=None, description="Client certificate for mutual TLS (rediss:// only)."
    )
    key_file: FilePath | None = Field(
        default=None, description="Client private key for mutual TLS (rediss:// only)."
    )

    @field_validator("url")
    @classmethod
    def _url_is_redis(cls, url: SecretStr) -> SecretStr:
        # Messages here must not echo the URL: it may hold a password.
        parts = urlsplit(url.get_secret_value())
        if parts.scheme not in _SCHEMES:
            raise ValueError("use a redis://, rediss:// or unix:// URL")
        if parts.scheme != "unix" and not parts.hostname:
            raise ValueError("the URL has no host")
        try:
            parts.port  # noqa: B018 - parsing the port validates it
        except ValueError:
            raise ValueError("the URL's port is not a number from 0 to 65535") from None
        return url

    @field_validator("stream")
    @classmethod
    def _stream_parses(cls, stream: str) -> str:
        KeyTemplate.parse(stream)
        return stream

    @model_validator(mode="after")
    def _tls_needs_rediss(self) -> "RedisSettings":
        if self.scheme != "rediss":
            for name in ("ca_file", "cert_file", "key_file"):
                if getattr(self, name) is not None:
                    raise ValueError(
                        f"BRIDGE_REDIS__{name.upper()} needs a rediss:// BRIDGE_REDIS__URL"
                    )
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("set both BRIDGE_REDIS__CERT_FILE and BRIDGE_REDIS__KEY_FILE")
        return self

    @property
    def scheme(self) -> str:
        return urlsplit(self.url.get_secret_value()).scheme

    @property
    def user(self) -> str:
        """The ACL user the bridge authenticates as (``default`` when none is named)."""
        if self.username:
            return self.username
        url_user = urlsplit(self.url.get_secret_value()).username
        return unquote(url_user) if url_user else "default"

    @property
    def safe_url(self) -> str:
        """The URL without its password: what logs and error messages show."""
        parts = urlsplit(self.url.get_secret_value())
        if parts.scheme == "unix":
            return f"unix://{parts.path}"
        user = f"{self.user}@" if self.user != "default" else ""
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        port = parts.port or 6379
        database = parts.path.lstrip("/") or "0"
        return f"{parts.scheme}://{user}{host}:{port}/{database}"

    @property
    def template(self) -> KeyTemplate:
        return KeyTemplate.parse(self.stream)
