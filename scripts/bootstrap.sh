# shellcheck shell=bash
# Sourced by run.sh and test.sh: make sure Python 3.11+ with venv exists (installing it from
# Debian's packages when run as root on a fresh machine), then keep .venv in step with
# pyproject.toml. Usage: bootstrap_venv EXTRAS   (e.g. "all,local" or "all,test,dev")

apt_install() {
    # Install Debian packages that are missing; needs root.
    if [ "$(id -u)" -ne 0 ]; then
        echo "etcd-bridge: missing system packages: $*; install them (as root: apt-get install $*)" >&2
        exit 1
    fi
    if [ -z "${_APT_UPDATED:-}" ]; then
        apt-get update -qq
        _APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

bootstrap_venv() {
    local extras="$1"
    if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
        apt_install python3 python3-venv python3-pip
    fi
    if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
        echo "etcd-bridge: needs Python 3.11 or newer, found $(python3 --version)" >&2
        exit 1
    fi
    local stamp=".venv/.installed-${extras//,/-}"
    if [ ! -x .venv/bin/python ]; then
        python3 -m venv .venv
    fi
    if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
        .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
        .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[${extras}]"
        touch "$stamp"
    fi
}
