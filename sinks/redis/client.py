"""The redis sink's client, for the sink and its readers alike: how it connects, where a
pipeline's checkpoint lives, how a Lua script is run, and one line for the operator when
Redis says no.

No message ever holds the URL's password: they show ``RedisSettings.safe_url``.
"""

import hashlib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis
import redis.exceptions
from redis.backoff import NoBackoff
from redis.retry import Retry

from bridge.errors import SinkError, SinkRejectedError, SinkUnavailableError
from sinks.redis.settings import RedisMode, RedisSettings

log = logging.getLogger(__name__)

_SCRIPT_LOCATION = re.compile(r"\s*script: [0-9a-f]{40}, on @user_script:\d+\.?\s*$")
_TRANSIENT_REPLIES = ("OOM", "MISCONF", "LOADING", "BUSY", "MASTERDOWN", "TRYAGAIN", "NOREPLICAS")
_TRANSIENT_ERRORS = (
    redis.exceptions.OutOfMemoryError,
    redis.exceptions.TryAgainError,
    redis.exceptions.MasterDownError,
)
"""Replies redis-py turns into classes of their own, dropping the code from the message."""
_TOO_OLD_REPLIES = ("Error compiling script", "unknown command", "Unknown Redis command")


@dataclass(frozen=True, slots=True)
class Script:
    """A Lua source and its SHA1, run with EVALSHA (EVAL when the server does not have it)."""

    source: str
    sha: str

    @classmethod
    def of(cls, source: str) -> "Script":
        digest = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()
        return cls(source=source, sha=digest)

    def run(
        self, client: "redis.Redis", keys: Sequence[bytes | str], args: Sequence[bytes | str | int]
    ) -> Any:
        """The script's reply; redis-py's errors as it raises them."""
        try:
            return client.evalsha(self.sha, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:
            return client.eval(self.source, len(keys), *keys, *args)


def as_bytes(reply: object) -> bytes:
    """A reply of a client built with ``decode_responses=False``: always bytes."""
    if isinstance(reply, bytes):
        return reply
    raise SinkRejectedError(f"redis: unexpected reply {type(reply).__name__}, expected bytes")


def checkpoint_key(own: RedisSettings, *, pipeline: str) -> str:
    """The checkpoint hash of a pipeline: set, or derived from the pipeline name and target."""
    if own.checkpoint_key:
        return own.checkpoint_key
    return f"etcd-bridge:{pipeline}:{own.mode.value}:{destination_of(own)}"


def destination_of(own: RedisSettings) -> str:
    """What the mode writes: the stream's name (or routing template), the channel, or the
    mirror hash."""
    return {
        RedisMode.STREAM: own.stream,
        RedisMode.PUBSUB: own.channel,
        RedisMode.MIRROR: own.mirror_key,
    }[own.mode]


def connect(own: RedisSettings) -> "redis.Redis":
    """A client as the sink and its reader use it: bytes in and out, no retries of its own
    (the pump, or whoever reads, owns retrying)."""
    options: dict[str, Any] = {
        "socket_timeout": own.timeout,
        "socket_connect_timeout": own.timeout,
        "retry": Retry(NoBackoff(), 0),  # the pump owns retrying, with its backoff
        "decode_responses": False,
    }
    if own.username is not None:
        options["username"] = own.username
    if own.password is not None:
        options["password"] = own.password.get_secret_value()
    if own.scheme == "rediss":
        options["ssl_ca_certs"] = None if own.ca_file is None else str(own.ca_file)
        options["ssl_certfile"] = None if own.cert_file is None else str(own.cert_file)
        options["ssl_keyfile"] = None if own.key_file is None else str(own.key_file)
    try:
        return redis.Redis.from_url(own.url.get_secret_value(), **options)
    except ValueError:
        # redis-py's parse errors may quote the URL, so they are not passed on.
        raise SinkRejectedError(
            f"redis: BRIDGE_REDIS__URL ({own.safe_url}) is not a valid Redis URL"
        ) from None


def refuse_eviction(client: "redis.Redis", *, settings: RedisSettings) -> None:
    """SinkRejectedError when Redis may evict any key under memory pressure (``allkeys-*``),
    the stream and checkpoint included, unless ``BRIDGE_REDIS__ACCEPT_EVICTION`` says to go
    on. ``noeviction`` makes a full Redis refuse writes (OOM: retried until memory is freed)
    and ``volatile-*`` evicts only keys with a TTL, which the sink never sets. A user that may
    not run ``CONFIG GET`` (managed services, a minimal ACL) gets a warning instead."""
    where = f"redis at {settings.safe_url}"
    try:
        reply = client.config_get("maxmemory-policy")
    except redis.exceptions.ResponseError as error:  # NOPERM, or CONFIG renamed away
        log.warning(
            "redis: cannot read maxmemory-policy; make sure it is noeviction or volatile-*",
            extra={"url": settings.safe_url, "detail": str(error)},
        )
        return
    # redis-py decodes CONFIG GET's reply or not, depending on its version and protocol
    found = {_text(name): _text(value) for name, value in dict(reply).items()}
    policy = found.get("maxmemory-policy", "")
    if not policy.startswith("allkeys-"):
        return
    if settings.accept_eviction:
        log.warning(
            "redis may evict the sink's keys (BRIDGE_REDIS__ACCEPT_EVICTION is set)",
            extra={"url": settings.safe_url, "policy": policy},
        )
        return
    raise SinkRejectedError(
        f"{where} has maxmemory-policy {policy}, which may evict the stream or the checkpoint "
        "when memory runs out; set it to noeviction (CONFIG SET maxmemory-policy noeviction), "
        "or set BRIDGE_REDIS__ACCEPT_EVICTION=true to accept losing data"
    )


def owned_by(error: redis.exceptions.RedisError) -> bytes | None:
    """The claim a write script found on the destination's owner key (its ``OWNED`` error,
    ``sinks.redis.lua``), or None for any other error."""
    if not isinstance(error, redis.exceptions.ResponseError):
        return None
    detail = _SCRIPT_LOCATION.sub("", str(error)).strip()
    if not detail.startswith("OWNED "):
        return None
    return detail.removeprefix("OWNED ").encode()


def translate(
    error: redis.exceptions.RedisError, *, settings: RedisSettings, names: list[str], doing: str
) -> SinkError:
    """One line for the operator, naming the setting to check; retryable or not. Never holds
    the password. ``names``: the keys (and channel) in use, for an ACL refusal."""
    own = settings
    detail = _SCRIPT_LOCATION.sub("", str(error)).strip().rstrip(".")
    where = f"redis at {own.safe_url}"
    if isinstance(error, redis.exceptions.AuthenticationError):
        return SinkRejectedError(
            f"{where}: authentication as user {own.user!r} failed ({detail}); check the "
            "user and password of BRIDGE_REDIS__URL (or BRIDGE_REDIS__USERNAME/PASSWORD)"
        )
    if isinstance(error, redis.exceptions.NoPermissionError):
        if "one of the" in detail:  # Redis does not say which key or channel
            detail += f" (the sink uses {', '.join(names)})"
        return SinkRejectedError(
            f"{where}: ACL user {own.user!r} lacks a permission {doing}: {detail}; grant it "
            f"(ACL SETUSER {own.user} ...) or use another user in BRIDGE_REDIS__URL"
        )
    if isinstance(error, redis.exceptions.ReadOnlyError):
        return SinkUnavailableError(f"{where} is a read-only replica ({detail}), {doing}")
    if "certificate verify failed" in detail:
        return SinkRejectedError(
            f"{where}: the server's TLS certificate is not trusted ({detail}); set "
            "BRIDGE_REDIS__CA_FILE to the CA that signed it"
        )
    if isinstance(error, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError):
        return SinkUnavailableError(
            f"{where} is unreachable ({detail}), {doing}; check BRIDGE_REDIS__URL"
        )
    if isinstance(error, _TRANSIENT_ERRORS):
        return SinkUnavailableError(f"{where} refused a write for now ({detail}), {doing}")
    if isinstance(error, redis.exceptions.ResponseError):
        if detail.startswith("LOST"):
            return SinkUnavailableError(
                f"{where} lost data the sink had written ({detail.removeprefix('LOST ')}: "
                f"restarted empty, flushed, or keys deleted), {doing}; reopening"
            )
        if detail.startswith(_TRANSIENT_REPLIES):
            return SinkUnavailableError(f"{where} refused a write for now ({detail}), {doing}")
        if detail.startswith(_TOO_OLD_REPLIES) or "#!" in detail:
            return SinkRejectedError(
                f"{where} cannot run the sink's Lua scripts ({detail}); the redis sink "
                "needs Redis 7.0 or later"
            )
        if detail.startswith("WRONGTYPE"):
            return SinkRejectedError(
                f"{where}: a key of the wrong type is in the way {doing} ({detail}); "
                f"choose another {_setting_of(own.mode)} or remove that key"
            )
    return SinkRejectedError(f"{where}: {detail}, {doing}")


def _text(reply: object) -> str:
    return reply.decode() if isinstance(reply, bytes) else str(reply)


def _setting_of(mode: RedisMode) -> str:
    return {
        RedisMode.STREAM: "BRIDGE_REDIS__STREAM",
        RedisMode.PUBSUB: "BRIDGE_REDIS__CHECKPOINT_KEY",
        RedisMode.MIRROR: "BRIDGE_REDIS__MIRROR_KEY",
    }[mode]
