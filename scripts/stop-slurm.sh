#!/usr/bin/env bash
# stop-slurm.sh - stop the single-node SLURM started by scripts/start-slurm.sh:
# cancels any remaining jobs (by job id), then stops slurmd, slurmctld and
# munged by the PIDs in their pid files (checked against the expected command
# name).  Never kills by process name.  Leaves packages, slurm.conf and the
# munge key in place, so start-slurm.sh restarts quickly.
#
# Must run as root (the daemons run as root / munge).  Idempotent: with
# nothing running it only reports the missing pid files and exits 0.
set -uo pipefail

log() { echo "[stop-slurm] $*" >&2; }

[ "$(id -u)" = 0 ] || { log "must run as root"; exit 1; }

running() { local st; st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) && [ -n "$st" ] && [ "$st" != Z ]; }

stop_pidfile() {
  local pf=$1 comm=$2 pid
  if [ -s "$pf" ]; then
    pid=$(cat "$pf")
    if running "$pid" && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$comm" ]; then
      log "stopping $comm (pid $pid)"
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do running "$pid" || break; sleep 0.2; done
      if running "$pid"; then log "$comm did not exit, SIGKILL"; kill -KILL "$pid" 2>/dev/null || true; fi
    else
      log "$comm: pid $pid in $pf is not running"
    fi
    rm -f "$pf"
  else
    log "$comm: no pid file $pf"
  fi
}

# cancel leftover jobs (by job id) while the controller is still up
if [ -s /run/slurm/slurmctld.pid ] && command -v squeue >/dev/null; then
  mapfile -t jobs < <(squeue -h -o '%A' 2>/dev/null || true)
  if [ ${#jobs[@]} -gt 0 ]; then log "cancelling jobs: ${jobs[*]}"; scancel "${jobs[@]}" 2>/dev/null || true; sleep 1; fi
fi
stop_pidfile /run/slurm/slurmd.pid slurmd
stop_pidfile /run/slurm/slurmctld.pid slurmctld
stop_pidfile /run/munge/munged.pid munged
