"""Encoding cost per record format: events/s turned into record bytes, in one process.

The events are typical watched updates: ``--keys`` distinct 50-byte keys under one prefix,
200-byte UTF-8 values with their 200-byte previous values (``prev_kv``), one change per
revision, ``BRIDGE_VALUES=bytes``. Every format that ``bridge.formats.build_format`` builds
is timed on the same events, interleaved round by round (the best round counts), so that the
machine's noise hits them alike: ``encode`` one event at a time (Kafka's structured records),
``encode_batch`` and ``encode_lines`` in batches of ``--batch`` (the Redis and NATS sinks;
the file and stdout sinks; the pump's default batch), and ``binary`` for a format with a
Kafka binary content mode. Baseline in the same run: the native format (the default,
``Event.to_json``), and the ratio of its rate to each row's, for a batch row the same
method's. This is the format's share of the bridge's work only: the sink's own cost per event
(and etcd's) is not in it, so a format's end-to-end cost is smaller than its ratio here
suggests.

    .venv/bin/python -m bench.encode [--events 100000] [--rounds 5] [--batch 2000]
"""

import argparse
import time
from collections.abc import Callable

from bridge.allocator import release_large_buffers
from bridge.events import Event, EventType, Op
from bridge.formats import FormatContext, build_format
from config.keyspace import KeySpace
from config.output import FormatName, OutputSettings

PREFIX = b"/registry/configmaps/default/"
KEY_BYTES = 50
VALUE_BYTES = 200


def typical_updates(count: int, *, keys: int) -> list[Event]:
    """``count`` updates of ``keys`` keys, revisions from 1000 on."""
    events = []
    for number in range(count):
        key = PREFIX + b"%0*d" % (KEY_BYTES - len(PREFIX), number % keys)
        revision = 1000 + number
        events.append(
            Event(
                revision=revision,
                index=0,
                type=EventType.PUT,
                op=Op.UPDATE,
                key=key,
                value=b"v%0*d" % (VALUE_BYTES - 1, revision),
                prev_value=b"p%0*d" % (VALUE_BYTES - 1, revision),
                mod_revision=revision,
                create_revision=10,
                version=number // keys + 2,
                lease=0,
                prev_mod_revision=revision - 1,
                prev_create_revision=10,
                prev_version=number // keys + 1,
            )
        )
    return events


Encoder = Callable[[list[Event]], object]
"""Encodes all the events given, one way."""


def one_by_one(encode: Callable[[Event], object]) -> Encoder:
    def run(events: list[Event]) -> None:
        for event in events:
            encode(event)

    return run


def in_batches(encode: Callable[[list[Event]], object], *, batch: int) -> Encoder:
    def run(events: list[Event]) -> None:
        for start in range(0, len(events), batch):
            encode(events[start : start + batch])

    return run


def encoders(context: FormatContext, *, batch: int) -> dict[str, Encoder]:
    """One encoder per row: each format's ``encode``, ``encode_batch`` and ``encode_lines``,
    and ``binary`` where it has one."""
    rows: dict[str, Encoder] = {}
    for name in FormatName:
        try:
            record_format = build_format(OutputSettings(format=name), context=context)
        except NotImplementedError:
            continue
        rows[name.value] = one_by_one(record_format.encode)
        rows[f"{name.value} batch"] = in_batches(record_format.encode_batch, batch=batch)
        rows[f"{name.value} lines"] = in_batches(record_format.encode_lines, batch=batch)
        binary = getattr(record_format, "binary", None)
        if binary is not None:
            rows[f"{name.value} binary"] = one_by_one(binary)
    return rows


def seconds_to_encode(encoder: Encoder, events: list[Event]) -> float:
    """CPU-seconds of this thread: time the machine gave to other processes is not in it."""
    started = time.thread_time()
    encoder(events)
    return time.thread_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--keys", type=int, default=1_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=2_000)
    arguments = parser.parse_args()
    # The allocator as the bridge sets it: with glibc's default trim threshold, a batch whose
    # records are all kept costs up to three times more, returning the heap's top to the
    # system after each batch and faulting it in again, which the bridge never does.
    release_large_buffers()

    context = FormatContext(pipeline="bench", cluster="etcd", keyspace=KeySpace.of([PREFIX]))
    events = typical_updates(arguments.events, keys=arguments.keys)
    rows = encoders(context, batch=arguments.batch)
    best = dict.fromkeys(rows, float("inf"))
    for _ in range(arguments.rounds):
        for name, encode in rows.items():
            best[name] = min(best[name], seconds_to_encode(encode, events))

    native = {
        suffix: arguments.events / best[FormatName.NATIVE.value + suffix]
        for suffix in ("", " batch", " lines")
    }
    print(
        f"{arguments.events} updates ({KEY_BYTES}-byte keys, {VALUE_BYTES}-byte values and "
        f"previous values), best of {arguments.rounds} rounds"
    )
    print("native / this: against native's encode, or its encode_batch (encode_lines) for a")
    print("batch (lines) row")
    print(f"{'format':<24}{'events/s':>12}{'us/event':>10}{'native / this':>15}")
    for name in rows:
        rate = arguments.events / best[name]
        suffix = next((end for end in (" batch", " lines") if name.endswith(end)), "")
        baseline = native[suffix]
        print(f"{name:<24}{rate:>12,.0f}{1e6 / rate:>10.2f}{baseline / rate:>15.2f}")


if __name__ == "__main__":
    main()
