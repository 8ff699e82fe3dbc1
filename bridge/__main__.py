"""The ``etcd-bridge`` command: ``run`` the service, ``check`` its configuration, show each
sink's ``status``, or list every ``settings`` variable.

Configuration comes from ``BRIDGE_*`` environment variables (and ``.env``); a malformed or
unknown one stops the command at once with one line naming it, exit code 2.
"""

import argparse
import os
import sys

from bridge import app
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


if __name__ == "__main__":
    sys.exit(main())
