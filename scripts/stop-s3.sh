#!/usr/bin/env bash
# stop-s3.sh - stop the s3s-fs started by start-s3.sh, by the PID in its pid file (never by name).
set -uo pipefail
S3_BASE="${S3_BASE:-/tmp/clip-s3}"
PIDFILE="$S3_BASE/s3s-fs.pid"
running() { local st; st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) && [ -n "$st" ] && [ "$st" != Z ]; }
if [ -s "$PIDFILE" ]; then
  pid=$(cat "$PIDFILE")
  if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = s3s-fs ]; then
    if [ "${S3_STOP_HARD:-0}" = 1 ]; then kill -KILL "$pid"; else kill -INT "$pid"; fi
    for i in $(seq 1 60); do running "$pid" || break; sleep 0.2; done
    running "$pid" && kill -KILL "$pid"
    echo "[stop-s3] stopped pid $pid" >&2
  else
    echo "[stop-s3] pid $pid is not s3s-fs (already gone)" >&2
  fi
  rm -f "$PIDFILE"
else
  echo "[stop-s3] no pid file" >&2
fi
