#!/usr/bin/env bash
# Install one balancer of a txlb fleet on a fresh Debian 12 instance from
# this checkout.  cloud-init runs it as root (see aws/txlb-fleet.yaml);
# running it again is safe.  The backends use aws/bootstrap.sh backend PORT.
#
#   aws/bootstrap-fleet.sh balancer REDIS_IP REGION BACKEND_ASG PORT
#       txlb on 127.0.0.1:8080 (stats on 127.0.0.1:9000) sharing its load
#       through Redis at REDIS_IP:6379, over the running instances of the
#       Auto Scaling group BACKEND_ASG on PORT; nginx/txlb-fleet.conf in
#       front (PROXY protocol v2 from the NLB on 80 and 443, /healthz on 8081)
#   aws/bootstrap-fleet.sh lb-ini REDIS_IP REGION BACKEND_ASG PORT
#       print the balancer's lb.ini and change nothing
#
# The node's name in the fleet is the instance's host name (ip-10-43-...).
set -euo pipefail

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PREFIX=/opt/txlb

usage() {
    sed -n '2,15p' "${BASH_SOURCE[0]}" >&2
    exit 2
}

log() {
    echo "txlb-bootstrap-fleet: $*" >&2
}

lb_ini() {
    local redis=$1 region=$2 asg=$3 port=$4
    if [[ ! $redis =~ ^[0-9.]+$ || ! $port =~ ^[0-9]+$ || -z $region || -z $asg ]]; then
        log "expected REDIS_IP REGION BACKEND_ASG PORT, got: $*"
        return 1
    fi
    cat <<INI
; Written by aws/bootstrap-fleet.sh: one balancer of a fleet behind an NLB.
[txlb]
listen = tcp:8080:interface=127.0.0.1
; One worker process per CPU; the supervisor is this balancer's one node.
workers = auto
; The stats API and /healthz on their own port, open through a drain: nginx
; passes the NLB's health checks (port 8081) there.
stats_listen = tcp:9000:interface=127.0.0.1
; nginx, on this machine, sets X-Forwarded-For; nobody else is believed.
trusted_proxies = 127.0.0.1
access_log = /var/log/txlb/access.log
; SIGTERM: /healthz says 503 at once, and the ports stay open until the NLB
; (two failed checks 5 s apart) has stopped sending; then the drain.
shutdown_grace = 12s
shutdown_timeout = 20s

[health]
path = /health
interval = 2s
timeout = 1s

[fleet]
redis = redis://$redis:6379/0
interval = 100ms

[discovery:app]
type = ec2
region = $region
asg = $asg
port = $port
interval = 15s
INI
}

install_txlb() {
    log "installing txlb from $SRC into $PREFIX"
    [ -x "$PREFIX/bin/python" ] || python3 -m venv "$PREFIX"
    # The ec2 extra: boto3, for [discovery:app] type = ec2.
    "$PREFIX/bin/pip" install --quiet --no-cache-dir --upgrade "${SRC}[ec2]"
    install -m 0644 "$SRC/systemd/txlb.service" "$SRC/systemd/txlb.socket" \
        "$SRC/systemd/txlb-backend@.service" /etc/systemd/system/
    systemctl daemon-reload
    install -d -m 0755 /etc/txlb
}

balancer() {
    local name web
    lb_ini "$@" >/dev/null
    if [ -f "$SRC/package-lock.json" ] && [ ! -f "$SRC/web/vendor/chart.umd.js" ]; then
        make -C "$SRC" web-vendor
    fi
    install_txlb
    lb_ini "$@" >/etc/txlb/lb.ini.new
    mv /etc/txlb/lb.ini.new /etc/txlb/lb.ini
    chmod 0644 /etc/txlb/lb.ini
    "$PREFIX/bin/twistd" txlb --config /etc/txlb/lb.ini --check

    # A self-signed certificate, as aws/bootstrap.sh makes (aws/README.md).
    if [ ! -s /etc/ssl/private/txlb.key ]; then
        name=$(hostname -f)
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
            -days 365 -subj "/CN=$name" -addext "subjectAltName=DNS:$name" \
            -keyout /etc/ssl/private/txlb.key -out /etc/ssl/certs/txlb.crt
        chmod 0600 /etc/ssl/private/txlb.key
    fi

    web=$(cd / && "$PREFIX/bin/python" -c 'import txlb.observe.assets as w; print(w.find_web_root())')
    install -d -m 0755 /usr/share/txlb
    ln -sfn "$web" /usr/share/txlb/web
    install -m 0644 "$SRC/nginx/txlb-fleet.conf" /etc/nginx/sites-available/txlb
    ln -sfn ../sites-available/txlb /etc/nginx/sites-enabled/txlb
    rm -f /etc/nginx/sites-enabled/default

    systemctl enable txlb.service
    systemctl restart txlb.service
    nginx -t
    systemctl enable nginx
    systemctl reload-or-restart nginx
    log "balancer up: nginx on 80/443/8081, txlb sharing through redis://$1:6379/0"
}

[ $# -eq 5 ] || usage
case $1 in
balancer) shift && balancer "$@" ;;
lb-ini) shift && lb_ini "$@" ;;
*) usage ;;
esac
