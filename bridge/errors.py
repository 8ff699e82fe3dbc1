"""Every error etcd-bridge raises on purpose, in one tree.

::

    ConfigError (config.errors)      fatal: a setting is malformed or missing; names the variable
    BridgeError                      base; ``str()`` is one line that says what to do
    ├── NotLeaderError               handled: the election lease is lost; back to standby
    ├── EtcdError
    │   ├── EtcdUnavailableError     retryable: no endpoint answers, stream broke or stalled
    │   ├── EtcdRejectedError        fatal: etcd refused us (auth, TLS, permission)
    │   ├── RevisionCompactedError   handled: the position is older than etcd's history
    │   │   └── PreviousValueCompactedError  handled: a change came without its previous value
    │   ├── WatchResponseTooLargeError  handled: re-watch in fragments; fatal if fragmented
    │   └── PositionAheadError       fatal: the sink holds revisions etcd never reached
    ├── SinkError
    │   ├── SinkUnavailableError     retryable: the sink's server is down or slow
    │   └── SinkRejectedError        fatal: the sink refused data for good (too large, ACL);
    │                                handled per BRIDGE_<NAME>__ON_REFUSED if it names its event
    └── JournalError
        ├── JournalUnavailableError  retryable: the local log cannot be written (disk full)
        └── JournalOverrunError      handled: a sink's place in the log was trimmed; etcd instead

``retryable`` is read by one loop, ``bridge.retry.Retry``: the pump (reopening a sink), the
source (reconnecting to etcd) and the election all retry through it, with backoff. Fatal errors
stop the pipeline with their message, having delivered and checkpointed nothing after the
failing event. "Handled" errors are caught by the code that knows what to do about them.

An error raised because of another keeps it as its cause (``raise ... from error``), for
whoever debugs; the operator reads one line, ``str(error)``. The context travels as attributes
(``sink``, ``key``, ``revision``, ``endpoint``), which the JSON logs show as fields
(``bridge.logs.error_fields``) and the errors metric labels by sink (``bridge.metrics``). This
module imports nothing at run time, so that every layer may raise these.
"""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bridge.events import Position


class BridgeError(Exception):
    """Base of every deliberate error; the message is one line, fit for an operator.

    The keyword arguments are the error's context, each None where it does not apply or is
    not known where the error is raised; the message already says them in words.
    """

    retryable = False
    """Whether ``bridge.retry.Retry`` waits and tries again (True) or lets it through."""

    def __init__(
        self,
        message: str,
        *,
        sink: str | None = None,
        key: bytes | None = None,
        revision: int | None = None,
        endpoint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.sink = sink
        self.key = key
        self.revision = revision
        self.endpoint = endpoint

    @property
    def fields(self) -> dict[str, str | int]:
        """The known context, for a structured log line (the key as text, bytes escaped)."""
        fields: dict[str, str | int] = {}
        if self.sink is not None:
            fields["sink"] = self.sink
        if self.key is not None:
            fields["key"] = self.key.decode("utf-8", "backslashreplace")
        if self.revision is not None:
            fields["revision"] = self.revision
        if self.endpoint is not None:
            fields["endpoint"] = self.endpoint
        return fields


class NotLeaderError(BridgeError):
    """This instance no longer certainly holds the election key: it must not write."""


class EtcdError(BridgeError):
    """Something about etcd."""


class EtcdUnavailableError(EtcdError):
    """No endpoint answered, the stream broke, or it stalled: reconnect with backoff."""

    retryable = True


class EtcdRejectedError(EtcdError):
    """etcd refused the request for good (authentication, TLS, permission)."""


class RevisionCompactedError(EtcdError):
    """The requested revision is older than etcd's compaction: take a new snapshot."""

    def __init__(self, *, requested: int, compacted: int, endpoint: str | None = None) -> None:
        super().__init__(
            f"revision {requested} is compacted (etcd keeps history from {compacted} on)",
            revision=requested,
            endpoint=endpoint,
        )
        self.compacted = compacted


class PreviousValueCompactedError(RevisionCompactedError):
    """etcd sent an update or delete without its previous key-value, which the watch asked for.

    etcd looks each event's previous key-value up at ``revision - 1`` as it sends the event,
    and leaves it out, silently, when that revision was compacted meanwhile: a compaction
    overtook a lagging watch (etcd-io/etcd#10681). History is then lost as it is for a
    compacted position, and handled the same way, with a new snapshot, as Kubernetes re-lists
    on it: passed on, the change would be an update or delete that no consumer can apply
    against what it holds (Debezium's ``before`` null, which Flink refuses).
    """

    def __init__(self, *, key: bytes, revision: int, endpoint: str | None = None) -> None:
        # Its own message and context, not the parent's "revision N is compacted": etcd
        # says nothing of where its history now starts (``compacted`` unknown: 0).
        EtcdError.__init__(
            self,
            f"etcd {endpoint} sent the change of key "
            f"{key.decode('utf-8', 'backslashreplace')!r} at revision {revision} without its "
            f"previous value: it compacted revision {revision - 1} while the watch lagged",
            key=key,
            revision=revision,
            endpoint=endpoint,
        )
        self.compacted = 0


class WatchResponseTooLargeError(EtcdError):
    """A watch response was over the pipeline's limit and gRPC refused it unread.

    Whole responses: the source watches again in fragments. Fragmented already: etcd is
    older than 3.4 (no fragments) or one change is larger than the limit; fatal, naming the
    setting to raise.
    """

    def __init__(self, *, endpoint: str, limit: int, fragmented: bool, detail: str) -> None:
        if fragmented:
            message = (
                f"etcd {endpoint} sent a watch message over {limit} bytes even in fragments "
                f"({detail}): etcd is older than 3.4 (it does not fragment) or one change is "
                "larger than that; raise BRIDGE_ETCD__WATCH_RESPONSE_BYTES"
            )
        else:
            message = f"etcd {endpoint}: a watch response is over {limit} bytes ({detail})"
        super().__init__(message, endpoint=endpoint)
        self.fragmented = fragmented


class PositionAheadError(EtcdError):
    """A sink holds a revision newer than etcd's: etcd was replaced or restored from backup.

    Going on would interleave two histories in the sink, so the pipeline stops and says how
    to start over.
    """

    def __init__(self, *, sink: str, position: int, current: int, endpoint: str) -> None:
        super().__init__(
            f"sink {sink} holds revision {position} but etcd {endpoint} is at {current}: etcd "
            "was replaced or restored from a backup; point the sink at a fresh target or use "
            "a new BRIDGE_NAME",
            sink=sink,
            revision=position,
            endpoint=endpoint,
        )


class SinkError(BridgeError):
    """Something about a sink; the message names the sink."""


class SinkUnavailableError(SinkError):
    """The sink cannot be reached now: retry the same batch with backoff."""

    retryable = True


class SinkRejectedError(SinkError):
    """The sink refused data for good; the message names the key and revision.

    ``position`` is the refused event's, set where the sink refuses that one event for what
    it is (too large for the destination): then the pipeline may deliver it in another form
    or divert it (``bridge.refusal``). None where the refusal would meet any event (a
    permission revoked, a setting): that always stops."""

    def __init__(
        self,
        message: str,
        *,
        sink: str | None = None,
        key: bytes | None = None,
        revision: int | None = None,
        position: "Position | None" = None,
    ) -> None:
        super().__init__(message, sink=sink, key=key, revision=revision)
        self.position = position


class JournalError(BridgeError):
    """Something about the local log (``bridge.journal``)."""


class JournalUnavailableError(JournalError):
    """The log cannot be written now (a full disk, an I/O error): its reader retries, and the
    sinks reading it wait, as they would for etcd."""

    retryable = True


class JournalOverrunError(JournalError):
    """The part of the log a sink was to read next is gone (trimmed past the disk budget, or
    the log started afresh): that sink catches up from etcd instead."""
