"""Routing by key segment: one template language for every sink that names a destination per key.

``{n}`` (1 to 9) is the n-th ``/``-separated segment of the key below the watched prefix it is
under (leading slashes ignored), so ``etcd.{1}`` sends ``<prefix>billing/limits`` to
``etcd.billing``; a missing or empty segment renders as ``_``; ``{{`` and ``}}`` are literal
braces. Kafka topics, Redis streams and any future sink (a NATS subject...) use this one module,
so an operator learns one dialect. What a destination name may hold differs per system: each
sink passes its own ``clean`` for the segments (Kafka maps characters a topic cannot hold to
``_``; Redis keeps the bytes) and checks the literal parts itself.
"""

import re
from collections.abc import Callable
from dataclasses import dataclass

from config.keyspace import KeySpace

_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
MISSING_SEGMENT = b"_"
"""What a segment the key does not have renders as."""


def _keep(segment: bytes) -> bytes:
    return segment


@dataclass(frozen=True, slots=True)
class KeyTemplate:
    """A fixed name, or a template routing each key by its leading segments."""

    source: str
    parts: tuple[bytes | int, ...]

    @classmethod
    def parse(cls, template: str) -> "KeyTemplate":
        """Parse ``template``; ValueError saying what is wrong and where (the caller's settings
        model turns it into one line naming its variable)."""
        parts: list[bytes | int] = []
        literal = ""
        position = 0
        for match in _TOKEN.finditer(template):
            literal += template[position : match.start()]
            position = match.end()
            token = match.group(0)
            if token in ("{{", "}}"):
                literal += token[0]
                continue
            field = match.group(1)
            if field is None or not re.fullmatch(r"[1-9]", field):
                raise ValueError(
                    f"{token!r} at offset {match.start()}: use {{1}} to {{9}} for key segments "
                    "and {{ or }} for literal braces"
                )
            if literal:
                parts.append(literal.encode("utf-8"))
                literal = ""
            parts.append(int(field))
        literal += template[position:]
        if literal:
            parts.append(literal.encode("utf-8"))
        if not parts:
            raise ValueError("the name is empty")
        return cls(source=template, parts=tuple(parts))

    @property
    def routed(self) -> bool:
        """True when the name depends on the key (the template has a placeholder)."""
        return any(isinstance(part, int) for part in self.parts)

    @property
    def deepest(self) -> int:
        """The highest segment number used: how many segments of a key decide its name."""
        return max((part for part in self.parts if isinstance(part, int)), default=0)

    @property
    def name(self) -> bytes:
        """The name of a template without placeholders."""
        if self.routed:
            raise ValueError("a routing template has no single name")
        return self.fill(())

    def segments(self, key: bytes, *, keyspace: KeySpace) -> tuple[bytes, ...]:
        """The segments of ``key`` (under one of the watched prefixes) that decide its name:
        a sink may cache names by them."""
        deepest = self.deepest
        relative = keyspace.relative(key).lstrip(b"/")
        return tuple(relative.split(b"/", deepest)[:deepest])

    def fill(
        self, segments: tuple[bytes, ...], *, clean: Callable[[bytes], bytes] = _keep
    ) -> bytes:
        """The name for these segments, each passed through ``clean`` first; a missing or
        empty one (after cleaning) is ``MISSING_SEGMENT``. ``fill(())`` is the template with
        every placeholder blank, e.g. to derive a fixed companion name from it."""
        rendered = []
        for part in self.parts:
            if isinstance(part, bytes):
                rendered.append(part)
                continue
            segment = clean(segments[part - 1]) if part <= len(segments) else b""
            rendered.append(segment or MISSING_SEGMENT)
        return b"".join(rendered)

    def render(
        self, key: bytes, *, keyspace: KeySpace, clean: Callable[[bytes], bytes] = _keep
    ) -> bytes:
        """The name of ``key``."""
        return self.fill(self.segments(key, keyspace=keyspace), clean=clean)
