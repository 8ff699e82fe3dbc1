"""BRIDGE_KAFKA__* settings: the pass-through properties, their secrecy, the topic template."""

import logging
import os
from pathlib import Path

import pytest

from bridge.app import configure
from bridge.errors import SinkUnavailableError
from config.errors import ConfigError
from config.keyspace import KeySpace
from config.settings import load_section
from sinks.kafka import KafkaSink
from sinks.kafka.settings import KafkaSettings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("BRIDGE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no stray .env file


def test_properties_from_nested_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_KAFKA__BOOTSTRAP_SERVERS", "k1:9092,k2:9092")
    monkeypatch.setenv("BRIDGE_KAFKA__PROPERTIES__SASL_PASSWORD", "hunter2-secret")
    monkeypatch.setenv("BRIDGE_KAFKA__PROPERTIES__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("BRIDGE_KAFKA__PROPERTIES__COMPRESSION_TYPE", "zstd")
    kafka = load_section("kafka", KafkaSettings)
    assert kafka.client_properties() == {
        "sasl.password": "hunter2-secret",
        "security.protocol": "SASL_SSL",
        "compression.type": "zstd",
    }


def test_properties_from_json_keep_their_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "BRIDGE_KAFKA__PROPERTIES", '{"ssl.ca.location": "/etc/ca.pem", "linger.ms": "20"}'
    )
    assert load_section("kafka", KafkaSettings).client_properties() == {
        "ssl.ca.location": "/etc/ca.pem",
        "linger.ms": "20",
    }


def test_no_property_value_is_ever_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_KAFKA__PROPERTIES__SASL_PASSWORD", "hunter2-secret")
    settings = load_section("kafka", KafkaSettings)
    for text in (repr(settings), str(settings), settings.model_dump_json()):
        assert "hunter2-secret" not in text
    assert "sasl.password" in repr(settings)


@pytest.mark.parametrize(
    "name", ["ENABLE_IDEMPOTENCE", "ACKS", "MESSAGE_TIMEOUT_MS", "TRANSACTIONAL_ID", "GROUP_ID"]
)
def test_properties_exactly_once_depends_on_are_refused(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.setenv(f"BRIDGE_KAFKA__PROPERTIES__{name}", "x")
    with pytest.raises(ConfigError) as refused:
        load_section("kafka", KafkaSettings)
    assert str(refused.value).startswith("BRIDGE_KAFKA__PROPERTIES: ")
    assert name.lower().replace("_", ".") in str(refused.value)


@pytest.mark.parametrize(
    ("topic", "problem"),
    [
        ("has space", "not a Kafka topic name"),
        ("etcd.{0}", "use {1} to {9} for key segments"),
        ("etcd.{name}", "use {1} to {9} for key segments"),
        ("etcd.{1", "use {1} to {9} for key segments"),
        ("etcd.{{x}}", "not a Kafka topic name"),
        ("x" * 250, "not a Kafka topic name"),
    ],
)
def test_bad_topics_are_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, topic: str, problem: str
) -> None:
    monkeypatch.setenv("BRIDGE_KAFKA__TOPIC", topic)
    with pytest.raises(ConfigError) as refused:
        load_section("kafka", KafkaSettings)
    assert str(refused.value).startswith("BRIDGE_KAFKA__TOPIC: ")
    assert problem in str(refused.value) and "\n" not in str(refused.value)


def test_checkpoint_topic_is_named_from_topic_and_pipeline() -> None:
    assert KafkaSettings(topic="events").checkpoint_topic_for("orders") == (
        "events.orders.checkpoint"
    )
    assert KafkaSettings(topic="etcd.{1}.{2}").checkpoint_topic_for("p") == "etcd._._.p.checkpoint"
    assert KafkaSettings(checkpoint_topic="mine").checkpoint_topic_for("p") == "mine"


def test_the_sink_needs_bootstrap_servers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_SINKS", "kafka")
    with pytest.raises(ConfigError, match="BRIDGE_KAFKA__BOOTSTRAP_SERVERS"):
        configure().build_sinks()


def test_a_refused_property_value_is_not_echoed() -> None:
    settings = KafkaSettings(
        bootstrap_servers="127.0.0.1:1",
        properties={"security.protocol": "hunter2-secret"},  # type: ignore[dict-item]
    )
    sink = KafkaSink(settings=settings, pipeline="p", keyspace=KeySpace.of([b"/"]))
    with pytest.raises(ConfigError) as refused:
        sink.open()
    message = str(refused.value)
    assert message.startswith("BRIDGE_KAFKA__PROPERTIES: ") and "security.protocol" in message
    assert "hunter2-secret" not in message


def test_librdkafka_log_lines_do_not_show_property_values(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = KafkaSettings(
        bootstrap_servers="127.0.0.1:1",
        timeout=0.3,
        properties={"sasl.mechanism": "hunter2-secret"},  # type: ignore[dict-item]
    )
    sink = KafkaSink(settings=settings, pipeline="p", keyspace=KeySpace.of([b"/"]))
    with caplog.at_level(logging.DEBUG), pytest.raises(SinkUnavailableError):
        sink.open()  # nothing listens there; librdkafka warns about the property meanwhile
    sink.close()
    warnings = [r.getMessage() for r in caplog.records if r.name == "sinks.kafka.librdkafka"]
    assert any("sasl.mechanism" in line for line in warnings), warnings
    assert not any("hunter2-secret" in r.getMessage() for r in caplog.records)
