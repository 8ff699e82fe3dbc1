"""Settings come from BRIDGE_* variables; every problem is one line naming its variable."""

from pathlib import Path

import pytest

from bridge.errors import ConfigError
from config.settings import load_settings, variable_name


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(__import__("os").environ):
        if name.startswith("BRIDGE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no stray .env file


def test_defaults() -> None:
    settings = load_settings()
    assert settings.sinks == ["stdout"]
    assert settings.etcd.endpoints == ["http://127.0.0.1:2379"]
    assert settings.name == "default"


def test_comma_lists_and_nesting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_ETCD__ENDPOINTS", "http://a:2379, https://b:2379")
    monkeypatch.setenv("BRIDGE_SINKS", "file,stdout")
    monkeypatch.setenv("BRIDGE_FILE__PATH", "/tmp/out.jsonl")
    monkeypatch.setenv("BRIDGE_ETCD__PREFIX", "/registry/services/, /registry/pods/")
    settings = load_settings()
    assert settings.etcd.endpoints == ["http://a:2379", "https://b:2379"]
    assert settings.sinks == ["file", "stdout"]
    assert settings.etcd.keyspace.prefixes == (b"/registry/pods/", b"/registry/services/")


@pytest.mark.parametrize(
    ("prefixes", "accepted"), [("/a/,/c/", True), ("/a/,/leaders/", False), ("", False)]
)
def test_the_election_key_must_be_outside_every_prefix(
    monkeypatch: pytest.MonkeyPatch, prefixes: str, accepted: bool
) -> None:
    monkeypatch.setenv("BRIDGE_ETCD__PREFIX", prefixes)
    monkeypatch.setenv("BRIDGE_HA__ENABLED", "true")
    monkeypatch.setenv("BRIDGE_HA__KEY_PREFIX", "/leaders/")
    if accepted:
        assert load_settings().ha.enabled
    else:
        with pytest.raises(ConfigError, match="^BRIDGE_HA__KEY_PREFIX: the election key"):
            load_settings()


def test_dotenv_file_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("BRIDGE_NAME=from-dotenv\n")
    assert load_settings().name == "from-dotenv"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("BRIDGE_ETCD__ENDPOINTS", "127.0.0.1:2379"),
        ("BRIDGE_ETCD__ENDPOINTS", "http://host:notaport"),
        ("BRIDGE_ETCD__TIMEOUT", "-1"),
        ("BRIDGE_NAME", "has space"),
        ("BRIDGE_SINKS", "file,file"),
        ("BRIDGE_LOG__FORMAT", "xml"),
        ("BRIDGE_PUMP__QUEUE_DEPTH", "0"),
        ("BRIDGE_ETCD__CA_FILE", "/does/not/exist.pem"),
    ],
)
def test_each_bad_value_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    lines = str(caught.value).splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(variable + ": ")


def test_file_sink_needs_a_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_SINKS", "file")
    with pytest.raises(ConfigError, match="BRIDGE_FILE__PATH is required"):
        load_settings()


def test_variable_names_follow_the_nesting() -> None:
    assert variable_name(("etcd", "endpoints", 0)) == "BRIDGE_ETCD__ENDPOINTS"
    assert variable_name(("name",)) == "BRIDGE_NAME"
