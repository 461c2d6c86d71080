#!/usr/bin/env bash
# slurm_up.sh DIR: start a throw-away, single-node Slurm (munged + slurmctld + slurmd) whose
# configuration, state, logs and PID files all live under DIR. For tests and trying out
# jobs/gallery.sbatch on one Debian/Ubuntu machine; stop it with scripts/slurm_down.sh DIR.
#
#   eval "$(scripts/slurm_up.sh /tmp/slurm)"     # prints: export SLURM_CONF=/tmp/slurm/etc/slurm.conf
#   sbatch ... ; squeue ; sinfo
#   scripts/slurm_down.sh /tmp/slurm
#
# What it does:
#   1. installs slurmctld, slurmd, slurm-client and munge with apt-get if a binary is missing
#      (needs root; `apt-get update` runs once, only then)
#   2. writes DIR/etc/slurm.conf and DIR/etc/cgroup.conf: no systemd, no cgroups, no accounting
#      (every client command needs SLURM_CONF=DIR/etc/slurm.conf in its environment)
#   3. starts munged as user munge (unless a working munged is already there: then it is used
#      and never stopped by slurm_down.sh), then slurmctld and slurmd
#   4. waits until the node is idle, then prints `export SLURM_CONF=...` on stdout
#
# Exactly the PIDs it started are recorded in DIR/run/{munged,slurmctld,slurmd}.pid;
# slurm_down.sh stops those and nothing else. Progress and errors go to stderr.
#
# Exit codes: 0 up; 1 failed (the reason and the daemons' log tails on stderr; whatever this run
# started is stopped again); 3 prerequisites missing and not installable (not root, no apt-get),
# which a test can turn into a skip.
#
# Environment knobs:
#   SLURM_UP_TIMEOUT=30          seconds to wait for each daemon and for the node to be idle
#   SLURMCTLD_PORT=6817, SLURMD_PORT=6818
#   SLURM_UP_OVERSUBSCRIBE=NO    the partition's OverSubscribe (FORCE:4 runs up to 4 jobs per core)
set -euo pipefail

PROG=slurm_up.sh
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TIMEOUT=${SLURM_UP_TIMEOUT:-30}
CTLD_PORT=${SLURMCTLD_PORT:-6817}
SLURMD_PORT=${SLURMD_PORT:-6818}
OVERSUBSCRIBE=${SLURM_UP_OVERSUBSCRIBE:-NO}
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH

say() { printf '%s: %s\n' "$PROG" "$*" >&2; }
unavailable() { say "cannot start Slurm here: $*"; exit 3; }

if [ $# -ne 1 ] || [ -z "$1" ] || [ "${1#-}" != "$1" ]; then
  echo "usage: $PROG DIR   (start a single-node Slurm with its files under DIR)" >&2
  exit 1
fi
mkdir -p "$1"
DIR=$(cd "$1" && pwd)
CONF=$DIR/etc/slurm.conf
RUN=$DIR/run
LOG=$DIR/log

STARTED=0 # set once we have started a daemon: a failure after that stops them again
LOGS=()   # the logs worth showing on failure, added as their daemons are started

# Print the reason and the tails of the daemons' logs, stop what this run started, exit 1.
die() {
  say "ERROR: $*"
  local f
  for f in "${LOGS[@]}"; do
    if [ -s "$f" ]; then
      printf -- '--- last lines of %s\n' "$f" >&2
      tail -n 20 "$f" >&2
    fi
  done
  if [ "$STARTED" = 1 ]; then
    say "stopping what this run started"
    "$HERE/slurm_down.sh" "$DIR" >&2 || true
  fi
  exit 1
}

# A live process: it exists and is not a zombie. Stopped daemons can stay zombies here (PID 1
# does not reap them), and kill -0 succeeds on a zombie, so read the state letter instead.
alive() {
  local state
  state=$(sed -E 's/^.*\) ([A-Za-z]).*$/\1/' "/proc/$1/stat" 2>/dev/null) || return 1
  [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

# PIDs of live processes whose command name is $1.
live_pids_named() {
  local comm pid
  for comm in /proc/[0-9]*/comm; do
    [ "$(cat "$comm" 2>/dev/null)" = "$1" ] || continue
    pid=${comm#/proc/}
    pid=${pid%/comm}
    if alive "$pid"; then echo "$pid"; fi
  done
}

# The -f CONF a daemon was started with, for the error message.
conf_of() {
  tr '\0' '\n' <"/proc/$1/cmdline" 2>/dev/null | awk 'prev == "-f" { print; exit } { prev = $0 }'
}

# ------------------------------------------------------------------------- 1. packages
need_install=0
for bin in munged munge unmunge slurmctld slurmd sbatch sinfo squeue; do
  command -v "$bin" >/dev/null 2>&1 || need_install=1
done
if [ "$need_install" = 1 ]; then
  [ "$(id -u)" = 0 ] || unavailable "Slurm/munge are not installed and installing needs root"
  command -v apt-get >/dev/null 2>&1 || unavailable "Slurm/munge are not installed and there is no apt-get"
  say "installing slurmctld slurmd slurm-client munge with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2 || unavailable "apt-get update failed"
  apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >&2 ||
    unavailable "apt-get install slurmctld slurmd slurm-client munge failed"
fi
[ "$(id -u)" = 0 ] || unavailable "the daemons must be started as root (SlurmUser=root, munged as munge)"

# ----------------------------------------------------- 2. nothing of ours or others running
for daemon in slurmctld slurmd; do
  for pid in $(live_pids_named "$daemon"); do
    if [ -s "$RUN/$daemon.pid" ] && [ "$(cat "$RUN/$daemon.pid")" = "$pid" ]; then
      die "$daemon (pid $pid) from an earlier start in $DIR is still running; stop it first: $HERE/slurm_down.sh $DIR"
    fi
    other=$(conf_of "$pid")
    hint="stop that Slurm first"
    case "$other" in */etc/slurm.conf) hint="$hint: $HERE/slurm_down.sh ${other%/etc/slurm.conf}" ;; esac
    die "a $daemon that this run did not start is already running (pid" \
      "$pid, config ${other:-unknown}); one Slurm at a time on this machine: $hint"
  done
done

# A port someone else listens on would kill the daemon just after its start: say so now.
for port in "$CTLD_PORT" "$SLURMD_PORT"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    die "port $port on 127.0.0.1 is already in use; choose free ones with SLURMCTLD_PORT and SLURMD_PORT"
  fi
done

# Fresh controller state every time; keep an older munged.pid only while that munged lives.
rm -rf "$DIR/state" "$DIR/spool"
mkdir -p "$DIR/etc" "$DIR/state" "$DIR/spool" "$RUN" "$LOG"
rm -f "$RUN/slurmctld.pid" "$RUN/slurmd.pid" "$LOG/slurmctld.log" "$LOG/slurmd.log"
if [ -s "$RUN/munged.pid" ] && ! alive "$(cat "$RUN/munged.pid")"; then rm -f "$RUN/munged.pid"; fi

# ------------------------------------------------------------------------------ 3. munge
munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

if [ ! -s /etc/munge/munge.key ]; then # the Debian package makes one; be safe anyway
  say "creating /etc/munge/munge.key"
  install -d -o munge -g munge -m 0700 /etc/munge
  if command -v mungekey >/dev/null 2>&1; then
    mungekey --create --keyfile=/etc/munge/munge.key --force
  else
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
  fi
  chown munge:munge /etc/munge/munge.key
  chmod 0400 /etc/munge/munge.key
fi

if munge_ok; then
  if [ -s "$RUN/munged.pid" ]; then
    say "munged started by an earlier run in $DIR is still up (pid $(cat "$RUN/munged.pid")); using it"
  else
    say "a munged that we did not start is running; using it (slurm_down.sh will leave it alone)"
  fi
else
  install -d -o munge -g munge -m 0755 /run/munge
  install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge
  rm -f /run/munge/munged.pid
  LOGS+=(/var/log/munge/munged.log)
  runuser -u munge -- munged || die "munged failed to start"
  for _ in $(seq 1 $((TIMEOUT * 10))); do
    if [ -s /run/munge/munged.pid ] && munge_ok; then break; fi
    sleep 0.1
  done
  [ -s /run/munge/munged.pid ] || die "munged wrote no PID file /run/munge/munged.pid"
  cp /run/munge/munged.pid "$RUN/munged.pid"
  STARTED=1
  munge_ok || die "munged is up but a munge | unmunge round trip fails"
  say "munged started (pid $(cat "$RUN/munged.pid"))"
fi

# ------------------------------------------------------------------------ 4. slurm.conf
HOST=$(hostname -s 2>/dev/null || uname -n | cut -d. -f1)
# `slurmd -C` prints e.g. "NodeName=vm CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2
# ThreadsPerCore=1 RealMemory=24105": keep the topology, declare 95% of the memory so that a
# slightly lower reading later never drains the node for "Low RealMemory".
NODE_HW=$(slurmd -C | head -n 1 | sed -E 's/^NodeName=[^ ]+ //' | awk '{
  for (i = 1; i <= NF; i++) if ($i ~ /^RealMemory=/) { split($i, kv, "="); $i = "RealMemory=" int(kv[2] * 0.95) }
  print }')
[ -n "$NODE_HW" ] || die "slurmd -C printed nothing: cannot describe this node"

cat >"$CONF" <<EOF
# Written by scripts/slurm_up.sh: a single-node Slurm for tests; no systemd, cgroups or accounting.
ClusterName=localci
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
AuthType=auth/munge
CredType=cred/munge
# A requeued job waits out its step credentials' lifetime (120 s by default) before it
# starts again; a local test cluster needs no more than a few seconds.
AuthInfo=cred_expire=10
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
# No sacct without accounting: one line per finished job (each array task too) here instead.
JobCompType=jobcomp/filetxt
JobCompLoc=$LOG/jobcomp.txt
MpiDefault=none
SwitchType=switch/none
MailProg=/bin/true
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
# The default batch_sched_delay=3 starts array tasks in waves 3 s apart; a requeued task
# waits for the next pass of the main or backfill scheduler (every 60 and 30 s by default).
SchedulerParameters=batch_sched_delay=0,sched_interval=2,bf_interval=2
ReturnToService=2
# Finished jobs stay visible to scontrol show job for 300 s.
MinJobAge=300
KillWait=5
InactiveLimit=0
NodeName=$HOST NodeAddr=127.0.0.1 $NODE_HW State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=$OVERSUBSCRIBE
EOF

# Slurm 22.05 loads a cgroup plugin even with proctrack/linuxproc and task/none; the default
# (autodetect) may pick cgroup/v2, which wants systemd and can kill slurmd. Nothing here uses
# cgroups: pin the inert cgroup/v1, or "disabled" where it exists (Slurm 24.05 and later).
SLURM_VERSION=$(slurmd -V | awk '{ print $2 }')
if [ "$(printf '%s\n' 24.05 "$SLURM_VERSION" | sort -V | head -n 1)" = 24.05 ]; then
  echo "CgroupPlugin=disabled" >"$DIR/etc/cgroup.conf"
else
  echo "CgroupPlugin=cgroup/v1" >"$DIR/etc/cgroup.conf"
fi
export SLURM_CONF=$CONF

# --------------------------------------------------------------------------- 5. daemons
# Wait for a daemon's own PID file ($2) to name a live process.
wait_for_pidfile() {
  local name=$1 file=$2
  for _ in $(seq 1 $((TIMEOUT * 10))); do
    if [ -s "$file" ] && alive "$(cat "$file")"; then return 0; fi
    sleep 0.1
  done
  die "$name did not come up within ${TIMEOUT}s (no live PID in $file)"
}

STARTED=1 # from here on the PID files in $RUN are the daemons we started
LOGS+=("$LOG/slurmctld.log" "$LOG/slurmd.log")
slurmctld -f "$CONF" || die "slurmctld -f $CONF failed to start"
wait_for_pidfile slurmctld "$RUN/slurmctld.pid"
say "slurmctld started (pid $(cat "$RUN/slurmctld.pid"))"

slurmd -f "$CONF" -N "$HOST" || die "slurmd -f $CONF -N $HOST failed to start"
wait_for_pidfile slurmd "$RUN/slurmd.pid"
say "slurmd started (pid $(cat "$RUN/slurmd.pid"))"

# ------------------------------------------------------------------- 6. wait for idle
state=""
deadline=$(($(date +%s) + TIMEOUT))
while [ "$(date +%s)" -lt "$deadline" ]; do
  state=$(sinfo -h -n "$HOST" -o %T 2>/dev/null | head -n 1 || true)
  [ "$state" = idle ] && break
  for daemon in slurmctld slurmd; do
    alive "$(cat "$RUN/$daemon.pid")" || die "$daemon (pid $(cat "$RUN/$daemon.pid")) died"
  done
  sleep 0.2
done
[ "$state" = idle ] || die "node $HOST is not idle after ${TIMEOUT}s (state: '${state:-no answer}')"

say "Slurm $SLURM_VERSION up in $DIR: node $HOST idle ($NODE_HW)"
echo "export SLURM_CONF=$CONF"
