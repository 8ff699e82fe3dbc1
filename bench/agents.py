"""The benchmarks' helper processes: ``python -m bench.agents <role> ...``.

Each role runs in its own process so that its Python work (and its GIL) never delays the
process it measures, and prints one JSON line, its result, when done:

- ``flood``: puts as fast as etcd takes them, ``--in-flight`` at a time (grpc.aio), over a
  key space that already exists, so every event carries a previous value for ``prev_kv``;
- ``paced``: puts at a fixed rate, each one's revision and acknowledgement time recorded;
- ``kafka-floor``: records produced at a fixed rate straight to the broker, each flushed,
  with their acknowledgement times: the broker's and consumer's share of a Kafka latency;
- ``watch``: a bare watcher: one raw gRPC ``Watch`` stream with ``prev_kv``, the same
  library and stubs the bridge uses and nothing else, recording when it saw each revision;
- ``consume``: a consumer of a sink (``tests.sinks.base.SinkReader.follow``), recording when it
  saw each change event;
- ``bare``: the sink's client library on its own (``tests.sinks.base.BareClient``) copying
  what a bridge wrote into a fresh destination, batch by batch; only the writes are timed
  (wall and CPU), not the reading of the records, which alternates with them.

Watchers and consumers print ``ready`` once listening and stop after the ``until <revision>
<timeout>`` line the benchmark sends on stdin. Their per-event records go to ``--out`` as JSON
(``revisions`` and ``times``, in the order seen).
"""

import argparse
import asyncio
import resource
import sys
import threading
import time
from array import array
from pathlib import Path
from typing import Any

import grpc
import orjson
from confluent_kafka import Producer
from pyetcd import etcdrpc

from bench.common import CHANGE_OPS, StopControl, key_name, value_of
from tests.fixtures.etcd import prefix_watch
from tests.sinks import destination_of
from tests.sinks.kafka import PARTITIONS


def _emit(document: dict[str, Any]) -> None:
    sys.stdout.buffer.write(orjson.dumps(document) + b"\n")
    sys.stdout.flush()


def _save(path: Path, revisions: "array[int]", times: "array[float]") -> None:
    path.write_bytes(orjson.dumps({"revisions": list(revisions), "times": list(times)}))


async def flood(
    *, endpoint: str, prefix: bytes, keys: int, value_bytes: int, in_flight: int, seconds: float
) -> dict[str, Any]:
    """Puts, ``in_flight`` outstanding, for ``seconds``; rate and last acknowledgement."""
    puts = 0
    first_revision, last_revision, last_ack = 0, 0, 0.0
    counter = iter(range(1 << 62))
    async with grpc.aio.insecure_channel(endpoint) as channel:
        stub = etcdrpc.KVStub(channel)
        started = time.monotonic()
        stop_at = started + seconds

        async def worker() -> None:
            nonlocal puts, first_revision, last_revision, last_ack
            while time.monotonic() < stop_at:
                number = next(counter)
                request = etcdrpc.PutRequest(
                    key=key_name(prefix, number % keys), value=value_of(number, size=value_bytes)
                )
                response = await stub.Put(request, timeout=30)
                now = time.monotonic()
                revision = int(response.header.revision)
                puts += 1
                last_ack = max(last_ack, now)
                last_revision = max(last_revision, revision)
                first_revision = min(first_revision or revision, revision)

        await asyncio.gather(*(worker() for _ in range(in_flight)))
    return {
        "puts": puts,
        "started": started,
        "last_ack": last_ack,
        "first_revision": first_revision,
        "last_revision": last_revision,
    }


async def paced(
    *, endpoint: str, prefix: bytes, keys: int, value_bytes: int, rate: float, seconds: float
) -> tuple[dict[str, Any], "array[int]", "array[float]"]:
    """``rate`` puts per second for ``seconds`` on a fixed schedule (a slow acknowledgement
    does not delay the next put); each put's revision and acknowledgement time."""
    revisions: array[int] = array("q")
    acks: array[float] = array("d")
    total = int(rate * seconds)
    async with grpc.aio.insecure_channel(endpoint) as channel:
        stub = etcdrpc.KVStub(channel)

        async def put(number: int) -> None:
            request = etcdrpc.PutRequest(
                key=key_name(prefix, number % keys), value=value_of(number, size=value_bytes)
            )
            response = await stub.Put(request, timeout=30)
            acks.append(time.monotonic())
            revisions.append(int(response.header.revision))

        tasks: set[asyncio.Task[None]] = set()
        started = time.monotonic()
        for number in range(total):
            delay = started + number / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(put(number))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)
        finished = time.monotonic()
    summary = {
        "puts": len(revisions),
        "started": started,
        "seconds": finished - started,
        "last_ack": max(acks),
        "last_revision": max(revisions),
    }
    return summary, revisions, acks


def kafka_floor(
    *, bootstrap: str, topic: str, rate: float, seconds: float, partitions: int = PARTITIONS
) -> tuple[dict[str, Any], "array[int]", "array[float]"]:
    """The broker's own latency floor: records shaped like the bridge's (a revision header,
    ~400-byte value) produced one at a time at ``rate`` with the bridge's producer settings
    (idempotent, acks=all), each flushed; record ``n`` stands for revision ``n``. Its time is
    taken just before the produce, so the floor includes the produce round trip that the
    bridge's figure includes too (its clock starts at the put's acknowledgement)."""
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "delivery.report.only.error": True,
        }
    )
    revisions: array[int] = array("q")
    acks: array[float] = array("d")
    total = int(rate * seconds)
    value = b"x" * 400
    started = time.monotonic()
    for number in range(1, total + 1):
        delay = started + number / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        headers: list[tuple[str, str | bytes | None]] = [
            ("revision", b"%d" % number),
            ("index", b"0"),
            ("op", b"update"),
        ]
        acks.append(time.monotonic())  # the clock starts before the produce, as at a put's ack
        producer.produce(
            topic, value=value, key=b"k%d" % number, partition=number % partitions, headers=headers
        )
        producer.flush(10)
        revisions.append(number)
    summary = {"puts": total, "started": started, "seconds": time.monotonic() - started}
    return {**summary, "last_ack": acks[-1], "last_revision": total}, revisions, acks


def watch(*, endpoint: str, prefix: bytes, start_revision: int, out: Path) -> dict[str, Any]:
    """A bare watcher: the raw stream, prev_kv on, one timestamp per response."""
    revisions: array[int] = array("q")
    times: array[float] = array("d")
    control = StopControl()
    highest = 0
    distinct: set[int] = set()
    with (
        grpc.insecure_channel(endpoint, [("grpc.max_receive_message_length", -1)]) as channel,
        prefix_watch(channel, prefix=prefix, start_revision=start_revision) as call,
    ):

        def cancel_when_done() -> None:  # the stream may be quiet once the target is reached
            control.arrived.wait()
            while not control.done(highest, len(distinct)) and call.is_active():
                time.sleep(0.01)
            call.cancel()

        threading.Thread(target=cancel_when_done, daemon=True).start()
        try:
            for response in call:
                now = time.monotonic()
                if response.created:
                    print("ready", flush=True)
                    continue
                for event in response.events:
                    revisions.append(event.kv.mod_revision)
                    times.append(now)
                    distinct.add(event.kv.mod_revision)
                if response.events:
                    highest = max(highest, response.events[-1].kv.mod_revision)
                if control.done(highest, len(distinct)):
                    break
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.CANCELLED:
                raise
    _save(out, revisions, times)
    return {"events": len(revisions), "highest": highest}


def consume(*, config: dict[str, Any], out: Path) -> dict[str, Any]:
    """Follow a sink; one timestamp per batch of records read."""
    reader = destination_of(config).reader()
    revisions: array[int] = array("q")
    times: array[float] = array("d")
    control = StopControl()
    highest = 0
    records = 0
    reader.follow(timeout=0.01)  # connects (and assigns the partitions) before saying ready
    print("ready", flush=True)
    distinct: set[int] = set()
    try:
        while not control.done(highest, len(distinct)):
            seen = reader.follow(timeout=0.05)
            now = time.monotonic()
            records += len(seen)
            for revision, op in seen:
                if op in CHANGE_OPS:
                    revisions.append(revision)
                    times.append(now)
                    distinct.add(revision)
                    highest = max(highest, revision)
    finally:
        reader.close()
    _save(out, revisions, times)
    return {"events": len(revisions), "records": records, "highest": highest}


def bare(
    *, source: dict[str, Any], target: dict[str, Any], pipeline: str, from_revision: int, batch: int
) -> dict[str, Any]:
    """Copy the source's records into the target with the bare client; the seconds and CPU
    seconds its writes took, summed over the batches."""
    client = destination_of(target).bare(
        destination_of(source), pipeline=pipeline, from_revision=from_revision
    )
    records, seconds, cpu = 0, 0.0, 0.0
    try:
        for records_batch in client.batches(batch):
            cpu_before, started = _cpu_seconds(), time.monotonic()
            client.write(records_batch)
            seconds += time.monotonic() - started
            cpu += _cpu_seconds() - cpu_before
            records += len(records_batch)
    finally:
        client.close()
    return {"records": records, "seconds": seconds, "cpu_seconds": cpu}


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.agents")
    roles = parser.add_subparsers(dest="role", required=True)
    for name in ("flood", "paced"):
        role = roles.add_parser(name)
        role.add_argument("--endpoint", required=True)
        role.add_argument("--prefix", required=True)
        role.add_argument("--keys", type=int, required=True)
        role.add_argument("--value-bytes", type=int, default=100)
        role.add_argument("--seconds", type=float, required=True)
    roles.choices["flood"].add_argument("--in-flight", type=int, default=64)
    roles.choices["paced"].add_argument("--rate", type=float, required=True)
    roles.choices["paced"].add_argument("--out", type=Path, required=True)
    role = roles.add_parser("kafka-floor")
    role.add_argument("--bootstrap", required=True)
    role.add_argument("--topic", required=True)
    role.add_argument("--rate", type=float, required=True)
    role.add_argument("--seconds", type=float, required=True)
    role.add_argument("--out", type=Path, required=True)
    role = roles.add_parser("watch")
    role.add_argument("--endpoint", required=True)
    role.add_argument("--prefix", required=True)
    role.add_argument("--start-revision", type=int, required=True)
    role.add_argument("--out", type=Path, required=True)
    role = roles.add_parser("consume")
    role.add_argument("--config", required=True, help="the sink's reader config, JSON")
    role.add_argument("--out", type=Path, required=True)
    role = roles.add_parser("bare")
    role.add_argument("--source", required=True, help="the bridge's destination config, JSON")
    role.add_argument("--target", required=True, help="a fresh destination config, JSON")
    role.add_argument("--pipeline", required=True)
    role.add_argument("--from-revision", type=int, default=0)
    role.add_argument("--batch", type=int, required=True)
    arguments = parser.parse_args(argv)

    if arguments.role == "flood":
        result = asyncio.run(
            flood(
                endpoint=arguments.endpoint,
                prefix=arguments.prefix.encode(),
                keys=arguments.keys,
                value_bytes=arguments.value_bytes,
                in_flight=arguments.in_flight,
                seconds=arguments.seconds,
            )
        )
    elif arguments.role == "paced":
        result, revisions, acks = asyncio.run(
            paced(
                endpoint=arguments.endpoint,
                prefix=arguments.prefix.encode(),
                keys=arguments.keys,
                value_bytes=arguments.value_bytes,
                rate=arguments.rate,
                seconds=arguments.seconds,
            )
        )
        _save(arguments.out, revisions, acks)
    elif arguments.role == "kafka-floor":
        result, revisions, acks = kafka_floor(
            bootstrap=arguments.bootstrap,
            topic=arguments.topic,
            rate=arguments.rate,
            seconds=arguments.seconds,
        )
        _save(arguments.out, revisions, acks)
    elif arguments.role == "watch":
        result = watch(
            endpoint=arguments.endpoint,
            prefix=arguments.prefix.encode(),
            start_revision=arguments.start_revision,
            out=arguments.out,
        )
    elif arguments.role == "bare":
        result = bare(
            source=orjson.loads(arguments.source),
            target=orjson.loads(arguments.target),
            pipeline=arguments.pipeline,
            from_revision=arguments.from_revision,
            batch=arguments.batch,
        )
    else:
        result = consume(config=orjson.loads(arguments.config), out=arguments.out)
    _emit(result)


if __name__ == "__main__":
    main()
