# PowerDNS Authoritative (sqlite3 backend) on loopback for the reverse-DNS tests (sourced by scripts/lib.sh).
# start_extra_pdns starts it once (idempotent) and exports HOSTBAY_TEST_PDNS_URL, HOSTBAY_TEST_PDNS_KEY and
# HOSTBAY_TEST_PDNS_DNS (address:port of its DNS listener, for dig). Override the folder with HOSTBAY_PDNS_DIR.

_pdns_free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

_pdns_export() {
  local dir=$1
  export HOSTBAY_TEST_PDNS_URL="http://127.0.0.1:$(cat "$dir/api_port")"
  export HOSTBAY_TEST_PDNS_KEY="$(cat "$dir/api_key")"
  export HOSTBAY_TEST_PDNS_DNS="127.0.0.1:$(cat "$dir/dns_port")"
}

_pdns_answers() {
  local dir=$1
  [ -f "$dir/api_port" ] && [ -f "$dir/api_key" ] || return 1
  python3 - "$(cat "$dir/api_port")" "$(cat "$dir/api_key")" <<'PY' >/dev/null 2>&1
import sys, urllib.request
req = urllib.request.Request(f"http://127.0.0.1:{sys.argv[1]}/api/v1/servers/localhost",
                             headers={"X-API-Key": sys.argv[2]})
urllib.request.urlopen(req, timeout=2).read()
PY
}

start_extra_pdns() {
  local dir=${HOSTBAY_PDNS_DIR:-/tmp/hostbay-pdns}
  if ! command -v pdns_server >/dev/null 2>&1 && [ ! -x /usr/sbin/pdns_server ]; then
    log "pdns_server is not installed (Debian: pdns-server pdns-backend-sqlite3); reverse-DNS tests will skip"
    return 0
  fi
  if _pdns_answers "$dir"; then _pdns_export "$dir"; return 0; fi
  log "starting PowerDNS Authoritative in $dir"
  mkdir -p "$dir"
  [ -f "$dir/api_key" ] || python3 -c 'import secrets; print(secrets.token_hex(16))' > "$dir/api_key"
  _pdns_free_port > "$dir/api_port"
  _pdns_free_port > "$dir/dns_port"
  if [ ! -s "$dir/pdns.sqlite3" ]; then
    python3 - "$dir/pdns.sqlite3" /usr/share/doc/pdns-backend-sqlite3/schema.sqlite3.sql <<'PY'
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1]); conn.executescript(open(sys.argv[2]).read()); conn.close()
PY
  fi
  cat > "$dir/pdns.conf" <<CONF
launch=gsqlite3
gsqlite3-database=$dir/pdns.sqlite3
gsqlite3-dnssec=no
api=yes
api-key=$(cat "$dir/api_key")
webserver=yes
webserver-address=127.0.0.1
webserver-port=$(cat "$dir/api_port")
webserver-allow-from=127.0.0.0/8,::1
local-address=127.0.0.1
local-port=$(cat "$dir/dns_port")
socket-dir=$dir
guardian=no
daemon=yes
disable-syslog=yes
cache-ttl=0
negquery-cache-ttl=0
query-cache-ttl=0
zone-cache-refresh-interval=0
default-soa-content=ns1.hostbay.invalid. hostmaster.@ 0 10800 3600 604800 3600
CONF
  local bin; bin=$(command -v pdns_server || echo /usr/sbin/pdns_server)
  "$bin" --config-dir="$dir" >"$dir/pdns.log" 2>&1 || { log "PowerDNS did not start: $(tail -5 "$dir/pdns.log")"; return 1; }
  for _ in $(seq 30); do
    if _pdns_answers "$dir"; then _pdns_export "$dir"; return 0; fi
    sleep 0.5
  done
  log "PowerDNS API did not answer: $(tail -5 "$dir/pdns.log")"; return 1
}
