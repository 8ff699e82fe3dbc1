"""What ``etcd-bridge check`` and ``etcd-bridge status`` say of the local log
(``BRIDGE_JOURNAL__PATH``), read from its directory alone.

Both commands run beside a running bridge as well as without one, so nothing here writes to
the directory, creates it or holds its lock: the log is surveyed read-only
(``Journal.survey``) and the lock is only asked who holds it (``bridge.ownership``). A
problem is one line naming the setting to change, as everywhere in ``check``.

A sink's distance in the log is what the running bridge exports as
``etcd_bridge_journal_behind_bytes``, worked out from the sink's durable tail the way the
bridge would place it (``Journal.start_for``): the log's bytes from there to its end. A sink
the log does not continue (behind its start, or a fresh log) catches up from etcd first.
"""

import errno
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

from bridge.events import Event
from bridge.journal.segments import LOCK_FILE, Journal, held_by_another
from bridge.ownership import lock_holder
from config.journal import JournalSettings


def check(settings: JournalSettings, *, identity: str) -> tuple[list[str], list[str]]:
    """Whether the log's directory is usable by a bridge starting now: it exists or can be
    created, it is writable, no other live bridge holds it, and its disk can hold the
    budget. Returns (what is fine, one line per problem)."""
    directory = _directory(settings)
    existing = _nearest_existing(directory)
    if not existing.is_dir():
        return [], [f"BRIDGE_JOURNAL__PATH: {existing} is not a directory"]
    if existing != directory and not os.access(existing, os.W_OK | os.X_OK):
        return [], [f"BRIDGE_JOURNAL__PATH: cannot create {directory}: {existing} is not writable"]
    problems: list[str] = []
    journal = Journal(settings, identity=identity)
    held, foreign = 0, 0
    if existing == directory:
        try:
            with tempfile.TemporaryFile(dir=directory):
                pass
            foreign = journal.survey()
        except OSError as error:
            return [], [f"BRIDGE_JOURNAL__PATH: {directory} is not usable ({_reason(error)})"]
        held = journal.size
        holder = lock_holder(directory / LOCK_FILE)
        if holder is not None:
            problems.append(str(held_by_another(directory, holder.owner)))
    free = shutil.disk_usage(existing).free
    if free + held < settings.max_bytes:
        problems.append(
            f"BRIDGE_JOURNAL__MAX_BYTES: {_size(settings.max_bytes)}, but the disk under "
            f"{directory} has {_size(free)} free: it would fill before the budget trims the "
            "log, and hold every sink; lower the budget or give the log more room"
        )
    state = "to be created" if existing != directory else f"holds {_size(held)}"
    others = f"; {foreign} segment files of another log (dropped at start)" if foreign else ""
    fine = [
        f"journal {directory} is usable: {state} of its {_size(settings.max_bytes)} budget, "
        f"{_size(free)} free on its disk{others}"
    ]
    return ([] if problems else fine), problems


def status(
    settings: JournalSettings, *, identity: str, tails: Mapping[str, Event | None]
) -> tuple[list[str], list[str]]:
    """The log's bytes and span of revisions, and how far each sink of ``tails`` (its
    durable tail) is behind in it. Returns (lines to print, one line per problem)."""
    directory = _directory(settings)
    if not directory.is_dir():
        return [f"journal {directory}: none yet (a bridge creates it at start)"], []
    journal = Journal(settings, identity=identity)
    try:
        journal.survey()
        first, last = journal.revisions
        end, _synced = journal.progress()
        starts = {name: journal.start_for(tail) for name, tail in tails.items()}
    except OSError as error:
        return [], [f"BRIDGE_JOURNAL__PATH: cannot read {directory} ({_reason(error)})"]
    span = f"revisions {first}..{last}" if last else "no events yet"
    lines = [
        f"journal {directory}: {_size(journal.size)} of {_size(settings.max_bytes)}, {span}",
    ]
    rows = [("SINK", "BEHIND IN THE JOURNAL")]
    for name, start in starts.items():
        tail = tails[name]
        if start is None:
            behind = "not in it: catches up from etcd first"
        else:
            behind = _size(end - start.offset)
            if tail is not None:
                behind += f" ({max(0, last - tail.revision)} revisions)"
        rows.append((name, behind))
    width = max(len(name) for name, _behind in rows)
    lines += [f"  {name.ljust(width)}  {behind}" for name, behind in rows]
    return lines, []


def _directory(settings: JournalSettings) -> Path:
    if settings.path is None:
        raise ValueError("the journal is off (BRIDGE_JOURNAL__PATH unset)")
    return settings.path


def _nearest_existing(path: Path) -> Path:
    """``path`` itself, or the closest of its parents that exists."""
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _reason(error: OSError) -> str:
    """An ``OSError``'s reason alone, without the path that the line already names."""
    return error.strerror or errno.errorcode.get(error.errno or 0, str(error))


def _size(count: float) -> str:
    """Bytes in the largest binary unit that keeps a number of at least 1."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TiB"
