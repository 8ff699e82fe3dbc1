"""etcd over TLS with client certificates, and with user/password authentication."""

import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.bridge import BridgeFactory, read_events
from tests.fixtures.etcd import EtcdFactory, EtcdServer
from tests.fixtures.processes import wait_for
from tests.fixtures.tls import TlsFiles
from tests.integration.test_pipeline_file import file_bridge, wait_for_revision

PASSWORD = "s3cret-Pa55word-for-grep"  # noqa: S105 - a test server's, grepped for in logs


def check(server: EtcdServer, **settings: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bridge", "check"],
        env={"PATH": "/usr/bin:/bin", "BRIDGE_ETCD__ENDPOINTS": server.url,
             "BRIDGE_ETCD__TIMEOUT": "3", **settings},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def mtls(tls: TlsFiles, *, ca: Path | None = None, cert: Path | None = None,
         key: Path | None = None) -> dict[str, str]:  # fmt: skip
    return {
        "BRIDGE_ETCD__CA_FILE": str(ca or tls.ca),
        "BRIDGE_ETCD__CERT_FILE": str(cert or tls.client_cert),
        "BRIDGE_ETCD__KEY_FILE": str(key or tls.client_key),
    }


def test_mtls_streams_events(
    etcd_factory: EtcdFactory, bridge_factory: BridgeFactory, tls: TlsFiles, tmp_path: Path
) -> None:
    server = etcd_factory.start(tls=tls)
    output = tmp_path / "events.jsonl"
    assert check(server, **mtls(tls)).returncode == 0
    bridge = bridge_factory.start(
        **file_bridge(bridge_factory, server, prefix="/tls/", path=output), **mtls(tls)
    )
    with server.client() as client:
        revision = client.put("/tls/a", b"1").header.revision
    wait_for_revision(output, revision)
    assert [e.value for e in read_events(output) if e.key == b"/tls/a"] == [b"1"]
    assert bridge.terminate() == 0


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("wrong_ca", "BRIDGE_ETCD__CA_FILE"),
        ("expired_cert", "BRIDGE_ETCD__CERT_FILE"),
        ("no_client_cert", "BRIDGE_ETCD__CERT_FILE"),
        ("plain_http", "BRIDGE_ETCD__ENDPOINTS"),
    ],
)
def test_tls_mistakes_are_one_clear_line(
    etcd_factory: EtcdFactory,
    bridge_factory: BridgeFactory,
    tls: TlsFiles,
    tmp_path: Path,
    case: str,
    expected: str,
) -> None:
    server = etcd_factory.start(tls=tls)
    settings = {
        "wrong_ca": mtls(tls, ca=tls.other_ca),
        "expired_cert": mtls(tls, cert=tls.expired_cert, key=tls.expired_key),
        "no_client_cert": {"BRIDGE_ETCD__CA_FILE": str(tls.ca)},
        "plain_http": {"BRIDGE_ETCD__ENDPOINTS": server.url.replace("https", "http")},
    }[case]
    result = check(server, **settings)
    assert result.returncode == 1
    problems = result.stderr.strip().splitlines()
    assert len(problems) == 1, result.stderr
    assert expected in problems[0]
    blamed = {"BRIDGE_ETCD__CA_FILE", "BRIDGE_ETCD__CERT_FILE", "BRIDGE_ETCD__ENDPOINTS"}
    assert not any(other in problems[0] for other in blamed - {expected}), problems[0]
    run = bridge_factory.start(
        **{
            **file_bridge(bridge_factory, server, prefix="/x/", path=tmp_path / "o"),
            "BRIDGE_ETCD__TIMEOUT": "3",
            **settings,
        }
    )
    assert run.process is not None
    if case == "plain_http":  # indistinguishable from a server that is down: keep retrying
        wait_for(lambda: "etcd unavailable" in run.log_text(), timeout=20, what="retries")
        assert run.terminate() == 0
        return
    assert run.process.wait(30) == 1
    errors = [line for line in run.log_text().splitlines() if " ERROR " in line]
    assert len(errors) == 1 and expected in errors[0], run.log_text()


def test_password_auth_and_reconnect(
    etcd_factory: EtcdFactory, bridge_factory: BridgeFactory, tls: TlsFiles, tmp_path: Path
) -> None:
    server = etcd_factory.start(tls=tls, extra_args=("--auth-token-ttl=1",))
    server.enable_auth(root_password=PASSWORD)
    output = tmp_path / "events.jsonl"
    credentials = {"BRIDGE_ETCD__USER": "root", "BRIDGE_ETCD__PASSWORD": PASSWORD, **mtls(tls)}
    wrong = check(server, **{**credentials, "BRIDGE_ETCD__PASSWORD": "nope"})
    assert wrong.returncode == 1
    assert len(wrong.stderr.strip().splitlines()) == 1
    assert "BRIDGE_ETCD__USER" in wrong.stderr and "nope" not in wrong.stderr
    ok = check(server, **credentials)
    assert ok.returncode == 0, ok.stderr
    bridge = bridge_factory.start(
        **file_bridge(bridge_factory, server, prefix="/auth/", path=output),
        BRIDGE_LOG__FORMAT="json",
        **credentials,
    )
    with server.client(user="root", password=PASSWORD) as client:
        first = client.put("/auth/a", b"1").header.revision
    wait_for_revision(output, first)
    server.restart()  # tokens die with the server; the bridge must authenticate again
    with server.client(user="root", password=PASSWORD) as client:
        second = client.put("/auth/a", b"2").header.revision
    wait_for_revision(output, second)
    assert bridge.terminate() == 0
    log = bridge.log_text()
    assert "etcd unavailable, reconnecting" in log
    assert PASSWORD not in log and PASSWORD not in output.read_text()
