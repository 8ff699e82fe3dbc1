"""The Kafka sink across crashes and a frozen broker: each change still lands exactly once.

The kill test runs the sink in a child process (``python -m tests.fixtures.kafka``, a pump
writing ``kafka_history``: several thousand changes with transactions of up to 40 keys, in
batches of 40 events) and SIGKILLs it at random moments: while it opens, produces or flushes. The
pause test SIGSTOPs the broker longer than the producer's request timeout, so that requests
time out, the flush reports the broker unavailable and librdkafka retries the same batches:
the idempotent producer must not let a retried batch land twice.
"""

import random
import sys
import threading
from pathlib import Path

from bridge.contract import KEYSPACE, after, batches
from bridge.errors import SinkUnavailableError
from bridge.events import Event
from bridge.retry import Backoff
from sinks.kafka import KafkaSink
from sinks.kafka.settings import KafkaSettings
from tests.fixtures.kafka import KafkaBroker, KafkaFactory, check_topic, kafka_history, read_topic
from tests.fixtures.processes import ManagedProcess, wait_for


def lines(log: Path, word: str) -> int:
    """How many lines of the driver's output start with ``word``."""
    if not log.exists():
        return 0
    return sum(line.startswith(word) for line in log.read_text().splitlines())


def test_kill_9_at_random_moments_leaves_each_change_once(
    kafka: KafkaBroker, topic: str, tmp_path: Path
) -> None:
    seed, changes, partitions = 11, 7200, 4
    history = kafka_history(seed=seed, changes=changes)
    assert sum(e.type.value != "MARKER" for e in history) > 12000, "every kill lands mid-stream"
    snapshot = history[0].revision
    assert max(e.index for e in history if e.revision > snapshot) > 30, "multi-key transactions"
    command = [
        sys.executable,
        "-m",
        "tests.fixtures.kafka",
        f"--bootstrap={kafka.bootstrap}",
        f"--topic={topic}",
        "--pipeline=crashy",
        f"--seed={seed}",
        f"--changes={changes}",
        f"--partitions={partitions}",
        "--batch=40",
        "--tombstones",
    ]
    chaos = random.Random(5)  # noqa: S311 - reproducible chaos, not security
    for round_number in range(7):
        log = tmp_path / f"driver-{round_number}.log"
        driver = ManagedProcess(command=command, log_path=log)
        driver.start()
        try:
            # Right after open (0 flushes), or after a random number of flushes: the child is
            # then producing or flushing the next batch, or writing its checkpoint.
            target = chaos.choice([0, 1, 3, 8, 15, 30])
            wait_for(
                lambda: lines(log, "opened") and lines(log, "flushed") >= target,  # noqa: B023
                timeout=60,
                what=f"{target} flushes in round {round_number}",
            )
            assert not lines(log, "done"), "the history ran out before the kills did"
            driver.kill()
        finally:
            driver.stop()
    log = tmp_path / "driver-final.log"
    driver = ManagedProcess(command=command, log_path=log)
    driver.start()
    try:
        wait_for(lambda: lines(log, "done"), timeout=120, what="the final run")
        assert driver.process is not None and driver.process.wait(10) == 0
    finally:
        driver.stop()
    check_topic(  # what the kills left behind, and the final run delivered: each change once
        read_topic(kafka.bootstrap, topic),
        history,
        partitions=partitions,
        pipeline="crashy",
        tombstones=True,
    )


def test_broker_paused_mid_stream_loses_and_duplicates_nothing(
    kafka_factory: KafkaFactory, topic: str
) -> None:
    broker = kafka_factory.start()
    history = kafka_history(seed=12, changes=4500)
    settings = KafkaSettings(
        bootstrap_servers=broker.bootstrap,
        topic=topic,
        partitions=3,
        flush_timeout=1.0,
        timeout=2.0,
        # Requests time out well inside the pause, so librdkafka retries them on resume.
        properties={"socket.timeout.ms": "700", "request.timeout.ms": "700"},  # type: ignore[dict-item]
    )
    sink = KafkaSink(settings=settings, pipeline="paused", keyspace=KEYSPACE)
    flushed: list[Event] = []
    unavailable: list[str] = []
    failure: list[BaseException] = []
    paused = threading.Event()

    def pump() -> None:
        """What bridge.pump does with a sink: reopen on SinkUnavailableError, with backoff."""
        backoff = Backoff(initial=0.05, maximum=0.5)
        try:
            while True:
                try:
                    tail = sink.open()
                    for batch in batches(after(history, tail), sizes=(60,)):
                        if len(flushed) == 20 and not paused.is_set():
                            # Freeze the broker with this batch's requests on their way to it.
                            broker.pause()
                            paused.set()
                        sink.write(batch)
                        sink.flush()
                        flushed.append(batch[-1])
                    return
                except SinkUnavailableError as error:
                    unavailable.append(str(error))
                    sink.close()
                    backoff.wait(threading.Event())
        except BaseException as error:  # noqa: BLE001 - re-raised by the test thread
            failure.append(error)
        finally:
            sink.close()

    writer = threading.Thread(target=pump, name="pump")
    writer.start()
    try:
        wait_for(paused.is_set, timeout=30, what="the stream to flow, then the pause")
        wait_for(lambda: len(unavailable) >= 3, timeout=30, what="reopen attempts while paused")
        assert len(flushed) == 20, "nothing is reported flushed while the broker is frozen"
        assert "not acknowledged" in unavailable[0]
    finally:
        broker.resume()
    writer.join(120)
    assert not writer.is_alive() and not failure, failure
    assert flushed[-1] == history[-1]
    check_topic(read_topic(broker.bootstrap, topic), history, partitions=3, pipeline="paused")
