"""The watched keys: one or more prefixes, as sorted key ranges that do not overlap.

etcd watches one range per watcher, and the events of several watchers on a stream are not
ordered across watchers, so several prefixes cannot be watched separately without a merge
that waits on the quietest one. One watch over the range covering every prefix is ordered by
revision like any watch; the keys between the prefixes are dropped here before they are
numbered, so positions count only watched events, exactly as etcd numbers a single prefix's.
The snapshot does not need the covering range: it reads each prefix's own range in key
order, all at one pinned revision.

Key filters (``BRIDGE_ETCD__INCLUDE`` / ``EXCLUDE``) narrow the watched keys the same way and
at the same place: a key is watched when it is under a prefix, matches an include pattern (if
any) and no exclude pattern, all judged on the key below its prefix. Dropping keys before
they are numbered is what keeps ``index`` deterministic, so positions stay valid across
restarts as long as the filters do not change.
"""

import fnmatch
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

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


def glob_pattern(patterns: Iterable[str]) -> "re.Pattern[bytes] | None":
    """One regular expression matching a key that matches any of the shell-style
    ``patterns`` (``*`` any bytes, ``/`` included; ``?`` one byte; ``[...]`` a set), or None
    for no patterns. Patterns are UTF-8; keys are matched as bytes, so binary keys match too."""
    alternatives = [fnmatch.translate(pattern).encode("utf-8") for pattern in patterns]
    return re.compile(b"|".join(alternatives), re.DOTALL) if alternatives else None


@dataclass(frozen=True, slots=True)
class KeySpace:
    """The watched prefixes, sorted, none inside another (empty means the whole keyspace),
    and the include / exclude patterns on the keys below them."""

    prefixes: tuple[bytes, ...]
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    _included: "re.Pattern[bytes] | None" = field(default=None, compare=False, repr=False)
    _excluded: "re.Pattern[bytes] | None" = field(default=None, compare=False, repr=False)

    @classmethod
    def of(
        cls, prefixes: Iterable[bytes], *, include: Iterable[str] = (), exclude: Iterable[str] = ()
    ) -> "KeySpace":
        """Normalize: a prefix inside another is dropped, and b"" (everything) wins."""
        kept: list[bytes] = []
        for prefix in sorted(set(prefixes)):
            if not prefix:
                kept = []
                break
            if not kept or not prefix.startswith(kept[-1]):
                kept.append(prefix)
        include, exclude = tuple(include), tuple(exclude)
        return cls(tuple(kept), include, exclude, glob_pattern(include), glob_pattern(exclude))

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
        """Whether the covering range, or a prefix's range, holds keys that are not watched."""
        return len(self.prefixes) > 1 or self.filtered

    @property
    def filtered(self) -> bool:
        """Whether include or exclude patterns narrow the keys under the prefixes."""
        return self._included is not None or self._excluded is not None

    def __contains__(self, key: bytes) -> bool:
        if self.prefixes and not key.startswith(self.prefixes):
            return False
        if not self.filtered:
            return True
        relative = self.relative(key)
        if self._included is not None and not self._included.match(relative):
            return False
        return self._excluded is None or not self._excluded.match(relative)

    def relative(self, key: bytes) -> bytes:
        """``key`` without the watched prefix it starts with (unchanged if none)."""
        for prefix in self.prefixes:
            if key.startswith(prefix):
                return key[len(prefix) :]
        return key

    def describe(self) -> bytes:
        """The prefixes as configured, comma-separated: the key of snapshot markers."""
        return b",".join(self.prefixes)
