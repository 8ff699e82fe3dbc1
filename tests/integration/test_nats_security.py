"""The NATS sink against nats-servers that authenticate, authorize and encrypt.

Each test starts a nats-server of its own on a free port with a configuration file of its own
(``NatsSetup``): a token, an NKey user, users with publish permissions, TLS with the
certificates of the session's own CA (``tests.fixtures.tls``). The tests' own client (which
reads the stream back) connects with credentials that may do everything; the sink under test
gets the ones the case is about. Right credentials must deliver exactly once; wrong ones must
stop the sink with one line naming the setting and never showing the secret; a publish the
user may not make must stop it naming the subject, without waiting for an acknowledgement
that cannot come.
"""

import os
import ssl
import time
from pathlib import Path
from typing import Any

import nkeys
import pytest

from bridge.contract import History, deliver_with_retries, feed
from bridge.errors import SinkRejectedError
from config.keyspace import KeySpace
from tests.fixtures.nats import NatsFactory, NatsNames, NatsServer, NatsSetup, quoted
from tests.fixtures.tls import TlsFiles
from tests.sinks.base import build

PREFIX = b"/app/"
TOKEN = "t0ken-for-grep-9d1c"  # noqa: S105 - a test server's, grepped for in messages


def deliver_and_read_back(server: NatsServer, names: NatsNames, **settings: Any) -> None:
    """A sink with ``settings`` delivers a history; the stream holds it, once, in order."""
    events = History(prefix=PREFIX).random_changes(count=40, seed=11)
    with sink(server, names, **settings) as writer:
        assert writer.open() is None
        feed(writer, events, sizes=(15,))
    assert server.stream_events(names.stream) == events


def sink(server: NatsServer, names: NatsNames, **settings: Any) -> Any:
    options = {
        "servers": server.url,
        "stream": names.stream,
        "subject": names.subject,
        "timeout": 3,
        **settings,
    }
    return build("nats", pipeline=names.pipeline, keyspace=KeySpace.of([PREFIX]), **options)


def refusal(server: NatsServer, names: NatsNames, **settings: Any) -> str:
    """The one line of the SinkRejectedError that opening a sink with ``settings`` raises."""
    with sink(server, names, **settings) as refused, pytest.raises(SinkRejectedError) as raised:
        refused.open()
    message = str(raised.value)
    assert "\n" not in message
    return message


def user_seed(directory: Path, name: str) -> tuple[Path, str]:
    """A new NKey user: the file holding its seed, and its public key."""
    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    path = directory / f"{name}.nk"
    path.write_bytes(seed + b"\n")
    return path, nkeys.from_seed(seed).public_key.decode()


def test_a_token_lets_the_sink_in_and_a_wrong_one_is_named_not_shown(
    nats_factory: NatsFactory, nats_names: NatsNames
) -> None:
    server = nats_factory.start(
        NatsSetup(config=f"authorization {{ token: {quoted(TOKEN)} }}", client={"token": TOKEN})
    )
    wrong = f"wrong-{TOKEN}"
    message = refusal(server, nats_names, token=wrong)
    assert "authentication with BRIDGE_NATS__TOKEN failed" in message
    assert TOKEN not in message
    deliver_and_read_back(server, nats_names, token=TOKEN)


def test_an_nkey_seed_lets_the_sink_in_and_another_key_is_named(
    nats_factory: NatsFactory, nats_names: NatsNames, tmp_path: Path
) -> None:
    ours, public = user_seed(tmp_path, "bridge")
    stranger, _ = user_seed(tmp_path, "stranger")
    admin, admin_public = user_seed(tmp_path, "admin")
    users = ", ".join(f"{{ nkey: {quoted(key)} }}" for key in (public, admin_public))
    server = nats_factory.start(
        NatsSetup(config=f"authorization {{ users: [ {users} ] }}", client={"nkeys_seed": admin})
    )
    message = refusal(server, nats_names, nkey_seed_file=stranger)
    assert f"the NKey seed in {stranger} (BRIDGE_NATS__NKEY_SEED_FILE)" in message
    assert "authentication" in message and stranger.read_text().strip() not in message
    deliver_and_read_back(server, nats_names, nkey_seed_file=ours)


def tls_setup(tls: TlsFiles, *, verify_clients: bool) -> NatsSetup:
    """TLS with the session CA's server certificate; with ``verify_clients``, only clients
    with a certificate that CA signed may connect."""
    lines = [
        f"cert_file: {quoted(str(tls.server_cert))}",
        f"key_file: {quoted(str(tls.server_key))}",
    ]
    if verify_clients:
        lines += [f"ca_file: {quoted(str(tls.ca))}", "verify: true"]
    context = ssl.create_default_context(cafile=str(tls.ca))
    context.load_cert_chain(str(tls.client_cert), str(tls.client_key))
    return NatsSetup(config=f"tls {{ {', '.join(lines)} }}", client={"tls": context})


def test_tls_with_the_servers_ca_delivers_and_another_ca_is_named(
    nats_factory: NatsFactory, nats_names: NatsNames, tls: TlsFiles
) -> None:
    server = nats_factory.start(tls_setup(tls, verify_clients=False))
    for ca in (tls.other_ca, None):  # a foreign CA, then the system's trust
        settings: dict[str, Any] = {"servers": server.url.replace("nats://", "tls://")}
        if ca is not None:
            settings["ca_file"] = ca
        message = refusal(server, nats_names, **settings)
        assert "not trusted" in message and "BRIDGE_NATS__CA_FILE" in message, message
    deliver_and_read_back(server, nats_names, ca_file=tls.ca)


def test_mutual_tls_delivers_with_a_client_certificate_and_names_a_missing_one(
    nats_factory: NatsFactory, nats_names: NatsNames, tls: TlsFiles
) -> None:
    server = nats_factory.start(tls_setup(tls, verify_clients=True))
    deliver_and_read_back(
        server, nats_names, ca_file=tls.ca, cert_file=tls.client_cert, key_file=tls.client_key
    )
    # Without a client certificate the server closes the handshake: named, not a hang.
    message = refusal(server, nats_names, ca_file=tls.ca)
    assert "BRIDGE_NATS__CERT_FILE" in message, message


def test_a_publish_the_user_may_not_make_is_rejected_naming_the_subject(
    nats_factory: NatsFactory, nats_names: NatsNames
) -> None:
    allowed, denied = f"{nats_names.subject}.allowed", f"{nats_names.subject}.denied"
    permissions = (
        f"permissions: {{ publish: {{ allow: [{quoted('$JS.API.>')}, {quoted(allowed)}] }}, "
        f"subscribe: {{ allow: [{quoted('_INBOX.>')}] }} }}"
    )
    server = nats_factory.start(
        NatsSetup(
            config=(
                "authorization { users: [ "
                f"{{ user: admin, password: {quoted('admin-pw')} }}, "
                f"{{ user: bridge, password: {quoted('bridge-pw')}, {permissions} }} ] }}"
            ),
            client={"user": "admin", "password": "admin-pw"},
        )
    )
    history = History(prefix=PREFIX)
    events = history.put(PREFIX + b"allowed/1", b"a")
    events += history.put(PREFIX + b"allowed/2", b"b")
    refused_at = len(events)
    events += history.put(PREFIX + b"denied/x", b"c")
    events += history.put(PREFIX + b"allowed/3", b"d")
    flush_timeout = 20.0
    settings = {
        "user": "bridge",
        "password": "bridge-pw",
        "subject": f"{nats_names.subject}.{{1}}",
        "flush_timeout": flush_timeout,
    }
    with sink(server, nats_names, **settings) as writer:
        writer.open()
        writer.write(events[:refused_at])
        writer.flush()
        writer.write(events[refused_at:])
        started = time.monotonic()
        with pytest.raises(SinkRejectedError) as raised:
            writer.flush()
        waited = time.monotonic() - started
    message = str(raised.value)
    assert f'"{denied}"' in message and "user 'bridge'" in message, message
    assert "\n" not in message and "bridge-pw" not in message
    assert waited < flush_timeout / 2, f"the refusal took {waited:.1f}s"
    assert server.stream_events(nats_names.stream) == events[:refused_at]
    # As the pump would go on: reopened, it is refused again, never retried as unavailable.
    with pytest.raises(SinkRejectedError, match=denied):
        deliver_with_retries(lambda: sink(server, nats_names, **settings), events)
    assert server.stream_events(nats_names.stream) == events[:refused_at]
