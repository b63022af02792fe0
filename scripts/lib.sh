# Shared set-up helpers for scripts/demo and scripts/test (sourced, not run).
# Debian packages the test suite needs are listed in scripts/apt-packages.txt, one per line.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${HOSTBAY_VENV:-$ROOT/.venv}
PY=${PYTHON:-python3}

pip_install() {  # quiet pip; its full output is shown only when it fails
  local out; out=$(mktemp)
  if ! "$VENV/bin/pip" install --disable-pip-version-check "$@" >"$out" 2>&1; then
    grep -v "is ignored: it is neither a file nor a directory" "$out" >&2; rm -f "$out"; return 1
  fi
  rm -f "$out"
}

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
  log "need root for: $*"; return 1; fi; }

ensure_venv() {
  if [ ! -x "$VENV/bin/python" ]; then
    log "creating virtual environment $VENV"
    "$PY" -m venv "$VENV" || { as_root apt-get install -y python3-venv && "$PY" -m venv "$VENV"; }
  fi
  pip_install --upgrade pip
}

ensure_apt() {  # install the listed Debian packages that are missing
  local missing=()
  for pkg in "$@"; do dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing Debian packages: ${missing[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq -o Dpkg::Options::=--force-confnew \
    -o Dpkg::Options::=--force-confdef "${missing[@]}" >/dev/null
}

apt_packages() { grep -vE '^\s*(#|$)' "$ROOT/scripts/apt-packages.txt"; }

start_postgres() {
  pg_isready -q -h 127.0.0.1 2>/dev/null && return 0
  log "starting PostgreSQL"
  as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start 2>/dev/null \
    || as_root service postgresql start
  for _ in $(seq 30); do pg_isready -q -h 127.0.0.1 && return 0; sleep 1; done
  log "PostgreSQL did not start"; return 1
}

start_redis() {
  redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 && return 0
  log "starting Redis"
  as_root mkdir -p /var/lib/redis /var/log/redis
  as_root redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  for _ in $(seq 30); do redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 && return 0; sleep 0.5; done
  log "Redis did not start"; return 1
}

start_libvirt() {
  virsh -c qemu:///system version >/dev/null 2>&1 && return 0
  log "starting virtlogd and libvirtd"
  pgrep -x virtlogd >/dev/null || as_root virtlogd -d
  pgrep -x libvirtd >/dev/null || as_root libvirtd -d
  for _ in $(seq 30); do virsh -c qemu:///system version >/dev/null 2>&1 && return 0; sleep 1; done
  log "libvirtd did not answer"; return 1
}

# Further services (added by plugins' test needs) define start_<name> functions in scripts/services.d/*.sh.
for f in "$ROOT"/scripts/services.d/*.sh; do if [ -e "$f" ]; then . "$f"; fi; done
true
