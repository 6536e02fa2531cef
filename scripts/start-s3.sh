#!/usr/bin/env bash
# start-s3.sh - idempotent: start a real S3-compatible server (s3s-fs 0.14.1) on 127.0.0.1 and wait
# until it accepts connections. Objects are plain files under $S3_DATA/<bucket>/<key>.
# Re-running leaves a healthy running server alone. The port is chosen free unless S3_PORT is set.
# Writes $S3_BASE/s3.env with the client environment (source it).
#
# The binary: $CLIP_S3S_FS, else .deps/s3s/bin/s3s-fs in the repository, else it is installed there
# with `cargo install s3s-fs --version 0.14.1 --locked --features binary` (3-5 min once; 0.15+
# need a newer rustc).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
S3_BASE="${S3_BASE:-/tmp/clip-s3}"
S3S_FS_VERSION=0.14.1
S3_DATA="${S3_DATA:-$S3_BASE/data}"
S3_ACCESS_KEY="${S3_ACCESS_KEY:-ci-access-key}"
S3_SECRET_KEY="${S3_SECRET_KEY:-ci-secret-key}"
S3_BUCKETS="${S3_BUCKETS:-ci-bucket}"
S3_WAIT_S="${S3_WAIT_S:-30}"
BIN="${CLIP_S3S_FS:-$ROOT/.deps/s3s/bin/s3s-fs}"
PIDFILE="$S3_BASE/s3s-fs.pid"
PORTFILE="$S3_BASE/s3s-fs.port"
LOG="$S3_BASE/s3s-fs.log"
ENVFILE="$S3_BASE/s3.env"

log() { echo "[start-s3] $*" >&2; }
running() { local st; st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) && [ -n "$st" ] && [ "$st" != Z ]; }
alive() { [ -s "$PIDFILE" ] && running "$(cat "$PIDFILE")" && [ "$(cat "/proc/$(cat "$PIDFILE")/comm" 2>/dev/null)" = s3s-fs ]; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

mkdir -p "$S3_BASE" "$S3_DATA"
if [ ! -x "$BIN" ] || [ "$("$BIN" --version 2>/dev/null)" != "s3s-fs $S3S_FS_VERSION" ]; then
  command -v cargo >/dev/null || { log "cargo not found and no s3s-fs at $BIN"; exit 1; }
  BIN="$ROOT/.deps/s3s/bin/s3s-fs"
  log "cargo install s3s-fs $S3S_FS_VERSION into $ROOT/.deps/s3s (a few minutes)"
  cargo install s3s-fs --version "$S3S_FS_VERSION" --locked --features binary --root "$ROOT/.deps/s3s" --force
fi

# `--install-only`: make sure the binary is there (the test command does this; each S3 test then
# starts its own server with this script).
[ "${1:-}" = --install-only ] && exit 0

for b in $S3_BUCKETS; do mkdir -p "$S3_DATA/$b"; done   # a bucket is a directory
if alive; then
  S3_PORT="$(cat "$PORTFILE")"
  log "already running (pid $(cat "$PIDFILE"), port $S3_PORT)"
else
  rm -f "$PIDFILE"
  # a restart reuses the previous port (clients keep their endpoint) when it is still free
  if [ -z "${S3_PORT:-}" ] && [ -s "$PORTFILE" ] && ! port_open "$(cat "$PORTFILE")"; then S3_PORT="$(cat "$PORTFILE")"; fi
  S3_PORT="${S3_PORT:-$(free_port)}"
  if port_open "$S3_PORT"; then log "port $S3_PORT is taken by another process"; exit 1; fi
  log "starting s3s-fs on 127.0.0.1:$S3_PORT, data in $S3_DATA"
  RUST_LOG="${RUST_LOG:-warn}" nohup "$BIN" --host 127.0.0.1 --port "$S3_PORT" \
    --access-key "$S3_ACCESS_KEY" --secret-key "$S3_SECRET_KEY" "$S3_DATA" \
    >>"$LOG" 2>&1 </dev/null &
  echo $! > "$PIDFILE"
  echo "$S3_PORT" > "$PORTFILE"
fi

deadline=$(( $(date +%s) + S3_WAIT_S ))
until port_open "$S3_PORT"; do
  if ! alive; then log "s3s-fs exited; log:"; tail -n 30 "$LOG" >&2; exit 1; fi
  if [ "$(date +%s)" -ge "$deadline" ]; then log "not ready after ${S3_WAIT_S}s"; exit 1; fi
  sleep 0.1
done

cat > "$ENVFILE" <<EOT
export AWS_ENDPOINT_URL=http://127.0.0.1:$S3_PORT
export AWS_ACCESS_KEY_ID=$S3_ACCESS_KEY
export AWS_SECRET_ACCESS_KEY=$S3_SECRET_KEY
export AWS_REGION=us-east-1
export AWS_DEFAULT_REGION=us-east-1
export S3_DATA=$S3_DATA
EOT
log "ready: pid $(cat "$PIDFILE"), endpoint http://127.0.0.1:$S3_PORT; client env in $ENVFILE"
