"""The one module that talks to etcd: connections, paginated ranges and watch streams.

Only this module imports the etcd client library (``pyetcd``, from etcd-sdk-python) or grpc.
We use the library for what it does well (generated v3 stubs, the protobuf messages) and own
the rest, because its high-level helpers hide what exactly-once needs:

- **Watch**: its callback watcher buffers responses in an unbounded queue and drops a cancel
  response that carries no events. We open the ``Watch`` gRPC stream ourselves and iterate it
  in the caller's thread, so the caller's pace is the stream's pace (gRPC flow control slows
  etcd down when a sink is slow) and every ``created``/``canceled``/``compact_revision`` is seen.
- **Stalls**: a watch that goes silent is detected by a watchdog that asks for progress
  (``WatchProgressRequest``, etcd >= 3.4) after a third of ``stall_timeout`` and cancels the
  stream when nothing at all arrived within it. A watcher replaying a long history that has no
  event in our prefix answers nothing, so the deadline grows with the revisions it must replay.
- **Failover**: the library marks a failed endpoint unusable for minutes; we rotate through
  ``BRIDGE_ETCD__ENDPOINTS`` ourselves and build a fresh channel on every reconnect.
- **Leader loss**: requests carry ``hasleader=true`` so a member cut off from its cluster
  cancels our watch instead of serving it stale.
- **Size**: a watch response is taken whole up to a byte limit (fast: one parse in C); a
  larger one (one huge revision, such as a delete-range of a million keys, or a replay of big
  values) is refused by gRPC before it is buffered, and the watch is reopened with etcd's
  ``fragment`` flag (etcd >= 3.4), which splits responses at etcd's ``--max-request-bytes``.
  Fragments are not the default because etcd 3.4/3.5 cut them in time quadratic in the
  events per fragment: a replay of 100-key transactions runs 17x slower fragmented. Once the
  oversized response has arrived, the watch goes back to whole responses. etcd < 3.4 ignores
  the flag: a response over the limit then stops the pipeline with an error naming
  ``BRIDGE_ETCD__WATCH_RESPONSE_BYTES``. Range responses (snapshot pages) have no limit:
  their size is chosen by the page's key count.
- **Revisions in pieces**: a revision of any size is handed on in chunks of at most
  ``CHUNK_EVENTS`` events; every event but the last (kept) one of its revision has ``more``
  set. etcd ends every response (every last fragment) at a revision boundary, which is how
  the last event of a revision is known without waiting for the next revision.

Raw etcd events become ``bridge.events.Event`` here, numbered within their revision.
"""

import dataclasses
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

# gRPC's C core logs TLS failures on stderr by itself; our errors say it in one line instead.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

import grpc  # noqa: E402 - after its logging is set
from google.protobuf import descriptor_pb2, message_factory  # noqa: E402
from pyetcd import etcdrpc  # noqa: E402
from pyetcd.etcdrpc.kv_pb2 import Event as RawEvent  # noqa: E402

from bridge.errors import (
    EtcdError,
    EtcdRejectedError,
    EtcdUnavailableError,
    PreviousValueCompactedError,
    RevisionCompactedError,
    WatchResponseTooLargeError,
)
from bridge.events import Event, EventType, Op
from bridge.wire import WatchResponse
from config.etcd import EtcdSettings
from config.keyspace import KeySpace

log = logging.getLogger(__name__)

_CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", -1),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    # Off: the probe grows the HTTP/2 window to what the link can carry, so a watch whose
    # reader is held back by the pump's queue kept megabytes of unread fragments buffered
    # (a Redis replay of 1 MiB values: 181 -> 114 MiB); rates of small changes unchanged.
    ("grpc.http2.bdp_probe", 0),
]
_WATCH_METHOD = "/etcdserverpb.Watch/Watch"
_REQUIRE_LEADER = ("hasleader", "true")
_REJECTED_CODES = {
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.FAILED_PRECONDITION,
}
_PUT = RawEvent.PUT
_REPLAY_REVISIONS_PER_SECOND = 4000
"""A conservative half of the ~8k revisions/s etcd replays to a watcher that is catching up."""
_FRAGMENT_ALLOWANCE_SECONDS = 60.0
"""Added to the stall deadline of a fragmented watch: etcd cuts each fragment in time
quadratic in its events (about 1.3 s for 14,000 small deletes on 2 cores, several times that
with several watchers cutting at once) and answers no progress request meanwhile."""
CHUNK_EVENTS = 2000
"""Most events per chunk from one watch response. A replay response holds up to 1,000
revisions: with transactions of 100 keys, 100,000 events (25 MB), which as one chunk would
all be alive at once however small the pump's queue."""


_EVENTS_FIELD = 11
"""The number of ``WatchResponse.events``."""


def _watch_messages() -> tuple[Any, Any, Any]:
    """``WatchRequest``, ``WatchCreateRequest`` and ``WatchResponse`` with etcd 3.4's
    ``fragment`` fields.

    The library's stubs were generated from an older rpc.proto that lacks them. These are
    wire-compatible copies (same names and field numbers, the fields we use) built on the
    library's ``ResponseHeader``, ``Event`` and ``WatchProgressRequest`` messages.
    """
    field = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(
        name="etcd_bridge/watch.proto",
        package="etcd_bridge.watch",
        syntax="proto3",
        dependency=["rpc.proto", "kv.proto"],
    )

    def message(name: str, fields: list[tuple[str, int, int, str]], *, repeated: str = "") -> Any:
        definition = file.message_type.add(name=name)
        for field_name, number, kind, type_name in fields:
            label = field.LABEL_REPEATED if field_name == repeated else field.LABEL_OPTIONAL
            added = definition.field.add(name=field_name, number=number, type=kind, label=label)
            if type_name:
                added.type_name = type_name
        return definition

    message(
        "WatchCreateRequest",
        [
            ("key", 1, field.TYPE_BYTES, ""),
            ("range_end", 2, field.TYPE_BYTES, ""),
            ("start_revision", 3, field.TYPE_INT64, ""),
            ("progress_notify", 4, field.TYPE_BOOL, ""),
            ("prev_kv", 6, field.TYPE_BOOL, ""),
            ("fragment", 8, field.TYPE_BOOL, ""),
        ],
    )
    request = message(
        "WatchRequest",
        [
            ("create_request", 1, field.TYPE_MESSAGE, ".etcd_bridge.watch.WatchCreateRequest"),
            ("progress_request", 3, field.TYPE_MESSAGE, ".etcdserverpb.WatchProgressRequest"),
        ],
    )
    request.oneof_decl.add(name="request_union")
    for member in request.field:
        member.oneof_index = 0
    message(
        "WatchResponse",
        [
            ("header", 1, field.TYPE_MESSAGE, ".etcdserverpb.ResponseHeader"),
            ("watch_id", 2, field.TYPE_INT64, ""),
            ("created", 3, field.TYPE_BOOL, ""),
            ("canceled", 4, field.TYPE_BOOL, ""),
            ("compact_revision", 5, field.TYPE_INT64, ""),
            ("cancel_reason", 6, field.TYPE_STRING, ""),
            ("fragment", 7, field.TYPE_BOOL, ""),
            ("events", _EVENTS_FIELD, field.TYPE_MESSAGE, ".mvccpb.Event"),
        ],
        repeated="events",
    )
    pool = etcdrpc.WatchResponse.DESCRIPTOR.file.pool
    pool.Add(file)
    types = pool.FindFileByName(file.name).message_types_by_name
    request_type, create_type, response_type = (
        message_factory.GetMessageClass(types[name])
        for name in ("WatchRequest", "WatchCreateRequest", "WatchResponse")
    )
    return request_type, create_type, response_type


_WatchRequest, _WatchCreateRequest, _WatchResponse = _watch_messages()
_WHOLE_RESPONSE_BYTES = 4 * 1024 * 1024
"""Watch responses up to this size are parsed whole; larger ones a chunk at a time
(``bridge.wire``): a few live changes, or one snapshot page's worth of a replay."""


def _watch_response(raw: bytes) -> WatchResponse:
    return WatchResponse(
        raw,
        parse=_WatchResponse.FromString,
        events_field=_EVENTS_FIELD,
        chunk_events=CHUNK_EVENTS,
        whole_bytes=_WHOLE_RESPONSE_BYTES,
    )


def describe_rpc_error(error: grpc.RpcError) -> str:
    code = error.code() if isinstance(error, grpc.Call) else None
    details = error.details() if isinstance(error, grpc.Call) else str(error)
    return f"{code.name if code else 'ERROR'}: {details}"


def translate_rpc_error(error: grpc.RpcError, *, endpoint: str, revision: int = 0) -> EtcdError:
    """Map a gRPC failure to our error tree, naming the endpoint and what to check."""
    code = error.code() if isinstance(error, grpc.Call) else None
    details = (error.details() if isinstance(error, grpc.Call) else "") or ""
    if code == grpc.StatusCode.OUT_OF_RANGE and "compacted" in details:
        return RevisionCompactedError(requested=revision, compacted=0, endpoint=endpoint)
    if code == grpc.StatusCode.UNAUTHENTICATED and "invalid auth token" in details:
        # Simple tokens expire (--auth-token-ttl) and die with a restart: reconnecting
        # authenticates anew.
        return EtcdUnavailableError(
            f"etcd {endpoint}: auth token expired, re-authenticating", endpoint=endpoint
        )
    if code in _REJECTED_CODES:
        hint = "check BRIDGE_ETCD__USER/PASSWORD and the user's role"
        return EtcdRejectedError(
            f"etcd {endpoint} refused the request ({code}: {details}); {hint}", endpoint=endpoint
        )
    if "handshake" in details.lower():
        return EtcdRejectedError(f"etcd {endpoint}: {_tls_advice(details)}", endpoint=endpoint)
    return EtcdUnavailableError(f"etcd {endpoint}: {describe_rpc_error(error)}", endpoint=endpoint)


def _tls_advice(details: str) -> str:
    """Say which TLS setting to look at, from the handshake failure gRPC reports."""
    reason = details.rsplit("OPENSSL_internal:", 1)[-1].removesuffix(": OK").strip()
    if "CERTIFICATE_VERIFY_FAILED" in details:
        return f"the server's certificate is not trusted ({reason}); check BRIDGE_ETCD__CA_FILE"
    return (
        f"the server refused our client certificate ({reason}): missing, expired or not "
        "signed by its CA; check BRIDGE_ETCD__CERT_FILE and BRIDGE_ETCD__KEY_FILE"
    )


@dataclass(frozen=True, slots=True)
class RangePage:
    """One page of a range read at a pinned revision."""

    kvs: Sequence[Any]
    """The protobuf ``KeyValue`` messages of this page, in key order."""
    revision: int
    """The revision the page was read at (the pinned one)."""
    more: bool
    """Whether keys remain after the last of this page."""


@dataclass(frozen=True, slots=True)
class Chunk:
    """Events that arrived together (a watch response or a snapshot page), or just progress."""

    events: list[Event]
    revision: int
    """etcd's current revision when it sent the response (its header)."""
    size: int = 0
    """Bytes of keys and values (previous values included) of ``events``: what the pump's
    queue and batches are bounded by, besides the event count."""
    synced: bool = False
    """A progress answer: etcd has sent every change of the watch up to ``revision``, so a
    sink that holds what came before it is caught up to that revision (the lag metrics)."""


def snapshot_event(kv: Any, *, revision: int, index: int) -> Event:
    """A key read by a snapshot at ``revision`` as the ``index``-th event of that snapshot."""
    return Event(
        revision,
        index,
        EventType.PUT,
        Op.SNAPSHOT,
        kv.key,
        kv.value,
        None,
        kv.mod_revision,
        kv.create_revision,
        kv.version,
        kv.lease,
    )


class EtcdConnection:
    """A channel to one of the configured endpoints, with the credentials to use it."""

    def __init__(self, settings: EtcdSettings, *, watch_response_bytes: int = 0) -> None:
        """``watch_response_bytes``: the largest whole watch response (0: the setting's)."""
        watch_response_bytes = watch_response_bytes or settings.watch_response_bytes
        self._settings = settings
        self._options = [
            *_CHANNEL_OPTIONS,
            ("grpc.service_config", _watch_limit_config(watch_response_bytes)),
        ]
        self.watch_response_bytes = watch_response_bytes
        self._endpoint_index = 0
        self._channel: grpc.Channel | None = None
        self._metadata: tuple[tuple[str, str], ...] = (_REQUIRE_LEADER,)
        self.endpoint = settings.endpoints[0]

    def connect(self) -> int:
        """Reach the first endpoint that answers, starting after the last one used.

        Returns etcd's current revision. Raises EtcdUnavailableError naming every endpoint
        tried, or EtcdRejectedError when one answered but refused us.
        """
        failures: list[EtcdUnavailableError] = []
        endpoints = self._settings.endpoints
        for attempt in range(len(endpoints)):
            self.close()
            index = (self._endpoint_index + attempt) % len(endpoints)
            self.endpoint = endpoints[index]
            try:
                self._open_channel()
                revision = self.current_revision()
            except EtcdUnavailableError as error:
                failures.append(error)
                continue
            self._endpoint_index = index
            return revision
        self._endpoint_index = (self._endpoint_index + 1) % len(endpoints)
        raise EtcdUnavailableError(
            "no etcd endpoint answered (" + "; ".join(map(str, failures)) + "); check "
            "BRIDGE_ETCD__ENDPOINTS"
        ) from failures[-1]

    def failover(self) -> None:
        """Forget the current channel and turn to the next endpoint: the next ``connect``
        starts there, and so does the next request of a user that never calls ``connect``
        (the election's campaign and lease refreshes open their channel on first use).
        Moving only the index for ``connect`` left those on a member that had lost its
        cluster, or that a partition cut off, while the others were fine."""
        self.close()
        self._endpoint_index = (self._endpoint_index + 1) % len(self._settings.endpoints)
        self.endpoint = self._settings.endpoints[self._endpoint_index]

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    def current_revision(self) -> int:
        """etcd's revision, from a read of one key: a range would make etcd count it all."""
        request = etcdrpc.RangeRequest(key=self._settings.keyspace.covering_range[0])
        return int(self._range(request).header.revision)

    def range_page(
        self, *, start: bytes, end: bytes, revision: int, limit: int
    ) -> Callable[[], RangePage]:
        """Ask for the keys in ``[start, end)`` as of ``revision`` (0: now), at most ``limit``
        of them; the returned call waits for the page. Asking before handing on the previous
        page lets etcd count and read the next one meanwhile."""
        request = etcdrpc.RangeRequest(
            key=start, range_end=end, revision=revision, limit=limit, serializable=False
        )
        future = etcdrpc.KVStub(self._require_channel()).Range.future(
            request, timeout=self._settings.timeout, metadata=self._metadata
        )

        def page() -> RangePage:
            try:
                response = future.result()
            except grpc.RpcError as error:
                raise translate_rpc_error(
                    error, endpoint=self.endpoint, revision=revision
                ) from error
            return RangePage(
                kvs=response.kvs, revision=int(response.header.revision), more=response.more
            )

        return page

    def count_keys(self, *, start: bytes, end: bytes, revision: int) -> tuple[int, int]:
        """How many keys ``[start, end)`` holds at ``revision`` (0: now), and etcd's current
        revision (the one counted at, for 0): a count-only range, which sends no key."""
        request = etcdrpc.RangeRequest(
            key=start, range_end=end, revision=revision, count_only=True, serializable=False
        )
        response = self._range(request, revision=revision)
        return int(response.count), int(response.header.revision)

    def grant_lease(self, ttl: int) -> int:
        """A new lease of ``ttl`` seconds; returns its id."""
        request = etcdrpc.LeaseGrantRequest(TTL=ttl)
        response = self._call(etcdrpc.LeaseStub(self._require_channel()).LeaseGrant, request)
        if response.error:
            raise EtcdUnavailableError(
                f"etcd {self.endpoint}: lease grant failed: {response.error}",
                endpoint=self.endpoint,
            )
        return int(response.ID)

    def keep_alive(self, lease: int, *, timeout: float) -> int:
        """Refresh a lease once; returns its new TTL in seconds (0: it has expired)."""
        stub = etcdrpc.LeaseStub(self._require_channel())
        try:
            responses = stub.LeaseKeepAlive(
                iter([etcdrpc.LeaseKeepAliveRequest(ID=lease)]),
                timeout=timeout,
                metadata=self._metadata,
            )
            return max((int(response.TTL) for response in responses), default=0)
        except grpc.RpcError as error:
            raise translate_rpc_error(error, endpoint=self.endpoint) from error

    def revoke_lease(self, lease: int) -> None:
        """End a lease now, deleting the keys attached to it."""
        request = etcdrpc.LeaseRevokeRequest(ID=lease)
        self._call(etcdrpc.LeaseStub(self._require_channel()).LeaseRevoke, request)

    def create_if_absent(self, key: bytes, *, value: bytes, lease: int) -> bool:
        """Put ``key`` bound to ``lease`` only if it does not exist; True when it was put."""
        request = etcdrpc.TxnRequest(
            compare=[
                etcdrpc.Compare(
                    key=key,
                    result=etcdrpc.Compare.EQUAL,
                    target=etcdrpc.Compare.CREATE,
                    create_revision=0,
                )
            ],
            success=[
                etcdrpc.RequestOp(request_put=etcdrpc.PutRequest(key=key, value=value, lease=lease))
            ],
        )
        response = self._call(etcdrpc.KVStub(self._require_channel()).Txn, request)
        return bool(response.succeeded)

    def watch(
        self, keyspace: KeySpace, *, start_revision: int, fragment: bool = False
    ) -> "WatchStream":
        """Watch every prefix of ``keyspace`` from ``start_revision``, with ``prev_kv``;
        ``fragment`` asks etcd to split large responses (see the module docstring)."""
        start, end = keyspace.covering_range
        call = self._require_channel().stream_stream(
            _WATCH_METHOD,
            request_serializer=_WatchRequest.SerializeToString,
            response_deserializer=_watch_response,
        )
        return WatchStream(
            call=call,
            metadata=self._metadata,
            endpoint=self.endpoint,
            keep=keyspace if keyspace.needs_filter else None,
            create=_WatchCreateRequest(
                key=start,
                range_end=end,
                start_revision=start_revision,
                prev_kv=True,
                progress_notify=True,
                fragment=fragment,
            ),
            stall_timeout=self._settings.stall_timeout,
            response_limit=self.watch_response_bytes,
        )

    def _range(self, request: Any, *, revision: int = 0) -> Any:
        stub = etcdrpc.KVStub(self._require_channel())
        return self._call(stub.Range, request, revision=revision)

    def _call(self, method: Any, request: Any, *, revision: int = 0) -> Any:
        """One unary request with our deadline and credentials, errors translated."""
        try:
            return method(request, timeout=self._settings.timeout, metadata=self._metadata)
        except grpc.RpcError as error:
            raise translate_rpc_error(error, endpoint=self.endpoint, revision=revision) from error

    def _require_channel(self) -> grpc.Channel:
        if self._channel is None:
            self._open_channel()
        assert self._channel is not None  # noqa: S101 - _open_channel sets it or raises
        return self._channel

    def _open_channel(self) -> None:
        parts = urlsplit(self.endpoint)
        target = f"{parts.hostname}:{parts.port or 2379}"
        if parts.scheme == "https":
            self._channel = grpc.secure_channel(target, self._credentials(), self._options)
        else:
            self._channel = grpc.insecure_channel(target, self._options)
        self._metadata = (_REQUIRE_LEADER,)
        if self._settings.user is not None:
            self._metadata = (_REQUIRE_LEADER, ("token", self._authenticate()))

    def _credentials(self) -> grpc.ChannelCredentials:
        ca_file, cert_file, key_file = self._settings.tls_files
        if (cert_file is None) != (key_file is None):
            raise EtcdRejectedError(
                "BRIDGE_ETCD__CERT_FILE and BRIDGE_ETCD__KEY_FILE must be set together"
            )
        return grpc.ssl_channel_credentials(
            root_certificates=ca_file.read_bytes() if ca_file else None,
            private_key=key_file.read_bytes() if key_file else None,
            certificate_chain=cert_file.read_bytes() if cert_file else None,
        )

    def _authenticate(self) -> str:
        password = self._settings.password
        request = etcdrpc.AuthenticateRequest(
            name=self._settings.user, password=password.get_secret_value() if password else ""
        )
        assert self._channel is not None  # noqa: S101 - called right after the channel opens
        try:
            response = etcdrpc.AuthStub(self._channel).Authenticate(
                request, timeout=self._settings.timeout
            )
        except grpc.RpcError as error:
            raise translate_rpc_error(error, endpoint=self.endpoint) from error
        return str(response.token)


def _watch_limit_config(limit: int) -> str:
    """A gRPC service config capping the Watch method's responses at ``limit`` bytes: gRPC
    refuses a larger message from its length prefix, before buffering it."""
    return json.dumps(
        {
            "methodConfig": [
                {"name": [{"service": "etcdserverpb.Watch"}], "maxResponseMessageBytes": limit}
            ]
        }
    )


_NO_PREV = (0, 0, 0, 0)
"""``prev_kv``'s revisions, version and lease when etcd sent no ``prev_kv``."""


class EventChunker:
    """Raw etcd events of one watch, in arrival order, to chunks of ``Event``s.

    State carried across responses and fragments: the revision being numbered, the next
    index in it, and the event held back until it is known whether more of its revision
    follow. One per watch stream: a new stream starts numbering afresh.
    """

    def __init__(self, *, keep: KeySpace | None, endpoint: str | None = None) -> None:
        """``endpoint``: the etcd the events come from, named in errors."""
        self._keep = keep
        self._endpoint = endpoint
        self._revision = 0
        self._next_index = 0
        self._held: Event | None = None
        self._held_size = 0

    def chunk(self, raw_events: Sequence[Any], *, ends_revision: bool, header: int) -> Chunk:
        """Build events, numbering each within its revision (a revision may span chunks and
        fragments) and setting ``more`` on all but the last of each revision.

        Keys the keyspace does not watch (between several prefixes in the covering range, or
        left out by its include / exclude patterns) are dropped first, before numbering.
        The last event built is held back until the next kept event, or the end of its
        revision, says whether more of its revision follow: setting ``more`` only on events
        of revisions that continue would leave it wrong when the rest of a revision is all
        dropped keys. ``ends_revision``: the last raw event ends its revision; ``header``:
        etcd's revision when it sent the response.

        An update or delete of a watched key without its previous key-value raises
        PreviousValueCompactedError (see there): the source then resyncs, and the events
        before it in this call, and the one held back, are left to the snapshot that follows,
        as the changes after a compacted position are.
        """
        events: list[Event] = []
        append = events.append
        keep = self._keep
        held, held_size = self._held, self._held_size
        revision, index = self._revision, self._next_index
        size = 0
        for raw in raw_events:
            kv = raw.kv
            mod_revision = kv.mod_revision
            if mod_revision != revision:
                revision, index = mod_revision, 0
            key = kv.key
            if keep is not None and key not in keep:
                continue
            version = kv.version
            if raw.HasField("prev_kv"):
                prev = raw.prev_kv
                prev_value = prev.value
                prev_fields = (prev.mod_revision, prev.create_revision, prev.version, prev.lease)
            elif raw.type != _PUT or version != 1:
                raise PreviousValueCompactedError(
                    key=key, revision=mod_revision, endpoint=self._endpoint
                )
            else:
                prev_value, prev_fields = None, _NO_PREV
            if raw.type == _PUT:
                value = kv.value
                event = Event(
                    revision,
                    index,
                    EventType.PUT,
                    Op.CREATE if version == 1 else Op.UPDATE,
                    key,
                    value,
                    prev_value,
                    mod_revision,
                    kv.create_revision,
                    version,
                    kv.lease,
                    None,
                    False,
                    False,
                    *prev_fields,
                )
                event_size = len(key) + len(value) + (len(prev_value) if prev_value else 0)
            else:
                event = Event(
                    revision,
                    index,
                    EventType.DELETE,
                    Op.DELETE,
                    key,
                    None,
                    prev_value,
                    mod_revision,
                    kv.create_revision,
                    version,
                    kv.lease,
                    None,
                    False,
                    False,
                    *prev_fields,
                )
                event_size = len(key) + (len(prev_value) if prev_value else 0)
            if held is not None:
                held.more = held.revision == revision
                append(held)
                size += held_size
            held, held_size = event, event_size
            index += 1
        if held is not None and ends_revision:
            append(held)
            size += held_size
            held = None
        self._held, self._held_size = held, held_size
        self._revision, self._next_index = revision, index
        return Chunk(events=events, revision=header, size=size)


class WatchStream:
    """One gRPC ``Watch`` call holding one watcher, iterated in the caller's thread.

    Iterating yields ``Chunk``s; it raises RevisionCompactedError when the start
    revision is gone, WatchResponseTooLargeError when a response is over the limit,
    and EtcdUnavailableError when the stream breaks, is cancelled by the server, or stalls.
    A fragmented watch ends by itself (the iteration returns) once a fragmented response has
    arrived whole, so that the caller can go back to whole responses. ``close()`` may be
    called from any thread and ends the iteration.
    """

    def __init__(
        self,
        *,
        call: Any,
        metadata: tuple[tuple[str, str], ...],
        endpoint: str,
        keep: KeySpace | None,
        create: Any,
        stall_timeout: float,
        response_limit: int,
    ) -> None:
        self._requests: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._requests.put(_WatchRequest(create_request=create))
        self._start_revision = int(create.start_revision)
        self.fragmented = bool(create.fragment)
        self._endpoint = endpoint
        self._chunker = EventChunker(keep=keep, endpoint=endpoint)
        self._stall_timeout = stall_timeout
        self._response_limit = response_limit
        self._allowance = 0.0
        self._caught_up_at = 0
        self._in_fragments = False
        self._defragmented = False
        self._last_heard = time.monotonic()
        self._stalled = False
        self._closed = threading.Event()
        self._call = call(self._request_iterator(), metadata=metadata)
        self._watchdog = threading.Thread(
            target=self._watch_for_stalls, name="etcd-watchdog", daemon=True
        )
        self._watchdog.start()

    def __iter__(self) -> Iterator[Chunk]:
        try:
            for response in self._call:
                self._last_heard = time.monotonic()
                yield from self._handle(response)
                if self._defragmented:
                    return
        except grpc.RpcError as error:
            if self._stalled:
                raise EtcdUnavailableError(
                    f"etcd {self._endpoint}: watch stalled (nothing for "
                    f"{self._stall_timeout:g}s, not even a progress answer)",
                    endpoint=self._endpoint,
                ) from error
            if self._closed.is_set():
                return
            if isinstance(error, grpc.Call) and error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise WatchResponseTooLargeError(
                    endpoint=self._endpoint,
                    limit=self._response_limit,
                    fragmented=self.fragmented,
                    detail=error.details() or "",
                ) from error
            raise translate_rpc_error(
                error, endpoint=self._endpoint, revision=self._start_revision
            ) from error
        finally:
            self.close()
        if not self._closed.is_set():
            raise EtcdUnavailableError(
                f"etcd {self._endpoint}: the watch stream ended", endpoint=self._endpoint
            )

    def close(self) -> None:
        if not self._closed.is_set():
            self._closed.set()
            self._requests.put(None)
            self._call.cancel()

    def _handle(self, response: WatchResponse) -> Iterator[Chunk]:
        """The response's events in chunks of at most ``CHUNK_EVENTS``, built one chunk at
        a time, so that the pump's bounded queue also bounds the events alive."""
        head = response.head
        if head.compact_revision:
            raise RevisionCompactedError(
                requested=self._start_revision,
                compacted=int(head.compact_revision),
                endpoint=self._endpoint,
            )
        if head.canceled:
            reason = head.cancel_reason or "no reason given"
            raise EtcdUnavailableError(
                f"etcd {self._endpoint} cancelled the watch: {reason}", endpoint=self._endpoint
            )
        header_revision = int(head.header.revision)
        if head.created:
            behind = max(0, header_revision - self._start_revision)
            self._allowance = behind / _REPLAY_REVISIONS_PER_SECOND
            self._caught_up_at = header_revision
            return
        last = response.last_event
        if last is None or last.kv.mod_revision >= self._caught_up_at:
            self._allowance = 0.0  # progress answers and current events mean: replay is over
        ends_revision = not head.fragment
        if ends_revision:
            self._defragmented = self._in_fragments
        self._in_fragments = not ends_revision
        if not response.total:  # a progress answer
            chunk = self._chunker.chunk((), ends_revision=ends_revision, header=header_revision)
            yield dataclasses.replace(chunk, synced=True)
            return
        count = response.chunk_count
        for number, raw_events in enumerate(response.chunks(), 1):
            yield self._chunker.chunk(
                raw_events,
                ends_revision=ends_revision and number == count,
                header=header_revision,
            )

    def _request_iterator(self) -> Iterator[Any]:
        while True:
            request = self._requests.get()
            if request is None:
                return
            yield request

    def _watch_for_stalls(self) -> None:
        progress_asked = False
        while not self._closed.wait(min(1.0, self._stall_timeout / 6)):
            silent_for = time.monotonic() - self._last_heard
            deadline = self._stall_timeout + self._allowance
            if self.fragmented:
                deadline += _FRAGMENT_ALLOWANCE_SECONDS
            if silent_for > deadline:
                log.warning(
                    "watch stalled, reopening",
                    extra={"endpoint": self._endpoint, "silent_seconds": round(silent_for, 1)},
                )
                self._stalled = True
                self._call.cancel()
                return
            if silent_for > self._stall_timeout / 3:
                if not progress_asked:
                    self._requests.put(
                        _WatchRequest(progress_request=etcdrpc.WatchProgressRequest())
                    )
                    progress_asked = True
            else:
                progress_asked = False
