"""Settings come from BRIDGE_* variables; every problem is one line naming its variable."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bridge import plugins
from bridge.app import configure, describe_settings
from config.errors import ConfigError
from config.refusal import RefusalPolicy
from config.settings import load_settings, variable_name
from sinks.file import FileSettings
from sinks.stdout.sink import StdoutSettings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("BRIDGE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no stray .env file


def test_defaults() -> None:
    settings = load_settings()
    assert settings.sinks == ["stdout"]
    assert settings.etcd.endpoints == ["http://127.0.0.1:2379"]
    assert settings.name == "default"


@pytest.mark.parametrize(
    ("variables", "depth", "queue_bytes"),
    [
        ({}, 1, 1024 * 1024),
        ({"BRIDGE_PUMP__QUEUE_DEPTH": "8"}, 8, 1024 * 1024),
        ({"BRIDGE_PUMP__QUEUE_BYTES": "9000000"}, 1, 9_000_000),
    ],
)
def test_a_sink_reading_the_log_has_a_small_queue_unless_one_was_set(
    monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], depth: int, queue_bytes: int
) -> None:
    """The log holds what a sink has not taken; a queue the user set, even to the default,
    is theirs."""
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    pump = load_settings().pump
    reading_the_log = pump.reading_the_log()
    assert (reading_the_log.queue_depth, reading_the_log.queue_bytes) == (depth, queue_bytes)
    assert reading_the_log.batch_events == pump.batch_events
    assert reading_the_log.batch_bytes == pump.batch_bytes


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


def test_a_sink_reads_its_own_section(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BRIDGE_SINKS", "file,stdout")
    monkeypatch.setenv("BRIDGE_FILE__PATH", str(tmp_path / "out.jsonl"))
    monkeypatch.setenv("BRIDGE_FILE__FSYNC", "false")
    monkeypatch.setenv("BRIDGE_STDOUT__CHECKPOINT_DIR", str(tmp_path / "checkpoints"))
    configuration = configure()
    (file_name, file_settings), (stdout_name, stdout_settings) = configuration.sinks
    assert (file_name, stdout_name) == ("file", "stdout")
    assert isinstance(file_settings, FileSettings) and isinstance(stdout_settings, StdoutSettings)
    assert (file_settings.path, file_settings.fsync) == (tmp_path / "out.jsonl", False)
    assert stdout_settings.checkpoint_dir == tmp_path / "checkpoints"
    assert [sink.name for sink in configuration.build_sinks()] == ["file", "stdout"]


def assert_one_line_refusal(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    *,
    sinks: str,
    variables: dict[str, str],
    message: str,
) -> None:
    """``configure`` with the file and sqlite sinks' paths set, ``sinks`` selected and
    ``variables`` set, refuses with one line starting with ``message``."""
    monkeypatch.setenv("BRIDGE_SINKS", sinks)
    monkeypatch.setenv("BRIDGE_FILE__PATH", str(tmp_path / "out.jsonl"))
    monkeypatch.setenv("BRIDGE_SQLITE__PATH", str(tmp_path / "out.db"))
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        configure()
    assert str(caught.value).startswith(message)
    assert len(str(caught.value).splitlines()) == 1


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        (
            {"BRIDGE_FILE__FORMAT": "xml"},
            "BRIDGE_FILE__FORMAT: Input should be 'native', 'debezium' or 'cloudevents'",
        ),
        (
            {"BRIDGE_SINKS": "sqlite", "BRIDGE_SQLITE__FORMAT": "debezium"},
            "BRIDGE_SQLITE__FORMAT: the sqlite sink does not write debezium records "
            "(it writes: native)",
        ),
        ({"BRIDGE_VALUES": "yaml"}, "BRIDGE_VALUES: Input should be 'bytes' or 'json'"),
        ({"BRIDGE_CLUSTER": "a b"}, "BRIDGE_CLUSTER: use letters, digits"),
    ],
)
def test_output_settings_are_checked_per_sink(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, variables: dict[str, str], message: str
) -> None:
    """Every sink's section has FORMAT, a third party's too; one it cannot write is refused
    with one line naming the variable."""
    assert_one_line_refusal(
        monkeypatch, tmp_path, sinks="file", variables=variables, message=message
    )


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        (
            {"BRIDGE_SQLITE__ON_REFUSED": "skip"},
            "BRIDGE_SQLITE__ON_REFUSED: Input should be 'stop', 'omit_value' or 'dead_letter'",
        ),
        (
            {"BRIDGE_SQLITE__ON_REFUSED": "dead_letter"},
            "BRIDGE_SQLITE__DEAD_LETTER_PATH: required with BRIDGE_SQLITE__ON_REFUSED=dead_letter",
        ),
        (
            {"BRIDGE_SQLITE__DEAD_LETTER_PATH": "refused.jsonl"},
            "BRIDGE_SQLITE__DEAD_LETTER_PATH: set, but BRIDGE_SQLITE__ON_REFUSED is stop",
        ),
        (
            {
                "BRIDGE_SQLITE__ON_REFUSED": "dead_letter",
                "BRIDGE_SQLITE__DEAD_LETTER_PATH": "refused.jsonl",
                "BRIDGE_FILE__ON_REFUSED": "dead_letter",
                "BRIDGE_FILE__DEAD_LETTER_PATH": "./refused.jsonl",
            },
            "BRIDGE_FILE__DEAD_LETTER_PATH: the sqlite sink's dead-letter file already",
        ),
    ],
)
def test_refusal_settings_are_checked_per_sink(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, variables: dict[str, str], message: str
) -> None:
    """Every sink's section has ON_REFUSED and DEAD_LETTER_PATH, a third party's too; a policy
    without its file, a file without its policy, or one file for two sinks is one line."""
    assert_one_line_refusal(
        monkeypatch, tmp_path, sinks="sqlite,file", variables=variables, message=message
    )


def test_a_dead_letter_policy_is_read_from_its_section(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("BRIDGE_SINKS", "sqlite")
    monkeypatch.setenv("BRIDGE_SQLITE__PATH", str(tmp_path / "out.db"))
    monkeypatch.setenv("BRIDGE_SQLITE__ON_REFUSED", "dead_letter")
    monkeypatch.setenv("BRIDGE_SQLITE__DEAD_LETTER_PATH", str(tmp_path / "refused.jsonl"))
    ((name, section),) = configure().sinks
    refusal = plugins.refusal_settings(name, section)
    assert refusal.on_refused is RefusalPolicy.DEAD_LETTER
    assert refusal.dead_letter_path == tmp_path / "refused.jsonl"


def test_a_missing_required_sink_setting_names_its_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BRIDGE_SINKS", "file")
    with pytest.raises(ConfigError, match="^BRIDGE_FILE__PATH: Field required$"):
        configure()


@pytest.mark.parametrize(
    ("variable", "nearest", "sinks"),
    [
        ("BRIDGE_SINK", "BRIDGE_SINKS", "stdout"),
        ("BRIDGE_ETCD__ENDPOINT", "BRIDGE_ETCD__ENDPOINTS", "stdout"),
        ("BRIDGE_ETCD_ENDPOINTS", "BRIDGE_ETCD__ENDPOINTS", "stdout"),
        ("BRIDGE_REDIS__URLL", "BRIDGE_REDIS__URL", "redis"),
        ("BRIDGE_FILE__PATHS", "BRIDGE_FILE__PATH", "stdout,file"),
        ("bridge_sink", "BRIDGE_SINKS", "stdout"),
    ],
)
def test_a_misspelled_variable_stops_the_start_naming_the_nearest(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, variable: str, nearest: str, sinks: str
) -> None:
    monkeypatch.setenv("BRIDGE_SINKS", sinks)
    monkeypatch.setenv("BRIDGE_FILE__PATH", str(tmp_path / "out.jsonl"))
    monkeypatch.setenv(variable, "kafka")
    with pytest.raises(ConfigError) as caught:
        configure()
    assert str(caught.value) == (f"{variable.upper()}: unknown variable; did you mean {nearest}?")


def test_an_unknown_variable_in_dotenv_is_refused_too(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("BRIDGE_HTTP__PROT=9000\n")
    with pytest.raises(ConfigError, match="^BRIDGE_HTTP__PROT: unknown variable; did you mean"):
        configure()


def test_pass_through_properties_are_not_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_KAFKA__PROPERTIES__LINGER_MS", "5")
    assert configure().settings.sinks == ["stdout"]


def test_every_problem_is_reported_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_SINKS", "file,redis,pulsar")
    monkeypatch.setenv("BRIDGE_SINK", "x")
    monkeypatch.setenv("BRIDGE_REDIS__MODE", "queue")
    with pytest.raises(ConfigError) as caught:
        configure()
    lines = str(caught.value).splitlines()
    assert lines[0] == "BRIDGE_SINK: unknown variable; did you mean BRIDGE_SINKS?"
    assert lines[1].startswith("BRIDGE_SINKS: unknown sink 'pulsar'; installed sinks: file,")
    assert lines[2] == "BRIDGE_FILE__PATH: Field required"
    assert lines[3].startswith("BRIDGE_REDIS__MODE: ")
    assert len(lines) == 4


def test_only_the_selected_sinks_are_imported_and_checked(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A sink that is not selected costs nothing at start, and its variables change nothing."""
    script = (
        "import sys\n"
        "from bridge.app import configure\n"
        "configure()\n"
        "print(','.join(sorted(m for m in ('confluent_kafka', 'redis', 'nats', 'psycopg') "
        "if m in sys.modules)))\n"
    )
    finished = run_python(script, tmp_path, BRIDGE_SINKS="redis", BRIDGE_KAFKA__TOPICK="ignored")
    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.strip() == "redis"


def test_settings_lists_every_variable_with_secrets_masked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BRIDGE_ETCD__PASSWORD", "hunter2-secret")
    monkeypatch.setenv("BRIDGE_REDIS__URL", "redis://u:hunter2-secret@h:6379/0")
    monkeypatch.setenv("BRIDGE_NATS__TOKEN", "hunter2-secret")
    monkeypatch.setenv("BRIDGE_NAME", "orders")
    lines = describe_settings()
    text = "\n".join(lines)
    assert "hunter2-secret" not in text
    sections = (
        "# core",
        "# sink file",
        "# sink kafka",
        "# sink nats",
        "# sink redis",
        "# sink stdout",
    )
    for section in sections:
        assert section in lines or any(line.startswith(section + " ") for line in lines)
    assert "BRIDGE_NAME  default: default  set: orders" in lines
    assert "BRIDGE_ETCD__PASSWORD  default: (unset)  set: **********" in lines
    assert "BRIDGE_FILE__PATH  default: (required)" in lines
    assert "BRIDGE_KAFKA__BOOTSTRAP_SERVERS  default: (unset)" in lines
    index = lines.index("BRIDGE_PUMP__QUEUE_BYTES  default: 8388608")
    assert "bytes" in lines[index + 1]


def test_a_sink_whose_extra_is_missing_names_the_extra(tmp_path: Path) -> None:
    """Run as a user would, with the Kafka client library made unimportable."""
    script = (
        "import sys; sys.modules['confluent_kafka'] = None\n"
        "from bridge.__main__ import main\n"
        "sys.exit(main(['check']))\n"
    )
    finished = run_python(script, tmp_path, BRIDGE_SINKS="kafka")
    assert finished.returncode == 2
    assert finished.stderr.splitlines() == [
        "etcd-bridge: BRIDGE_SINKS: sink 'kafka' cannot load its client library (import of "
        "confluent_kafka halted; None in sys.modules); install it with: "
        "pip install 'etcd-bridge[kafka]'"
    ]


def test_variable_names_follow_the_nesting() -> None:
    assert variable_name(("etcd", "endpoints", 0)) == "BRIDGE_ETCD__ENDPOINTS"
    assert variable_name(("name",)) == "BRIDGE_NAME"


def run_python(script: str, directory: Path, **variables: str) -> subprocess.CompletedProcess[str]:
    """``script`` in a fresh interpreter in ``directory``, with only ``variables`` of BRIDGE_*."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith("BRIDGE_")}
    return subprocess.run(
        [sys.executable, "-c", script],
        env=environment | variables,
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=60,
    )
