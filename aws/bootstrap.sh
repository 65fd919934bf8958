#!/usr/bin/env bash
# Install txlb on a fresh Debian 12 instance from this checkout.  cloud-init
# runs it as root (see aws/txlb.yaml); running it again is safe.
#
#   aws/bootstrap.sh backend PORT
#       a demo backend on PORT, all interfaces (the security group keeps
#       everyone but the balancer out)
#   aws/bootstrap.sh balancer "HOST:PORT HOST:PORT ..."
#       txlb on 127.0.0.1:8080 over those backends, nginx on 80/443 in front
#   aws/bootstrap.sh balancer-asg "REGION GROUP PORT"
#       the same, over the InService instances of an Auto Scaling group,
#       which txlb finds itself ([discovery:web] type = ec2; txlb[ec2])
#   aws/bootstrap.sh lb-ini "HOST:PORT ..." | lb-ini-asg "REGION GROUP PORT"
#       print the balancer's lb.ini and change nothing
#
# The units and the nginx site are this checkout's systemd/ and nginx/ files,
# unchanged; txlb goes into a virtualenv at /opt/txlb, as the units expect.
set -euo pipefail

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PREFIX=/opt/txlb

usage() {
    sed -n '2,16p' "${BASH_SOURCE[0]}" >&2
    exit 2
}

log() {
    echo "txlb-bootstrap: $*" >&2
}

lb_ini_head() {
    cat <<'INI'
; Written by aws/bootstrap.sh: txlb behind nginx on this instance.
[txlb]
listen = tcp:8080:interface=127.0.0.1
; One worker process per CPU (a t3.micro has two), together one balancer:
; README's "Worker processes".  The unit's KillMode=mixed lets it drain them.
workers = auto
; nginx, on this machine, sets X-Forwarded-For; nobody else is believed.
trusted_proxies = 127.0.0.1
access_log = /var/log/txlb/access.log

[health]
path = /health
interval = 2s
timeout = 1s
INI
}

lb_ini() {
    local i=0 address
    lb_ini_head
    for address in $1; do
        i=$((i + 1))
        printf '\n[backend:web%d]\naddress = %s\n' "$i" "$address"
    done
    if [ "$i" -eq 0 ]; then
        log "no backend addresses given"
        return 1
    fi
}

lb_ini_asg() {
    local region group port extra
    read -r region group port extra <<<"$1"
    if [ -z "$port" ] || [ -n "$extra" ]; then
        log "expected \"REGION GROUP PORT\", got: $1"
        return 1
    fi
    lb_ini_head
    cat <<INI
initial_state = unknown
slow_start = 10s

; The Auto Scaling group's InService instances, found every 5 s with the
; instance role (ec2:DescribeInstances, autoscaling:DescribeAutoScalingGroups).
[discovery:web]
type = ec2
region = $region
asg = $group
port = $port
interval = 5s
INI
}

install_txlb() {
    local what=${1:-$SRC}
    log "installing $what into $PREFIX"
    [ -x "$PREFIX/bin/python" ] || python3 -m venv "$PREFIX"
    "$PREFIX/bin/pip" install --quiet --no-cache-dir --upgrade "$what"
    install -m 0644 "$SRC/systemd/txlb.service" "$SRC/systemd/txlb.socket" \
        "$SRC/systemd/txlb-backend@.service" /etc/systemd/system/
    systemctl daemon-reload
    install -d -m 0755 /etc/txlb
}

backend() {
    local port=$1
    install_txlb
    cat >"/etc/txlb/backend-$port.env" <<ENV
TXLB_BACKEND_HOST=0.0.0.0
TXLB_BACKEND_ARGS=--delay 5ms --capacity 4
ENV
    systemctl enable --now "txlb-backend@$port.service"
    log "backend on port $port started"
}

public_hostname() {
    # IMDSv2; falls back to the machine's own name.
    local token name
    if token=$(curl -sf -m 2 -X PUT -H "X-aws-ec2-metadata-token-ttl-seconds: 60" \
        http://169.254.169.254/latest/api/token) &&
        name=$(curl -sf -m 2 -H "X-aws-ec2-metadata-token: $token" \
            http://169.254.169.254/latest/meta-data/public-hostname) &&
        [ -n "$name" ]; then
        echo "$name"
    else
        hostname -f
    fi
}

balancer() {
    # $1: lb_ini or lb_ini_asg; $2: its argument; $3: what pip installs
    local write=$1 backends=$2 name web
    "$write" "$backends" >/dev/null
    # The dashboard's Chart.js is git-ignored: fetch it as `make` does.
    if [ -f "$SRC/package-lock.json" ] && [ ! -f "$SRC/web/vendor/chart.umd.js" ]; then
        make -C "$SRC" web-vendor
    fi
    install_txlb "$3"
    "$write" "$backends" >/etc/txlb/lb.ini.new
    mv /etc/txlb/lb.ini.new /etc/txlb/lb.ini
    chmod 0644 /etc/txlb/lb.ini
    "$PREFIX/bin/twistd" txlb --config /etc/txlb/lb.ini --check

    # A self-signed certificate until a real one replaces it (aws/README.md).
    if [ ! -s /etc/ssl/private/txlb.key ]; then
        name=$(public_hostname)
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
            -days 365 -subj "/CN=$name" -addext "subjectAltName=DNS:$name" \
            -keyout /etc/ssl/private/txlb.key -out /etc/ssl/certs/txlb.crt
        chmod 0600 /etc/ssl/private/txlb.key
    fi

    # nginx serves the installed dashboard files itself.
    web=$(cd / && "$PREFIX/bin/python" -c 'import txlb.observe.assets as w; print(w.find_web_root())')
    install -d -m 0755 /usr/share/txlb
    ln -sfn "$web" /usr/share/txlb/web
    install -m 0644 "$SRC/nginx/txlb.conf" /etc/nginx/sites-available/txlb
    ln -sfn ../sites-available/txlb /etc/nginx/sites-enabled/txlb
    rm -f /etc/nginx/sites-enabled/default

    systemctl enable txlb.service
    systemctl restart txlb.service
    nginx -t
    systemctl enable nginx
    systemctl reload-or-restart nginx
    log "balancer up: nginx on 80/443, txlb on 127.0.0.1:8080 over: $backends"
}

[ $# -eq 2 ] || usage
case $1 in
backend) backend "$2" ;;
balancer) balancer lb_ini "$2" "$SRC" ;;
balancer-asg) balancer lb_ini_asg "$2" "${SRC}[ec2]" ;;
lb-ini) lb_ini "$2" ;;
lb-ini-asg) lb_ini_asg "$2" ;;
*) usage ;;
esac
