#!/usr/bin/env bash
# CI: start a real one-node SLURM cluster on this host (munged, slurmctld, slurmd as plain background
# daemons: no systemd, no cgroups, no slurmdbd) and wait until its node is idle.
#   .ci/slurm/start.sh        # safe to run again: running daemons are kept, the config is refreshed
#   .ci/slurm/stop.sh         # stops the daemons again
# Needs root (or password-less sudo) and Debian/Ubuntu packages (installed here if missing).
# Environment: BOLTZFLOW_SLURM_DIR (state and logs, default /tmp/boltzflow-slurm),
# BOLTZFLOW_SLURM_PARTITION (default debug), BOLTZFLOW_SLURM_WAIT (seconds to wait for the node, 60).
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    exec sudo -n -E bash "$0" "$@"
  fi
  echo "slurm: start.sh needs root (or password-less sudo) to install and run the SLURM daemons" >&2
  exit 1
fi

SLURM_DIR=${BOLTZFLOW_SLURM_DIR:-/tmp/boltzflow-slurm}
PARTITION=${BOLTZFLOW_SLURM_PARTITION:-debug}
WAIT_S=${BOLTZFLOW_SLURM_WAIT:-60}
CONF=/etc/slurm/slurm.conf  # the default path: sbatch/squeue run by Snakemake find it without SLURM_CONF
MARKER="# written by boltzflow .ci/slurm/start.sh"
PACKAGES=(munge slurm-client slurmctld slurmd)

log() { echo "slurm: $*"; }
fail() {
  echo "slurm: ERROR: $*" >&2
  for f in "$SLURM_DIR"/log/slurmctld.log "$SLURM_DIR"/log/slurmd.log /var/log/munge/munged.log; do
    if [ -s "$f" ]; then echo "---- last lines of $f" >&2; tail -n 25 "$f" >&2; fi
  done
  exit 1
}

# ---------------------------------------------------------------- packages (quiet, idempotent)
missing=()
for package in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Keep the packages' maintainer scripts from starting the daemons with their stock config.
  own_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && own_policy=1
  fi
  install_log=$(mktemp)
  apt_install() { apt-get install -y -q --no-install-recommends "${missing[@]}" >>"$install_log" 2>&1; }
  # apt-get update only when the package lists do not know the packages or are stale (install fails).
  if ! apt-cache show slurmctld >/dev/null 2>&1 || ! apt_install; then
    apt-get update -q >>"$install_log" 2>&1 || true
    if ! apt_install; then
      if [ "$own_policy" -eq 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
      cat "$install_log" >&2
      fail "apt-get install ${missing[*]} failed"
    fi
  fi
  if [ "$own_policy" -eq 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
  rm -f "$install_log"
fi

# ---------------------------------------------------------------- slurm.conf for this host
node=$(hostname -s)
cpus=$(nproc)
mem_total_mb=$(( $(awk '/^MemTotal:/{print $2}' /proc/meminfo) / 1024 ))
margin_mb=$(( mem_total_mb / 10 > 512 ? mem_total_mb / 10 : 512 ))  # 10 %, at least 512 MB, for the OS
real_memory=$(( mem_total_mb - margin_mb ))
mkdir -p "$SLURM_DIR"/{state,spool,log} /etc/slurm

new_conf=$(mktemp)
cat >"$new_conf" <<EOF
$MARKER: a one-node test cluster, not for production.
ClusterName=boltzflow
SlurmctldHost=${node}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
MailProg=/bin/true
CredType=cred/munge
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$SLURM_DIR/state
SlurmdSpoolDir=$SLURM_DIR/spool
SlurmctldPidFile=$SLURM_DIR/slurmctld.pid
SlurmdPidFile=$SLURM_DIR/slurmd.pid
SlurmctldLogFile=$SLURM_DIR/log/slurmctld.log
SlurmdLogFile=$SLURM_DIR/log/slurmd.log
# No systemd or cgroups: track job processes through /proc and bind no tasks.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
# No slurmdbd: no accounting (sacct fails), so Snakemake polls job states with squeue, which needs
# finished jobs kept in slurmctld's memory for a while (MinJobAge, seconds).
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MinJobAge=600
# Reject at submission a job that asks more than the partition/node has (otherwise it pends forever).
EnforcePartLimits=ALL
SchedulerType=sched/backfill
# CPUs and memory are consumable: two 1-CPU jobs run at once on a 2-CPU node.
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
DefMemPerCPU=500
# Use the CPUs/memory below even where slurmd detects a different layout; never drain the node for it.
SlurmdParameters=config_overrides
ReturnToService=2
SlurmctldTimeout=60
SlurmdTimeout=60
InactiveLimit=0
KillWait=10
Waittime=0
NodeName=$node NodeAddr=127.0.0.1 NodeHostname=$node CPUs=$cpus RealMemory=$real_memory State=UNKNOWN
PartitionName=$PARTITION Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
conf_changed=1
if [ -f "$CONF" ] && cmp -s "$new_conf" "$CONF"; then
  conf_changed=0
elif [ -f "$CONF" ] && ! grep -qF "$MARKER" "$CONF"; then
  cp -p "$CONF" "$CONF.boltzflow-backup"
  log "kept the existing $CONF as $CONF.boltzflow-backup"
fi
if [ "$conf_changed" -eq 1 ]; then cp "$new_conf" "$CONF" && chmod 644 "$CONF"; fi
rm -f "$new_conf"

# ---------------------------------------------------------------- munge
if [ ! -s /etc/munge/munge.key ]; then
  mkdir -p /etc/munge
  if command -v mungekey >/dev/null; then
    mungekey --create --keyfile=/etc/munge/munge.key --force >/dev/null
  else
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
  fi
fi
chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
mkdir -p /run/munge /var/lib/munge /var/log/munge
chown munge:munge /run/munge /var/lib/munge /var/log/munge /etc/munge
chmod 755 /run/munge
if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  log "munged already running"
else
  runuser -u munge -- /usr/sbin/munged || fail "munged did not start"
  for _ in $(seq 20); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.5; done
  munge -n | unmunge >/dev/null 2>&1 || fail "munged does not answer"
fi

# ---------------------------------------------------------------- slurmctld and slurmd
running() {  # running NAME PIDFILE: true when the daemon of that pid file is alive
  [ -s "$2" ] && kill -0 "$(cat "$2")" 2>/dev/null && [ "$(ps -p "$(cat "$2")" -o comm= 2>/dev/null)" = "$1" ]
}
if running slurmctld "$SLURM_DIR/slurmctld.pid"; then
  log "slurmctld already running"
  if [ "$conf_changed" -eq 1 ]; then scontrol reconfigure || true; fi
else
  # -c: forget jobs and node states of a previous cluster run (a fresh cluster each start).
  slurmctld -c || fail "slurmctld did not start"
fi
for _ in $(seq 20); do scontrol ping 2>/dev/null | grep -q "is UP" && break; sleep 0.5; done
if running slurmd "$SLURM_DIR/slurmd.pid"; then
  log "slurmd already running"
else
  slurmd -N "$node" || fail "slurmd did not start"
fi

# ---------------------------------------------------------------- wait for the node
state=""
for _ in $(seq "$WAIT_S"); do
  state=$(timeout 5 sinfo -h -N -n "$node" -o '%T' 2>/dev/null | head -n 1 || true)
  case "$state" in
    idle|mixed|allocated) break ;;
    drained|draining|down|drain*|down*) scontrol update NodeName="$node" State=RESUME 2>/dev/null || true ;;
  esac
  sleep 1
done
case "$state" in
  idle|mixed|allocated) ;;
  *) fail "node $node is not idle after ${WAIT_S} s (state: '${state:-no answer}'); see logs in $SLURM_DIR/log" ;;
esac
log "cluster up: node $node, $cpus CPUs, ${real_memory} MB, partition $PARTITION; logs in $SLURM_DIR/log"
sinfo
