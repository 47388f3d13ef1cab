#!/usr/bin/env bash
# CI: stop the one-node SLURM cluster of .ci/slurm/start.sh (slurmd, slurmctld, munged).
# Idempotent and never fails its caller: stopping a cluster that is not running is fine.
set -u
SLURM_DIR=${BOLTZFLOW_SLURM_DIR:-/tmp/boltzflow-slurm}
SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null && sudo -n true 2>/dev/null; then SUDO="sudo -n"; fi

stop() {  # stop NAME PIDFILE: TERM the daemon (pid file, else by exact process name), KILL after 10 s
  local name=$1 pidfile=$2 pids=""
  if [ -s "$pidfile" ]; then
    pids=$(cat "$pidfile" 2>/dev/null)
    [ "$(ps -p "$pids" -o comm= 2>/dev/null)" = "$name" ] || pids=""
  fi
  [ -n "$pids" ] || pids=$(pgrep -x "$name" 2>/dev/null | tr '\n' ' ')
  if [ -z "${pids// /}" ]; then
    return 0
  fi
  # shellcheck disable=SC2086
  $SUDO kill -TERM $pids 2>/dev/null
  for _ in $(seq 20); do
    # shellcheck disable=SC2086
    kill -0 $pids 2>/dev/null || break
    sleep 0.5
  done
  # shellcheck disable=SC2086
  if kill -0 $pids 2>/dev/null; then $SUDO kill -KILL $pids 2>/dev/null; fi
  $SUDO rm -f "$pidfile" 2>/dev/null
  echo "slurm: stopped $name"
}

{
  stop slurmd "$SLURM_DIR/slurmd.pid"
  stop slurmctld "$SLURM_DIR/slurmctld.pid"
  stop munged /run/munge/munged.pid
  # Remove start.sh's slurm.conf (restoring one it replaced): with a config naming a controller that
  # is down, every SLURM client call (and so every snakemake start, whose slurm plugin runs
  # `scontrol show config` on import) waits ~10 s; without one they fail at once.
  conf=/etc/slurm/slurm.conf
  if [ -f "$conf" ] && grep -qF "# written by boltzflow .ci/slurm/start.sh" "$conf"; then
    if [ -f "$conf.boltzflow-backup" ]; then
      $SUDO mv -f "$conf.boltzflow-backup" "$conf"
    else
      $SUDO rm -f "$conf"
    fi
  fi
} 2>/dev/null || true
exit 0
