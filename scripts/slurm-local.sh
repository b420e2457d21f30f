#!/usr/bin/env bash
# A real single-node Slurm cluster on this machine, for the `run --slurm` tests and CI.
#
#   eval "$(bash scripts/slurm-local.sh start)"   # prints `export SLURM_CONF=…` on stdout
#   bash scripts/slurm-local.sh stop
#
# `start` installs the Debian packages where missing (slurmctld, slurmd, slurm-client, munge:
# Slurm 22.05 on Debian 12), writes a slurm.conf into a private folder and starts munged,
# slurmctld and slurmd without systemd; `/etc/slurm` is left alone. `stop` cancels every job, then
# stops the daemons it started by the pids in their pid files (never by name). Needs root (apt-get,
# and slurmd launches jobs as their users). What works here and the traps: ../shared/SLURM.md.
#
# Environment: SLURM_LOCAL_DIR (private folder, default target/slurm-local in the checkout),
# SLURM_LOCAL_PORT (slurmctld's port, default 6817; slurmd uses the next one),
# SLURM_LOCAL_SLURMD_TIMEOUT (seconds before a silent slurmd's node goes DOWN, default 30).
set -euo pipefail
cd "$(dirname "$0")/.."

dir="${SLURM_LOCAL_DIR:-$PWD/target/slurm-local}"
port="${SLURM_LOCAL_PORT:-6817}"
slurmd_timeout="${SLURM_LOCAL_SLURMD_TIMEOUT:-30}"
conf="$dir/slurm.conf"

say() { echo "slurm-local: $*" >&2; }
die() { say "error: $*"; exit 1; }

# A pid from a pid file that names a live process (an exited daemon may linger as a zombie here:
# PID 1 does not reap orphans on this machine).
live_pid() {
  local file=$1 pid state
  [ -s "$file" ] || return 1
  pid=$(tr -dc '0-9' <"$file")
  [ -n "$pid" ] && [ -r "/proc/$pid/stat" ] || return 1
  state=$(sed 's/^.*) //' "/proc/$pid/stat" | cut -d' ' -f1)
  [ "$state" != Z ] || return 1
  echo "$pid"
}

# SIGTERM the daemon of a pid file and wait (up to 30 s) for it to exit.
stop_daemon() {
  local name=$1 file=$2 pid i
  pid=$(live_pid "$file") || { say "$name: not running"; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 300); do
    live_pid "$file" >/dev/null || { say "$name (pid $pid) stopped"; rm -f "$file"; return 0; }
    sleep 0.1
  done
  die "$name (pid $pid) did not exit within 30 s of SIGTERM"
}

install_packages() {
  local missing=()
  command -v slurmctld >/dev/null || missing+=(slurmctld)
  command -v slurmd >/dev/null || missing+=(slurmd)
  command -v sbatch >/dev/null || missing+=(slurm-client)
  command -v munged >/dev/null || [ -x /usr/sbin/munged ] || missing+=(munge)
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install them (Debian/Ubuntu only)"
  say "installing ${missing[*]} (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >&2
}

start_munge() {
  if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    say "munged already answers: using it"
    return 0
  fi
  [ -s /etc/munge/munge.key ] || die "/etc/munge/munge.key is missing (the munge package creates it)"
  mkdir -p /run/munge
  chown munge:munge /run/munge
  chmod 0755 /run/munge
  runuser -u munge -- /usr/sbin/munged </dev/null >"$dir/log/munged.out" 2>&1 \
    || die "munged did not start: $(cat "$dir/log/munged.out")"
  # Remember that this script started it, so `stop` stops only what it started.
  cp /run/munge/munged.pid "$dir/munged.pid"
  munge -n | unmunge >/dev/null || die "munged started but munge -n | unmunge fails"
  say "munged started (pid $(cat "$dir/munged.pid"))"
}

write_conf() {
  local host node
  host=$(hostname -s)
  # CPUs and RealMemory as slurmd detects them: a larger RealMemory drains the node.
  node=$(slurmd -C | head -n 1)
  case "$node" in NodeName=*) ;; *) die "unexpected \`slurmd -C\` output: $node" ;; esac
  cat >"$conf" <<EOF
# Written by scripts/slurm-local.sh: a single-node cluster for tests (see ../shared/SLURM.md).
ClusterName=sr-local
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
MailProg=/bin/true
ReturnToService=2
SlurmdTimeout=$slurmd_timeout
MinJobAge=300
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
${node/NodeName=$host/NodeName=$host NodeAddr=127.0.0.1}
PartitionName=local Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
}

start() {
  [ "$(id -u)" = 0 ] || die "run as root: apt-get, munged and slurmd need it"
  export SLURM_CONF="$conf"
  if live_pid "$dir/slurmctld.pid" >/dev/null && live_pid "$dir/slurmd.pid" >/dev/null; then
    say "already running ($conf)"
    echo "export SLURM_CONF=$conf"
    return 0
  fi
  install_packages
  mkdir -p "$dir/log" "$dir/spool"
  rm -rf "$dir/state" && mkdir -p "$dir/state"
  start_munge
  write_conf
  slurmctld -i </dev/null >"$dir/log/slurmctld.out" 2>&1 \
    || die "slurmctld did not start: $(cat "$dir/log/slurmctld.out"; tail -n 5 "$dir/log/slurmctld.log" 2>/dev/null)"
  slurmd </dev/null >"$dir/log/slurmd.out" 2>&1 \
    || die "slurmd did not start: $(cat "$dir/log/slurmd.out"; tail -n 5 "$dir/log/slurmd.log" 2>/dev/null)"
  local i state=""
  for i in $(seq 1 300); do
    state=$(sinfo -h -o %T 2>/dev/null || true)
    [ "$state" = idle ] && break
    sleep 0.1
  done
  [ "$state" = idle ] || die "the node is not idle after 30 s (sinfo: ${state:-no answer}); logs in $dir/log"
  say "cluster up: $(sinfo -h -o '%P %D node(s) %c CPUs %m MB %T')"
  echo "export SLURM_CONF=$conf"
}

stop() {
  export SLURM_CONF="$conf"
  if live_pid "$dir/slurmctld.pid" >/dev/null; then
    # Running jobs outlive slurmd: cancel them first and wait until the queue is empty.
    local ids i
    ids=$(squeue -h -o %A 2>/dev/null | sort -u | tr '\n' ' ')
    if [ -n "${ids// /}" ]; then
      say "cancelling jobs $ids"
      # shellcheck disable=SC2086
      scancel $ids 2>/dev/null || true
      for i in $(seq 1 600); do
        [ -z "$(squeue -h -o %A 2>/dev/null)" ] && break
        sleep 0.1
      done
      [ -z "$(squeue -h -o %A 2>/dev/null)" ] || say "warning: jobs still listed after 60 s: $(squeue -h -o '%A %T' | tr '\n' ' ')"
    fi
  fi
  stop_daemon slurmd "$dir/slurmd.pid"
  stop_daemon slurmctld "$dir/slurmctld.pid"
  if [ -s "$dir/munged.pid" ]; then
    stop_daemon munged "$dir/munged.pid"
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: bash scripts/slurm-local.sh start|stop" >&2; exit 2 ;;
esac
