"""NATS subjects: what one may hold, the subject of each event, the stream's subject filter.

A subject is ``.``-separated tokens; whitespace cannot appear in one, ``*`` and ``>`` are
wildcards (a publisher may not use them) and ``$`` starts the server's own subjects
(``$JS.API...``). The routing template (``bridge.keytemplate``, the one template language of
every sink) fills its placeholders with key segments, which are arbitrary bytes, so each
segment is *cleaned* first: ASCII letters, digits, ``-`` and ``_`` are kept and every other
character becomes ``_`` -- the ``.`` (it would split the segment into tokens), the wildcards,
``$``, whitespace, any other punctuation, every non-ASCII character and every byte sequence
that is not UTF-8. Distinct keys may therefore share a subject: the subject is a label to
filter on; the key itself travels exactly in the message (``sinks.nats.messages``).

The literal parts of a template are the operator's, so they are checked once, at start, by
``check_template``, not cleaned: a bad one stops the bridge naming ``BRIDGE_NATS__SUBJECT``.
Its first token must be literal, so that the stream's subjects never capture another
application's traffic (a template ``{1}.x`` would need a stream on ``*.x``).

``stream_filter`` is the subject filter that captures every subject a template can render: each
token holding a placeholder becomes ``*`` (a cleaned segment is exactly one token), so
``etcd.{1}.{2}`` gives ``etcd.*.*``. Snapshot markers (whose key is the watched prefix, which
has no segments) go to ``marker_subject``, the template with every placeholder rendered as
``_``, which that filter captures too.
"""

import re

from bridge.encoding import printable_key
from bridge.errors import SinkRejectedError
from bridge.events import Event, EventType
from bridge.keytemplate import KeyTemplate
from config.keyspace import KeySpace

MAX_SUBJECT_BYTES = 1024
"""The longest subject the sink publishes to. NATS's own limit is the 4 KiB protocol line
(``max_control_line``), which also holds the reply subject and sizes; consumers put the subject
into API subjects of their own (direct get by subject), so we stop well before it."""

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_UNSAFE_BYTES = re.compile(rb"[^A-Za-z0-9_-]")
_LITERAL = re.compile(r"[!-~]+")
"""Printable ASCII without whitespace: what a literal token of the template may hold."""
_PLACEHOLDER = "\x00"
"""Stands for a placeholder while a template is split into tokens (literals are printable)."""
_CACHE_LIMIT = 100_000


def clean_segment(segment: bytes) -> bytes:
    """A key segment as one subject token: each character outside ``[A-Za-z0-9_-]`` (and each
    byte sequence that is not UTF-8) becomes one ``_``."""
    if _UNSAFE_BYTES.search(segment) is None:
        return segment  # the common case: nothing to decode
    text = segment.decode("utf-8", errors="replace")
    return _UNSAFE.sub("_", text).encode("ascii")


def tokens(template: KeyTemplate) -> list[str]:
    """The template's tokens, each placeholder shown as ``_PLACEHOLDER``."""
    rendered = template.fill(
        tuple(_PLACEHOLDER.encode() for _ in range(template.deepest)),
    ).decode("utf-8")
    return rendered.split(".")


def check_template(template: KeyTemplate) -> None:
    """Raise ValueError saying what makes ``template`` unusable as a subject template."""
    parts = tokens(template)
    for number, token in enumerate(parts, 1):
        literal = token.replace(_PLACEHOLDER, "")
        if not token:
            raise ValueError(
                f"token {number} is empty: a subject has no leading, trailing or doubled '.'"
            )
        if literal and not _LITERAL.fullmatch(literal):
            raise ValueError(
                f"token {number} ({literal!r}) holds whitespace or non-ASCII characters"
            )
        if "*" in literal or ">" in literal:
            raise ValueError(f"token {number} ({literal!r}) holds a wildcard ('*' or '>')")
    if _PLACEHOLDER in parts[0]:
        raise ValueError(
            "the first token must be literal (e.g. 'etcd.{1}'), so that the stream's subjects "
            "capture only the bridge's messages"
        )
    if parts[0].startswith("$") or parts[0] == "_INBOX":
        raise ValueError(f"{parts[0]!r} subjects belong to NATS itself")
    blank = template.fill(())
    if len(blank) > MAX_SUBJECT_BYTES:
        raise ValueError(f"a subject is at most {MAX_SUBJECT_BYTES} bytes")


def stream_filter(template: KeyTemplate) -> str:
    """The subject filter capturing every subject ``template`` renders (``etcd.*.*``)."""
    return ".".join("*" if _PLACEHOLDER in token else token for token in tokens(template))


def covers(pattern: str, subject: str) -> bool:
    """Whether subject filter ``pattern`` matches every subject ``subject`` (itself a subject
    or a filter with ``*`` tokens) matches."""
    wanted = subject.split(".")
    parts = pattern.split(".")
    for position, part in enumerate(parts):
        if part == ">":
            return position < len(wanted)
        if position >= len(wanted) or part not in ("*", wanted[position]):
            return False
    return len(parts) == len(wanted)


class SubjectRouter:
    """The subject of each event: the template filled from its key, segments cleaned."""

    def __init__(self, template: KeyTemplate, *, keyspace: KeySpace) -> None:
        self.template = template
        self.keyspace = keyspace
        self.marker_subject = template.fill(()).decode("ascii")
        """Where snapshot markers go (every placeholder ``_``); with a fixed subject, everything."""
        self._routed = template.routed
        self._cache: dict[tuple[bytes, ...], str] = {}

    def subject_for(self, event: Event) -> str:
        """The subject of ``event``; SinkRejectedError naming its key and revision when the
        subject would be too long to publish."""
        if not self._routed or event.type is EventType.MARKER:
            return self.marker_subject
        segments = self.template.segments(event.key, keyspace=self.keyspace)
        subject = self._cache.get(segments)
        if subject is None:
            rendered = self.template.fill(segments, clean=clean_segment)
            if len(rendered) > MAX_SUBJECT_BYTES:
                raise SinkRejectedError(
                    f"nats: key {printable_key(event.key)!r} at revision {event.revision} "
                    f"(index {event.index}) gives a subject of {len(rendered)} bytes, over "
                    f"the {MAX_SUBJECT_BYTES} the sink publishes to; route by fewer or "
                    "shorter segments in BRIDGE_NATS__SUBJECT",
                    key=event.key,
                    revision=event.revision,
                    position=event.position,
                )
            subject = rendered.decode("ascii")
            if len(self._cache) < _CACHE_LIMIT:
                self._cache[segments] = subject
        return subject
