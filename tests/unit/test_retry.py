"""The one retry loop: what it retries (errors that say ``retryable``), what it lets through,
how it stops, and that progress resets its backoff."""

import threading
from collections.abc import Iterator

import pytest

from bridge.errors import (
    BridgeError,
    EtcdUnavailableError,
    NotLeaderError,
    SinkRejectedError,
    SinkUnavailableError,
)
from bridge.retry import Backoff, Retry


def quick(stop: threading.Event | None = None) -> Retry:
    return Retry(Backoff(initial=0.001, maximum=0.001), stop=stop or threading.Event())


def test_retryable_errors_are_retried_and_reported_then_the_result_returned() -> None:
    outcomes: list[BridgeError | str] = [
        SinkUnavailableError("down"),
        EtcdUnavailableError("away"),
        "done",
    ]
    reported: list[BridgeError] = []

    def operation() -> str:
        outcome = outcomes.pop(0)
        if isinstance(outcome, BridgeError):
            raise outcome
        return outcome

    retry = quick()
    assert retry.call(operation, on_error=reported.append) == "done"
    assert [type(error) for error in reported] == [SinkUnavailableError, EtcdUnavailableError]
    assert retry.attempts == 0, "a success resets the backoff"


@pytest.mark.parametrize("fatal", [SinkRejectedError("refused"), NotLeaderError("lost")])
def test_a_fatal_error_goes_through_at_once(fatal: BridgeError) -> None:
    reported: list[BridgeError] = []

    def operation() -> None:
        raise fatal

    with pytest.raises(type(fatal)) as raised:
        quick().call(operation, on_error=reported.append)
    assert raised.value is fatal and reported == []


def test_stopping_ends_the_wait_and_the_retries() -> None:
    """``stop`` set while an error is reported: no second attempt, however long the backoff."""
    stop = threading.Event()
    calls: list[int] = []

    def operation() -> None:
        calls.append(1)
        raise SinkUnavailableError("down")

    retry = Retry(Backoff(initial=60, maximum=60), stop=stop)
    assert retry.call(operation, on_error=lambda _error: stop.set()) is None
    assert calls == [1]


def test_iterate_restarts_after_a_retryable_error_and_each_item_resets_the_backoff() -> None:
    attempts: list[int] = []
    seen_attempts: list[int] = []
    retry = quick()

    def operation() -> Iterator[int]:
        attempts.append(len(attempts))
        if len(attempts) == 1:
            raise EtcdUnavailableError("away")
        seen_attempts.append(retry.attempts)
        yield from (1, 2)
        if len(attempts) == 2:
            raise EtcdUnavailableError("away again")

    assert list(retry.iterate(operation, on_error=lambda _error: None)) == [1, 2, 1, 2]
    assert len(attempts) == 3
    assert seen_attempts == [1, 1], "one failure since the last item, each time"
