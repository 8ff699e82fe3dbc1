"""Connecting to NATS, finding or creating the stream, reading its last message back, and what
every nats-py failure means to the pump.

This module and ``sinks.nats.publisher`` are the only ones that import nats-py; their
coroutines run on the sink's loop thread (``sinks.nats.loop``). The client never reconnects on
its own (``allow_reconnect=False``): a lost connection fails the flush, the pump reopens the
sink with its backoff, and the reopen reads the durable tail anew, which is what keeps a
reconnect from replaying stale buffered publishes behind the sink's back.

``translate`` is the one place a nats-py exception becomes a ``SinkError``, for the sink and its
reader alike (``sinks.nats.reader``): unreachable servers, timeouts (the client's, or the loop
thread's deadline) and a JetStream without a leader are ``SinkUnavailableError``; wrong
credentials, a missing permission, TLS that cannot be verified, a refused stream
configuration are ``SinkRejectedError``, each one line naming the setting to fix. Callbacks
from the client only record what they saw (``Connection.errors``); the owning code raises.
"""

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import StorageType, StreamConfig, StreamInfo

from bridge.errors import SinkError, SinkRejectedError, SinkUnavailableError
from bridge.events import Event
from sinks.nats.loop import LoopThread, LoopTimeoutError
from sinks.nats.messages import read_tail
from sinks.nats.settings import NatsSettings
from sinks.nats.subjects import covers

log = logging.getLogger(__name__)

JETSTREAM_DISABLED = frozenset({10039, 10076})
"""err_code of "JetStream not enabled" (for the server, for the account)."""
SUBJECTS_OVERLAP = 10065
STREAM_NAME_IN_USE = 10058
"""A stream of that name exists with another configuration (a twin created it first)."""
REPLICAS_UNSUPPORTED = frozenset({10074, 10023})
"""More replicas than the cluster has servers, or replicas without a cluster."""
_CLOSE_SECONDS = 1.0
"""How long a client whose connect failed may take to close."""
_GRACE_SECONDS = 5.0
"""Added to a coroutine's own deadline before the loop thread gives up waiting for it."""


@dataclass
class Connection:
    """A connected client and what its callbacks recorded."""

    client: Client
    js: JetStreamContext
    errors: list[Exception] = field(default_factory=list)
    """Asynchronous errors the server sent (a permission violation) or the client saw."""
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when the connection is gone; publishes still awaiting an ack will not get one."""
    denied: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when the server reported a permission violation: it dropped a publish (which will
    never be acknowledged) or refused a subscription."""

    def permission_error(self) -> Exception | None:
        return next((error for error in self.errors if _is_permission(error)), None)

    async def close(self) -> None:
        await self.client.close()


@dataclass(frozen=True)
class StreamTail:
    """What ``open`` learns of the stream: its last sequence and the event it holds."""

    sequence: int
    event: Event | None
    max_message_bytes: int
    """The most a message may hold: the server's max_payload, or the stream's limit if lower."""


def tls_context(settings: NatsSettings) -> ssl.SSLContext:
    context = ssl.create_default_context(
        cafile=None if settings.ca_file is None else str(settings.ca_file)
    )
    if settings.cert_file is not None and settings.key_file is not None:
        context.load_cert_chain(str(settings.cert_file), str(settings.key_file))
    return context


def connect_options(settings: NatsSettings, *, pipeline: str) -> dict[str, Any]:
    """nats-py's ``connect`` arguments: credentials revealed here only, for the client."""
    options: dict[str, Any] = {
        "servers": settings.servers,
        "name": f"etcd-bridge {pipeline}",
        "connect_timeout": settings.timeout,
        "allow_reconnect": False,
        # Each server twice at most, then NoServersError (0 would mean "for ever").
        "max_reconnect_attempts": 1,
        "reconnect_time_wait": 0.1,
    }
    if settings.user is not None and settings.password is not None:
        options["user"] = settings.user
        options["password"] = settings.password.get_secret_value()
    if settings.token is not None:
        options["token"] = settings.token.get_secret_value()
    if settings.nkey_seed_file is not None:
        options["nkeys_seed"] = str(settings.nkey_seed_file)
    if settings.credentials_file is not None:
        options["user_credentials"] = str(settings.credentials_file)
    if settings.tls:
        options["tls"] = tls_context(settings)
    return options


async def connect(settings: NatsSettings, *, pipeline: str) -> Connection:
    """Connect within ``settings.timeout``; raise the client's error (``translate`` it)."""
    errors: list[Exception] = []
    closed = asyncio.Event()
    denied = asyncio.Event()

    async def on_error(error: Exception) -> None:
        errors.append(error)
        if _is_permission(error):
            denied.set()

    async def on_closed() -> None:
        closed.set()

    client = Client()
    try:
        await asyncio.wait_for(
            client.connect(
                error_cb=on_error,
                disconnected_cb=on_closed,
                closed_cb=on_closed,
                **connect_options(settings, pipeline=pipeline),
            ),
            settings.timeout,
        )
    except BaseException as error:
        # Bounded: after a failed TLS handshake nats-py's close waits for ever for the
        # transport to close (nats-py 2.16); the loop thread's stop cancels what is left.
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(client.close(), _CLOSE_SECONDS)
        if _wants_a_client_certificate(client, settings):
            raise SinkRejectedError(
                f"nats at {', '.join(settings.servers)} requires a client certificate "
                "(tls_verify) and closed the TLS handshake: set BRIDGE_NATS__CERT_FILE and "
                "BRIDGE_NATS__KEY_FILE"
            ) from error
        if isinstance(error, nats.errors.NoServersError | asyncio.TimeoutError) and errors:
            raise errors[-1] from error  # what the last attempt met says more
        raise
    return Connection(
        client=client,
        js=client.jetstream(timeout=settings.timeout),
        errors=errors,
        closed=closed,
        denied=denied,
    )


async def open_stream(connection: Connection, *, settings: NatsSettings) -> StreamInfo:
    """The stream's info: found, or created when missing (if ``create_stream``); refuse a
    stream whose subjects do not capture the template's."""
    js = connection.js
    try:
        info = await js.stream_info(settings.stream)
    except nats.js.errors.NotFoundError:
        if not settings.create_stream:
            raise SinkRejectedError(
                f"nats: stream {settings.stream!r} does not exist and BRIDGE_NATS__CREATE_STREAM "
                "is false; create it or set BRIDGE_NATS__STREAM to an existing one"
            ) from None
        info = await _create_stream(js, settings=settings)
    check_subjects(info, settings=settings)
    return info


def check_subjects(info: StreamInfo, *, settings: NatsSettings) -> None:
    """Refuse a stream whose subjects do not capture every subject of the template."""
    wanted = settings.subject_filter
    subjects = info.config.subjects or []
    if not any(covers(subject, wanted) for subject in subjects):
        raise SinkRejectedError(
            f"nats: stream {settings.stream!r} captures {', '.join(subjects) or 'no subjects'}, "
            f"not {wanted!r}; add it to the stream's subjects, or choose another "
            "BRIDGE_NATS__STREAM or BRIDGE_NATS__SUBJECT"
        )


async def _create_stream(js: JetStreamContext, *, settings: NatsSettings) -> StreamInfo:
    config = StreamConfig(
        name=settings.stream,
        subjects=settings.stream_subjects or [settings.subject_filter],
        storage=StorageType(settings.storage),
        num_replicas=settings.replicas,
        max_age=settings.max_age or None,
        duplicate_window=settings.duplicate_window,
        allow_direct=True,
    )
    try:
        info = await js.add_stream(config)
    except nats.js.errors.APIError as error:
        if error.err_code == STREAM_NAME_IN_USE:
            return await js.stream_info(settings.stream)  # a twin created it meanwhile
        if error.err_code == SUBJECTS_OVERLAP:
            raise SinkRejectedError(
                f"nats: creating stream {settings.stream!r}: its subjects "
                f"{', '.join(config.subjects or [])} overlap another stream's "
                f"({error.description}); "
                "choose other subjects (BRIDGE_NATS__SUBJECT, BRIDGE_NATS__STREAM_SUBJECTS) or "
                "point BRIDGE_NATS__STREAM at that stream"
            ) from error
        if error.err_code in REPLICAS_UNSUPPORTED:
            raise SinkRejectedError(
                f"nats: creating stream {settings.stream!r} with {settings.replicas} replicas: "
                f"{error.description}; lower BRIDGE_NATS__REPLICAS"
            ) from error
        raise
    log.info(
        "nats stream created",
        extra={"stream": settings.stream, "subjects": ",".join(config.subjects or [])},
    )
    return info


async def tail_of(
    connection: Connection,
    info: StreamInfo,
    *,
    settings: NatsSettings,
    pipeline: str,
    decode: Callable[[bytes], Event],
) -> StreamTail:
    """The stream's last sequence and the event its last message holds (None when the stream
    holds no message: new, purged, or every message past ``max_age``)."""
    limit = connection.client.max_payload
    if info.config.max_msg_size is not None and info.config.max_msg_size > 0:
        limit = min(limit, info.config.max_msg_size)
    sequence = info.state.last_seq
    if info.state.messages == 0:
        if sequence:
            log.warning(
                "nats stream holds no message: starting over with a snapshot",
                extra={"stream": settings.stream, "last_sequence": sequence},
            )
        return StreamTail(sequence=sequence, event=None, max_message_bytes=limit)
    try:
        message = await connection.js.get_msg(settings.stream, seq=sequence)
    except nats.js.errors.NotFoundError:
        again = await connection.js.stream_info(settings.stream)
        if again.state.messages == 0:  # it expired between the two requests
            return StreamTail(sequence=again.state.last_seq, event=None, max_message_bytes=limit)
        raise SinkRejectedError(
            f"nats: the last message (sequence {sequence}) of stream {settings.stream!r} was "
            "deleted, so the bridge cannot tell where it stopped; purge the stream (the bridge "
            "starts over with a snapshot) or use another BRIDGE_NATS__STREAM"
        ) from None
    event = read_tail(
        stream=settings.stream,
        sequence=sequence,
        headers=message.headers,
        data=message.data,
        pipeline=pipeline,
        decode=decode,
    )
    return StreamTail(sequence=sequence, event=event, max_message_bytes=limit)


def deadline(settings: NatsSettings) -> float:
    """How long the loop thread waits for one coroutine: longer than the client's own
    deadlines inside it, so that those, which say more, fire first."""
    return max(settings.timeout * 3, settings.flush_timeout) + _GRACE_SECONDS


def _is_permission(error: BaseException) -> bool:
    return "permissions violation" in str(error).lower()


def _wants_a_client_certificate(client: Client, settings: NatsSettings) -> bool:
    """Whether the server said, in the plain-text INFO it sends before the TLS upgrade, that
    it verifies client certificates, while the sink has none: the server then drops the
    handshake, which the client reports as a lost connection, a retryable error that retrying
    never mends."""
    info: dict[str, Any] = getattr(client, "_server_info", None) or {}
    return bool(info.get("tls_verify")) and settings.cert_file is None


def translate(
    error: BaseException,
    *,
    settings: NatsSettings,
    doing: str,
    connection: Connection | None = None,
) -> SinkError:
    """One line for the operator, retryable or not; never holds a secret."""
    if isinstance(error, SinkError):
        return error
    where = f"nats at {', '.join(settings.servers)}"
    if isinstance(error, LoopTimeoutError):
        return SinkUnavailableError(f"{where} did not answer in time ({error}), {doing}")
    permission = connection.permission_error() if connection is not None else None
    if permission is not None or _is_permission(error):
        return SinkRejectedError(
            f"{where}: {settings.authentication} lacks a permission {doing} "
            f"({permission or error}); allow it to publish to the stream's subjects and "
            "$JS.API.>, and to subscribe to _INBOX.>"
        )
    detail = str(error).removeprefix("nats: ").strip() or type(error).__name__
    if isinstance(error, nats.errors.AuthorizationError) or "authorization violation" in (
        detail.lower()
    ):
        return SinkRejectedError(
            f"{where}: authentication with {settings.authentication} failed ({detail})"
        )
    if isinstance(error, ssl.SSLCertVerificationError) or "certificate verify failed" in detail:
        return SinkRejectedError(
            f"{where}: the server's TLS certificate is not trusted ({detail}); set "
            "BRIDGE_NATS__CA_FILE to the CA that signed it"
        )
    if isinstance(error, ssl.SSLError):
        return SinkRejectedError(
            f"{where}: TLS failed ({detail}); check BRIDGE_NATS__CA_FILE, CERT_FILE and KEY_FILE"
        )
    if isinstance(error, nats.js.errors.APIError):
        if error.err_code in JETSTREAM_DISABLED:
            return SinkRejectedError(
                f"{where}: JetStream is not enabled ({error.description}); run nats-server with "
                "-js, or enable JetStream for the account"
            )
        if isinstance(error, nats.js.errors.ServiceUnavailableError) or (error.code or 0) >= 500:
            return SinkUnavailableError(f"{where}: JetStream is unavailable ({detail}), {doing}")
        return SinkRejectedError(f"{where}: JetStream refused {doing}: {error.description}")
    if isinstance(error, OSError | asyncio.TimeoutError | nats.errors.Error):
        return SinkUnavailableError(f"{where} is unreachable or not answering ({detail}), {doing}")
    return SinkRejectedError(f"{where}: {type(error).__name__}: {detail}, {doing}")


def hang_up(loop: LoopThread | None, connection: Connection | None, *, timeout: float) -> None:
    """Close ``connection`` on ``loop``, then stop the loop: what the sink and its reader do on
    ``close``. Closing a broken connection may fail; that is logged, not raised."""
    if loop is None:
        return
    if connection is not None:
        try:
            loop.run(connection.close(), timeout=timeout)
        except Exception as error:  # noqa: BLE001 - closing a broken connection may fail
            log.debug("nats connection closed uncleanly", extra={"detail": str(error)})
    loop.stop()
