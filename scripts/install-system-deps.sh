#!/usr/bin/env bash
# Install the Debian packages txlb's tests, demo and benchmarks use.
#
# Idempotent: when every package is already installed it does nothing at all
# (no apt-get update), so running it on every `make test` costs a few dpkg
# look-ups.  Only Debian packages are installed; nothing else is downloaded.
#
# Usage: scripts/install-system-deps.sh        (as root, or with sudo available)
#        PY=python3.11 scripts/install-system-deps.sh
set -euo pipefail

PY=${PY:-python3}

packages=(
    apache2-utils # ab
    siege
    wrk
    hey # load generator (make bench)
    nginx
    haproxy
    caddy
    chromium # headless dashboard tests (Playwright drives /usr/bin/chromium)
    dnsmasq-base # a real DNS server for the discovery tests (no system service)
    iproute2 # ss
    curl
    openssl
    procps # pgrep, pkill in tests
    ca-certificates
    redis-server # the fleet's store ([fleet]; tests/integration/test_fleet*.py)
    # deployment artefacts: `cloud-init schema` on the AWS user data (it stays
    # disabled on a machine with no cloud datasource), shellcheck on
    # aws/bootstrap.sh, systemd-socket-activate (package systemd, below)
    cloud-init
    shellcheck
    # tests/integration/test_prometheus.py runs its own prometheus (and
    # promtool) on a free loopback port; the package's service is not used
    prometheus
)
# Only when missing: the machine may carry its own Node.js or systemd.
command -v node >/dev/null 2>&1 || packages+=(nodejs npm)
command -v systemd-analyze >/dev/null 2>&1 || packages+=(systemd)
# The venv module (and its ensurepip) ships separately on Debian's python3.
"$PY" -c 'import ensurepip, venv' >/dev/null 2>&1 || packages+=(python3-venv)

installed() {
    [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]
}

missing=()
for package in "${packages[@]}"; do
    installed "$package" || missing+=("$package")
done
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi

as_root=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        as_root=(sudo)
    else
        echo "install-system-deps: need root (or sudo) to install: ${missing[*]}" >&2
        exit 1
    fi
fi

echo "install-system-deps: installing ${missing[*]}" >&2
apt_get=("${as_root[@]}" env DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=600 -o Acquire::Retries=3)
"${apt_get[@]}" update -q
"${apt_get[@]}" install -y -q --no-install-recommends "${missing[@]}"

# Debian's prometheus starts its own service (port 9090, scraping itself):
# the tests start theirs, so stop and disable the one just installed.
if [[ " ${missing[*]} " == *" prometheus "* ]] && [ -d /run/systemd/system ]; then
    "${as_root[@]}" systemctl disable --now prometheus.service >/dev/null 2>&1 || true
fi
