"""The watched keys: one or more prefixes, as sorted key ranges that do not overlap.

etcd watches one range per watcher, and the events of several watchers on a stream are not
ordered across watchers, so several prefixes cannot be watched separately without a merge
that waits on the quietest one. One watch over the range covering every prefix is ordered by
revision like any watch; the keys between the prefixes are dropped here before they are
numbered, so positions count only watched events, exactly as etcd numbers a single prefix's.
The snapshot does not need the covering range: it reads each prefix's own range in key
order, all at one pinned revision.
"""

from collections.abc import Iterable
from dataclasses import dataclass

_EVERYTHING = b"\0"
"""As a range's end: no upper bound. As its start: the lowest key etcd accepts."""


def prefix_range(prefix: bytes) -> tuple[bytes, bytes]:
    """The ``[key, range_end)`` of every key starting with ``prefix`` (all keys for b"")."""
    if not prefix:
        return _EVERYTHING, _EVERYTHING
    end = bytearray(prefix)
    for position in reversed(range(len(end))):
        if end[position] < 0xFF:
            end[position] += 1
            return prefix, bytes(end[: position + 1])
    return prefix, _EVERYTHING


@dataclass(frozen=True, slots=True)
class KeySpace:
    """The watched prefixes, sorted, none inside another; empty means the whole keyspace."""

    prefixes: tuple[bytes, ...]

    @classmethod
    def of(cls, prefixes: Iterable[bytes]) -> "KeySpace":
        """Normalize: a prefix inside another is dropped, and b"" (everything) wins."""
        kept: list[bytes] = []
        for prefix in sorted(set(prefixes)):
            if not prefix:
                return cls(())
            if not kept or not prefix.startswith(kept[-1]):
                kept.append(prefix)
        return cls(tuple(kept))

    @property
    def ranges(self) -> list[tuple[bytes, bytes]]:
        """One ``[key, range_end)`` per prefix, in key order."""
        return [prefix_range(prefix) for prefix in self.prefixes] or [prefix_range(b"")]

    @property
    def covering_range(self) -> tuple[bytes, bytes]:
        """The one range that holds every prefix (and, with several, the keys between)."""
        ranges = self.ranges
        return ranges[0][0], ranges[-1][1]

    @property
    def needs_filter(self) -> bool:
        """Whether the covering range holds keys outside the prefixes."""
        return len(self.prefixes) > 1

    def __contains__(self, key: bytes) -> bool:
        return not self.prefixes or key.startswith(self.prefixes)

    def relative(self, key: bytes) -> bytes:
        """``key`` without the watched prefix it starts with (unchanged if none)."""
        for prefix in self.prefixes:
            if key.startswith(prefix):
                return key[len(prefix) :]
        return key

    def describe(self) -> bytes:
        """The prefixes as configured, comma-separated: the key of snapshot markers."""
        return b",".join(self.prefixes)
