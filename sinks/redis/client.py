"""The redis sink's client, for the sink and its readers alike: how it connects, where a
pipeline's checkpoint lives, how a Lua script is run, and one line for the operator when
Redis says no.

A script call is packed here, not by redis-py (``Arguments``, ``Script.run``): redis-py packs
each argument of a command through its serializer, an ``isinstance`` check and an encoding per
argument in Python and, with hiredis, a C call that converts them once more. A write script
takes about five arguments per event and a thousand events per call; that packing was a
quarter of the bridge's GIL time in a profiled replay into Redis, and the sink's own
instructions per event halve without it (BENCHMARKS.md, "Redis sink: packing its own
command"). The command is sent on a connection of redis-py's pool with its public
``send_packed_command`` and ``read_response``, so connecting, AUTH, TLS, timeouts, the
client's retry policy and the parsing of replies and errors stay redis-py's.

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
from bridge.events import Event, Op
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


_CRLF = b"\r\n"


def _bulk(value: bytes | str | int) -> bytes:
    """One argument as a RESP bulk string, its bytes those redis-py's ``Encoder`` sends: a
    str in UTF-8, an int in decimal, bytes as they are."""
    if isinstance(value, int):
        data = b"%d" % value
    elif isinstance(value, str):
        data = value.encode()
    else:
        data = value
    return b"$%d\r\n%s\r\n" % (len(data), data)


_SMALL = 1024
_NUMBERS = tuple(_bulk(number) for number in range(_SMALL))
"""Bulk strings of the indexes of a transaction's changes, formatted once."""
_OPS = {op: _bulk(op.value) for op in Op}


class Arguments:
    """A script call's arguments (ARGV), packed into RESP bulk strings as they are added;
    ``Script.run`` sends them as they are (the module docstring says why). Mutable and
    slotted: one is filled per script call, with ``change`` once per event."""

    __slots__ = ("_revision", "_revision_bulk", "count", "parts")

    def __init__(self, *values: bytes | str | int) -> None:
        self.parts: list[bytes] = [_bulk(value) for value in values]
        self.count = len(values)
        """How many arguments ``parts`` holds (a bulk string may take several parts)."""
        self._revision = -1
        self._revision_bulk = b""

    def add(self, *values: bytes | str | int) -> None:
        self.parts += map(_bulk, values)
        self.count += len(values)

    def change(self, event: Event, payload: bytes) -> None:
        """``event``'s revision, index, op and key, then ``payload`` (its record or its
        value), as the write scripts read an event's first fields. The revision, which the
        events of a transaction or a snapshot share, is formatted once for them all, and
        ``payload`` is not copied until the command is joined."""
        revision = event.revision
        if revision != self._revision:
            self._revision = revision
            self._revision_bulk = _bulk(revision)
        index = event.index
        key = event.key
        self.parts += (
            self._revision_bulk,
            _NUMBERS[index] if index < _SMALL else _bulk(index),
            _OPS[event.op],
            b"$%d\r\n%s\r\n$%d\r\n" % (len(key), key, len(payload)),
            payload,
            _CRLF,
        )
        self.count += 5


@dataclass(frozen=True, slots=True)
class Script:
    """A Lua source and its SHA1, run with EVALSHA (EVAL when the server does not have it)."""

    source: str
    sha: str

    @classmethod
    def of(cls, source: str) -> "Script":
        digest = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()
        return cls(source=source, sha=digest)

    def run(self, client: "redis.Redis", keys: Sequence[bytes | str], args: Arguments) -> Any:
        """The script's reply; redis-py's errors as it raises them (``translate`` reads
        them)."""
        try:
            return _execute(client, self.packed(keys, args, loaded=True))
        except redis.exceptions.NoScriptError:
            return _execute(client, self.packed(keys, args, loaded=False))

    def packed(self, keys: Sequence[bytes | str], args: Arguments, *, loaded: bool) -> bytes:
        """The call as Redis receives it: EVALSHA of the SHA1 when the server has the
        script (``loaded``), else EVAL of the source."""
        name, script = (b"EVALSHA", self.sha) if loaded else (b"EVAL", self.source)
        head = b"*%d\r\n$%d\r\n%s\r\n" % (3 + len(keys) + args.count, len(name), name)
        return b"".join([head, _bulk(script), _bulk(len(keys)), *map(_bulk, keys), *args.parts])


def _execute(client: "redis.Redis", command: bytes) -> Any:
    """Send a packed command on a connection of ``client``'s pool and read its reply, under
    the client's retry policy as redis-py's own commands are (the sink's has no retries: the
    pump owns retrying)."""
    pool = client.connection_pool
    connection = pool.get_connection()
    try:
        # The failure callback has nothing to do: ``_exchange`` disconnected already.
        return connection.retry.call_with_retry(
            lambda: _exchange(connection, command), lambda _error: None
        )
    finally:
        pool.release(connection)


def _exchange(connection: "redis.connection.AbstractConnection", command: bytes) -> Any:
    """``command``'s reply. An error reply was read whole and leaves the connection clean;
    anything else (a timeout, a lost connection, an interrupt) may leave a reply half-read
    or unread, so the connection is disconnected before it goes back to the pool, and
    reconnects on its next use instead of handing that reply to another command."""
    try:
        # A list of buffers: one bytes object would be sent as an iterable of ints.
        connection.send_packed_command([command])  # type: ignore[no-untyped-call]
        return connection.read_response()
    except redis.exceptions.ResponseError:
        raise
    except BaseException:
        connection.disconnect()  # type: ignore[no-untyped-call]
        raise


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
