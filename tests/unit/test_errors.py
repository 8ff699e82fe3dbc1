"""Errors carry their context and cause; the operator's line stays one line, the JSON log
line carries the context as fields, and the errors metric stays bounded."""

import json
import logging

from bridge.errors import EtcdUnavailableError, PositionAheadError, SinkRejectedError
from bridge.logs import JsonFormatter, error_fields
from bridge.metrics import REGISTRY, count_error


def caused_rejection() -> SinkRejectedError:
    try:
        try:
            raise ValueError("value too large\nsecond line of a long report")
        except ValueError as error:
            raise SinkRejectedError(
                "redis: the value of /p/\xff at revision 7 is too large",
                sink="redis",
                key=b"/p/\xff",
                revision=7,
            ) from error
    except SinkRejectedError as rejected:
        return rejected


def test_an_error_keeps_its_cause_and_says_one_line() -> None:
    error = caused_rejection()
    assert isinstance(error.__cause__, ValueError)
    assert "\n" not in str(error)
    assert error.fields == {"sink": "redis", "key": "/p/\\xff", "revision": 7}


def test_only_known_context_becomes_fields() -> None:
    assert EtcdUnavailableError("etcd: away").fields == {}
    ahead = PositionAheadError(sink="file", position=9, current=5, endpoint="http://e:2379")
    assert ahead.fields == {"sink": "file", "revision": 9, "endpoint": "http://e:2379"}


def test_the_json_line_carries_the_context_and_the_first_line_of_the_cause() -> None:
    error = caused_rejection()
    record = logging.LogRecord("bridge", logging.ERROR, __file__, 1, str(error), (), None)
    record.__dict__.update(error_fields(error))
    line = JsonFormatter().format(record)
    document = json.loads(line)
    assert "\n" not in line
    assert document["message"] == str(error)
    assert document["error"] == "SinkRejectedError"
    assert (document["sink"], document["key"], document["revision"]) == ("redis", "/p/\\xff", 7)
    assert document["cause"] == "ValueError: value too large"


def test_the_errors_metric_is_labelled_by_sink_and_class_only() -> None:
    error = caused_rejection()
    labels = {"sink": "metric-test", "kind": "SinkRejectedError"}
    before = REGISTRY.get_sample_value("etcd_bridge_errors_total", labels) or 0
    count_error(error, sink="metric-test")
    assert REGISTRY.get_sample_value("etcd_bridge_errors_total", labels) == before + 1
    family = next(f for f in REGISTRY.collect() if f.name == "etcd_bridge_errors")
    assert {name for sample in family.samples for name in sample.labels} == {"sink", "kind"}


def test_a_cause_the_message_already_quotes_is_not_repeated() -> None:
    cause = EtcdUnavailableError("etcd http://e:2379: UNAVAILABLE")
    try:
        raise EtcdUnavailableError(f"no etcd endpoint answered ({cause})") from cause
    except EtcdUnavailableError as error:
        assert error.__cause__ is cause
        assert "cause" not in error_fields(error)
