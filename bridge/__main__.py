"""The ``etcd-bridge`` command: ``run`` the service, ``check`` its configuration, show each
sink's ``status``, ``verify`` that each sink agrees with etcd, or list every ``settings``
variable.

Configuration comes from ``BRIDGE_*`` environment variables (and ``.env``); a malformed or
unknown one stops the command at once with one line naming it, exit code 2.
"""

import argparse
import os
import signal
import sys
import threading
from types import FrameType

from bridge import app, verify, verify_service
from bridge.allocator import release_large_buffers
from bridge.collector import collect_cycles_less_often
from bridge.errors import BridgeError
from bridge.logs import configure_logging
from config.errors import ConfigError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="etcd-bridge",
        description="Stream changes of an etcd prefix to sinks. Configured by BRIDGE_* "
        "environment variables (see the README).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", help="run the bridge until SIGTERM/SIGINT")
    commands.add_parser("check", help="validate the settings, reach etcd and every sink, then exit")
    commands.add_parser(
        "status",
        help="each sink's durable position (read from the sink, without changing it), etcd's "
        "revision, the lag, and each pipeline's phase if a bridge answers here",
    )
    verifying = commands.add_parser(
        "verify",
        help="read each sink back and compare it with etcd's state at the last revision it "
        "holds completely (read-only, safe beside a running bridge); exit 0 when all agree",
    )
    verifying.add_argument(
        "--sinks", default="", help="comma-separated sinks to verify (default: every configured)"
    )
    verifying.add_argument(
        "--history",
        nargs=2,
        type=int,
        metavar=("FROM", "TO"),
        help="also compare etcd's changes at revisions FROM to TO with the sink's, one by one",
    )
    verifying.add_argument(
        "--every",
        metavar="DURATION",
        help="verify in rounds forever (e.g. 10m), serving gauges at /metrics on BRIDGE_HTTP__PORT",
    )
    commands.add_parser(
        "settings",
        help="list every variable of the core and of each installed sink: default, value set "
        "(secrets masked), meaning",
    )
    arguments = parser.parse_args(argv)
    if arguments.command == "settings":
        try:
            print("\n".join(app.describe_settings()), flush=True)
        except BrokenPipeError:  # `etcd-bridge settings | head`: the reader had enough
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    try:
        configuration = app.configure()
    except ConfigError as error:
        for line in str(error).splitlines():
            print(f"etcd-bridge: {line}", file=sys.stderr)
        return 2
    configure_logging(configuration.settings.log)
    release_large_buffers()
    collect_cycles_less_often()
    if arguments.command == "status":
        lines, problems = app.status(configuration)
        print("\n".join(lines), flush=True)
        for line in problems:
            print(f"etcd-bridge: {line}", file=sys.stderr)
        return 1 if problems else 0
    if arguments.command == "verify":
        try:
            return _verify(configuration, arguments)
        except ConfigError as error:
            print(f"etcd-bridge: {error}", file=sys.stderr)
            return 2
    if arguments.command == "check":
        fine, problems = app.check(configuration)
        for line in fine:
            print(f"ok: {line}")
        for line in problems:
            print(f"etcd-bridge: {line}", file=sys.stderr)
        return 1 if problems else 0
    try:
        return app.run(configuration)
    except (BridgeError, ConfigError) as error:
        print(f"etcd-bridge: {error}", file=sys.stderr)
        return 2 if isinstance(error, ConfigError) else 1


def _verify(configuration: app.Configuration, arguments: argparse.Namespace) -> int:
    """``etcd-bridge verify``: one round, or rounds until SIGTERM/SIGINT with ``--every``."""
    configured = [name for name, _section in configuration.sinks]
    selected = tuple(name for name in arguments.sinks.split(",") if name)
    unknown = [name for name in selected if name not in configured]
    if unknown:
        raise ConfigError(
            f"--sinks: {', '.join(unknown)} not among the configured sinks "
            f"(BRIDGE_SINKS: {','.join(configured)})"
        )
    history = None if arguments.history is None else tuple(arguments.history)
    options = verify.Options(sinks=selected, history=history)
    if arguments.every is None:
        reports = verify.verify(configuration, options)
        return verify.print_reports(reports, options=options)
    interval = verify_service.parse_interval(arguments.every)
    stop = threading.Event()

    def request_stop(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    return verify_service.run_every(configuration, options, interval=interval, stop=stop)


if __name__ == "__main__":
    sys.exit(main())
