#!/usr/bin/env bash
# The chaos suite (README, "Chaos suite"): etcd, the Kafka-protocol broker, a persistent Redis and
# two bridge instances under kill -9, SIGSTOP/SIGCONT and restarts; every sink is then checked
# against etcd's own history. Prints one line of figures and exits non-zero unless nothing was
# lost, duplicated or out of order. Arguments go to the tests/chaos package, e.g.
#   bash scripts/chaos.sh --operations 30000 --kills 10 --seed 7 [--workdir DIR]
# With --cluster 3 etcd is three members in network namespaces (as root) and --partitions N adds
# N partition/heal faults; --refusals N puts N values that Kafka and NATS refuse for good (Kafka
# delivers them without their values, NATS diverts them to its dead-letter file).
# --sink-down SECONDS [--down-sink redis] stops one sink's server that long early in the run
# while etcd takes writes and is compacted past what the sink holds (with --journal: no resync).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/bootstrap.sh
source scripts/bootstrap.sh
[ -x /usr/bin/redis-server ] || apt_install redis-server
bootstrap_venv all,test,dev
exec .venv/bin/python -m tests.chaos "$@"
