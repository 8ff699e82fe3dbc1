"""The local durable log: one reader per process follows etcd into it, and every sink reads
it from its own durable position at its own pace (docs/journal.md).

- ``frames``: one chunk of events as a checksummed frame;
- ``segments``: the log on disk (``Journal``): recovery, appending, trimming, where a sink
  resumes;
- ``recorder``: the one thread that follows etcd into the log;
- ``reading``: one sink's reading of the log;
- ``changes``: a sink's change source with the log on, falling back to etcd where the log
  does not hold what the sink needs;
- ``inspection``: what ``etcd-bridge check`` and ``status`` say of the log, from its
  directory, read-only.

``recording`` runs the log for one term of the bridge's pipelines.
"""

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from bridge.health import PipelineHealth
from bridge.journal.changes import journal_changes
from bridge.journal.recorder import RECORDER, Recorder
from bridge.journal.segments import Journal
from bridge.ownership import Owner
from bridge.source import ChangeSourceFactory
from config.journal import JournalSettings

__all__ = ["RECORDER", "Journal", "recording"]


@contextmanager
def recording(
    settings: JournalSettings,
    *,
    identity: str,
    etcd: ChangeSourceFactory,
    catch_up: ChangeSourceFactory,
    health: PipelineHealth,
    shutdown_timeout: float,
    owner: Owner | None = None,
) -> Iterator[tuple[Journal, ChangeSourceFactory]]:
    """Open the log at ``settings.path`` and follow ``etcd`` into it (``health``: the
    reader's) until the block ends; give the log and the sinks' change source factory, which
    catches a sink up through ``catch_up`` where the log does not hold what it needs. ``identity``
    says what the log is of (the pipeline and its keys); ``owner``: this instance, named in
    the directory's lock (a second bridge on the same directory is refused naming it)."""
    journal = Journal(settings, identity=identity, owner=owner)
    journal.open()
    halt = threading.Event()
    recorder = Recorder(journal, source=etcd, stop=halt, health=health)
    thread = threading.Thread(target=recorder.run, name=RECORDER, daemon=True)
    thread.start()
    try:
        yield journal, journal_changes(journal, etcd=catch_up, recorder=health)
    finally:
        halt.set()
        recorder.close()
        thread.join(shutdown_timeout)
        journal.close()
