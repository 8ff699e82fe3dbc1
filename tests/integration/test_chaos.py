"""The chaos suite's shorter variants (issues 5 and 16), and a check that its check can fail.

``test_chaos_run`` is ``python -m tests.chaos`` scaled down: 3,000 operations, 10 SIGKILLs of
the active bridge, each server paused once, etcd and Redis restarted once; every sink must
then hold exactly etcd's history of the prefix. ``test_chaos_run_on_a_partitioned_cluster``
is ``--cluster 3 --partitions 2 --refusals 2`` scaled down further (about 40 s), and
``test_chaos_run_with_a_sink_down_across_compactions`` is ``--journal --sink-down`` scaled
down to seconds.
``test_the_check_counts_what_is_wrong`` feeds the comparison streams with a lost, a
repeated, a swapped and a wrong event, and
``test_the_check_accounts_for_refused_events_and_still_counts_what_is_wrong`` does the same
for events a sink refused (omitted or diverted), so that a run reporting zeros means
something.
"""

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

import pytest

from bridge.contract import History
from bridge.events import Event, EventType, Op, SnapshotReason, values_omitted
from config.refusal import RefusalPolicy
from tests.chaos.check import REFUSED_BYTES, SinkFigures, check_streams, refused
from tests.chaos.common import PREFIX
from tests.chaos.engine import report, run

SHORT_RUN_SINKS = ("file", "redis", "kafka")
"""The sinks of the suite's run; NATS and PostgreSQL run in ``scripts/chaos.sh --sinks``, with
their own pause, restart and kill -9 tests in the suite (a fourth and fifth server would add
about a minute here)."""


CLUSTER_RUN_SINKS = ("file", "redis", "nats")
CLUSTER_SEED = 70
SINK_DOWN_SEED = 79


@pytest.mark.slow
@pytest.mark.timeout(480)
def test_chaos_run(tmp_path: Path) -> None:
    figures = run(
        operations=3000,
        kills=10,
        pauses=1,
        seed=5,
        workdir=tmp_path,
        sinks=SHORT_RUN_SINKS,
        catch_up_timeout=90,
    )
    report(figures)  # the details, on stderr, shown when the test fails
    print(figures.line())
    assert (figures.operations, figures.kills) == (3000, 10), figures.line()
    assert (figures.pauses, figures.restarts) == (3, 2), figures.line()
    assert [sink.name for sink in figures.sinks] == list(SHORT_RUN_SINKS)
    assert all(sink.events > 3000 for sink in figures.sinks), figures.line()
    assert figures.ok, "\n".join([figures.line(), *figures.problems])


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_chaos_run_on_a_partitioned_cluster(tmp_path: Path) -> None:
    """``--cluster 3 --partitions 2 --refusals 2`` scaled down: three members in network
    namespaces, the member the active bridge watches cut off from the other two (it loses
    quorum), then the leader cut off, among two SIGKILLs, a restart of a member and of each
    server, and two values NATS refuses (diverted to its dead-letter file); file, Redis and
    NATS, whose servers start in a second. The link and flapping partitions, pauses and the
    other sinks run in ``scripts/chaos.sh``."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    figures = run(
        operations=1000,
        kills=2,
        pauses=0,
        seed=CLUSTER_SEED,
        workdir=tmp_path,
        sinks=CLUSTER_RUN_SINKS,
        catch_up_timeout=60,
        members=3,
        partitions=2,
        refusals=2,
    )
    report(figures)
    print(figures.line())
    assert (figures.operations, figures.kills, figures.partitions) == (1000, 2, 2), figures.line()
    assert figures.refused == 2, figures.line()
    assert [sink.name for sink in figures.sinks] == list(CLUSTER_RUN_SINKS)
    assert all(sink.events > 1000 for sink in figures.sinks), figures.line()
    assert figures.ok, "\n".join([figures.line(), *figures.problems])


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_chaos_run_with_a_sink_down_across_compactions(tmp_path: Path) -> None:
    """``--journal --sink-down 3`` scaled down: Redis's server stopped for 3 s while the
    writer goes on and etcd compacts past what Redis holds; Redis then gets every change from
    the log, with no resync. Of the seed's two SIGKILLs one comes before the outage and one
    after, so the second hands the pipeline to the instance whose log ends before the
    compactions, which must start it afresh (docs/journal.md; before that fix this run found
    2 resyncs). The minutes-long outage, with every fault and sink, runs in
    ``scripts/chaos.sh``."""
    figures = run(
        operations=3000,
        kills=2,
        pauses=0,
        seed=SINK_DOWN_SEED,
        workdir=tmp_path,
        sinks=("file", "redis"),
        catch_up_timeout=60,
        journal=True,
        sink_down=("redis", 3.0),
    )
    report(figures)
    print(figures.line())
    assert (figures.operations, figures.kills) == (3000, 2), figures.line()
    assert figures.compactions >= 1, figures.line()
    assert all(sink.events > 3000 for sink in figures.sinks), figures.line()
    assert figures.total("resyncs") == 0, figures.line()
    assert figures.ok, "\n".join([figures.line(), *figures.problems])


def _history() -> tuple[list[Event], list[Event]]:
    """etcd's history (as read back) and what a correct sink holds: a snapshot taken after
    the first changes, then the rest."""
    model = History(prefix=PREFIX, revision=1)
    before = model.random_changes(count=40, seed=1)
    snapshot = model.snapshot()
    after = model.random_changes(count=80, seed=2)
    return before + after, snapshot + after


def _figures(
    streams: dict[str, list[Event]],
    history: list[Event],
    *,
    policy: RefusalPolicy = RefusalPolicy.STOP,
    diverted: Sequence[Event] = (),
) -> tuple[int, ...]:
    figures = SinkFigures(name="test")
    check_streams(figures, streams=streams, history=history, policy=policy, diverted=diverted)
    return figures.lost, figures.duplicated, figures.out_of_order, figures.unexpected


def test_the_check_counts_what_is_wrong() -> None:
    history, held = _history()
    changes = [n for n, e in enumerate(held) if e.type is not EventType.MARKER and e.index == 0]
    first, second = changes[len(changes) // 2], changes[len(changes) // 2 + 1]
    assert _figures({"file": held}, history) == (0, 0, 0, 0)

    assert _figures({"file": held[:first] + held[first + 1 :]}, history) == (1, 0, 0, 0)
    repeated = held[: first + 1] + held[first:]
    assert _figures({"file": repeated}, history) == (0, 1, 0, 0)
    swapped = [*held[:first], held[second], *held[first + 1 : second], held[first]]
    assert _figures({"file": swapped + held[second + 1 :]}, history) == (0, 0, 1, 0)
    wrong = dataclasses.replace(held[first], prev_value=b"not what etcd had")
    assert _figures({"file": [*held[:first], wrong, *held[first + 1 :]]}, history) == (1, 0, 0, 1)

    # Kafka: markers are in every partition and count there; a change held by two partitions
    # is a duplicate.
    data = [e for e in held if e.type is not EventType.MARKER]
    home = {e: n % 2 for n, e in enumerate(data)}
    partitions = {
        f"p{p}": [e for e in held if e.type is EventType.MARKER or home[e] == p] for p in (0, 1)
    }
    assert _figures(partitions, history) == (0, 0, 0, 0)
    partitions["p1"] = [*partitions["p1"][:-1], data[0]]  # its last change lost, then a repeat
    assert _figures(partitions, history) == (1, 1, 1, 0)
    partitions["p0"] = partitions["p0"][1:]  # without its snapshot_begin
    assert _figures(partitions, history) == (2, 1, 1, 0)


def test_the_check_takes_a_resync_for_the_changes_it_replaces() -> None:
    """A resync replaces the changes between the sink's last one and its revision
    (docs/events.md): counted once however many streams hold its markers, with nothing lost.
    Its keys must be etcd's state at its revision, and the changes before and after it are
    still checked one by one."""
    model = History(prefix=PREFIX, revision=1)
    before = model.random_changes(count=20, seed=1)
    initial = model.snapshot()
    between = model.random_changes(count=20, seed=2)
    resync = model.snapshot(reason=SnapshotReason.COMPACTED)
    after = model.random_changes(count=20, seed=3)
    history = before + between + after
    keys = [event for event in resync if event.op is Op.SNAPSHOT]
    held = initial + between[:5] + resync + after

    def counts(streams: dict[str, list[Event]], history: list[Event] = history) -> tuple[int, ...]:
        """resyncs, lost, duplicated, out of order, unexpected"""
        figures = SinkFigures(name="test")
        check_streams(figures, streams=streams, history=history)
        found = (figures.lost, figures.duplicated, figures.out_of_order, figures.unexpected)
        return (figures.resyncs, *found)

    markers = [event for event in initial + resync if event.type is EventType.MARKER]
    assert counts({"p0": held, "p1": markers}) == (1, 0, 0, 0, 0)
    assert counts({"file": held}) == (1, 0, 0, 0, 0)
    assert counts({"file": [e for e in held if e is not keys[0]]}) == (1, 1, 0, 0, 0)
    stale = dataclasses.replace(keys[0], value=b"not what etcd had then")
    assert counts({"file": [stale if e is keys[0] else e for e in held]}) == (1, 0, 0, 0, 1)
    twice = initial + between[:5] + resync[:2] + resync[1:] + after
    assert counts({"file": twice}) == (1, 0, 1, 0, 0)
    assert counts({"file": [e for e in held if e is not between[2]]}) == (1, 1, 0, 0, 0)
    assert counts({"file": [e for e in held if e is not after[-1]]}) == (1, 1, 0, 0, 0)
    as_initial = [dataclasses.replace(e, reason=SnapshotReason.INITIAL) for e in resync]
    assert counts({"file": initial + between[:5] + as_initial + after})[4] > 0
    assert counts({"file": initial + after}) == (0, len(between), 0, 0, 0)


def test_the_check_accounts_for_refused_events_and_still_counts_what_is_wrong() -> None:
    """Two oversized values among the changes: held without their values (``omit_value``) or
    in the dead-letter file (``dead_letter``), each once; anything else is counted."""
    model = History(prefix=PREFIX, revision=1)
    before = model.random_changes(count=20, seed=1)
    snapshot = model.snapshot()
    after = model.random_changes(count=30, seed=2)
    after += model.put(PREFIX + b"big/1", b"r" * (REFUSED_BYTES + 1))
    after += model.random_changes(count=30, seed=3)
    after += model.put(PREFIX + b"big/2", b"r" * (REFUSED_BYTES + 1))
    after += model.random_changes(count=10, seed=4)
    history, big = before + after, [event for event in after if refused(event)]
    assert len(big) == 2

    omit = RefusalPolicy.OMIT_VALUE
    omitted = [values_omitted(e) if refused(e) else e for e in snapshot + after]
    assert _figures({"kafka": omitted}, history, policy=omit) == (0, 0, 0, 0)
    whole = snapshot + after  # a refused event held with its values: not what was refused
    assert _figures({"kafka": whole}, history, policy=omit) == (2, 0, 0, 2)
    without = [e for e in omitted if e.position != big[0].position]
    assert _figures({"kafka": without}, history, policy=omit) == (1, 0, 0, 0)

    dead = RefusalPolicy.DEAD_LETTER
    kept = [e for e in snapshot + after if not refused(e)]
    assert _figures({"nats": kept}, history, policy=dead, diverted=big) == (0, 0, 0, 0)
    assert _figures({"nats": kept}, history, policy=dead, diverted=big[1:]) == (1, 0, 0, 0)
    twice = [big[0], *big]
    assert _figures({"nats": kept}, history, policy=dead, diverted=twice) == (0, 1, 0, 0)
    assert _figures({"nats": kept}, history, policy=dead, diverted=big[::-1]) == (0, 0, 1, 0)
    also_in_stream = snapshot + after
    assert _figures({"nats": also_in_stream}, history, policy=dead, diverted=big) == (0, 2, 0, 2)
    stray = [*big, kept[-1]]  # an event that was not refused, diverted too
    assert _figures({"nats": kept}, history, policy=dead, diverted=stray) == (0, 1, 0, 1)
