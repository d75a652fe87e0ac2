#!/usr/bin/env bash
# stop-slurm.sh - stop the daemons started by start-slurm.sh, using only their PID files.
# Adapted from ../shared/notes/stop-slurm.sh.
# Usage: stop-slurm.sh [--purge]   (--purge also deletes slurm state, logs, the mariadb datadir and slurm.conf:
# with a slurm.conf and no controller, every Snakemake start pays ~9 s in the SLURM plugin's `scontrol` retries)
set -uo pipefail
BASE=${SLURM_CI_DIR:-/tmp/layerlab-slurm}
RUN=$BASE/run
stop_pidfile() { # stop_pidfile <name> <pidfile>
  local name=$1 pf=$2 pid t0
  [ -s "$pf" ] || { echo "$name: no pid file"; return 0; }
  pid=$(cat "$pf")
  if ! kill -0 "$pid" 2>/dev/null; then echo "$name: not running (stale pid $pid)"; rm -f "$pf"; return 0; fi
  t0=$(date +%s%3N)
  kill -TERM "$pid"
  for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
  if kill -0 "$pid" 2>/dev/null; then echo "$name: still alive after 15s, SIGKILL $pid"; kill -KILL "$pid"; fi
  rm -f "$pf"; echo "$name: stopped (pid $pid, $(( $(date +%s%3N) - t0 )) ms)"
}
# order: compute daemon, controller, accounting daemon, database, auth
stop_pidfile slurmd    "$RUN/slurmd.pid"
stop_pidfile slurmctld "$RUN/slurmctld.pid"
stop_pidfile slurmdbd  "$RUN/slurmdbd.pid"
stop_pidfile mariadbd  "$RUN/mysql/mariadb.pid"
stop_pidfile munged    "$RUN/munge/munged.pid"
if [ "${1:-}" = "--purge" ]; then
  rm -rf "$BASE/state" "$BASE/log" "$BASE/mysql-data" "$RUN"
  rm -f /etc/slurm/slurm.conf   # start-slurm.sh writes it again
  echo "purged state/log/mysql-data under $BASE and /etc/slurm/slurm.conf"
fi
