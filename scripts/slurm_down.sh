#!/usr/bin/env bash
# slurm_down.sh DIR: stop the Slurm that scripts/slurm_up.sh DIR started, and nothing else.
#
# Only the PIDs recorded in DIR/run/{slurmd,slurmctld,munged}.pid are signalled (in that order),
# and only while /proc/PID/comm still names the expected daemon (a reused PID is left alone).
# Each gets SIGTERM, up to SLURM_DOWN_WAIT seconds (default 10), then SIGKILL. A zombie counts as
# stopped: PID 1 does not reap daemons here, and kill -0 succeeds on a zombie. Jobs still queued
# or running in this cluster are cancelled first, so no job outlives the daemons. A munged that
# slurm_up.sh found already running was never recorded, so it keeps running. DIR itself (config,
# logs, job completion records) is kept.
#
# Exit codes: 0 everything we started is stopped (or was already gone); 1 usage error or a
# process that survived SIGKILL.
set -euo pipefail

PROG=slurm_down.sh
WAIT=${SLURM_DOWN_WAIT:-10}
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH

say() { printf '%s: %s\n' "$PROG" "$*" >&2; }

if [ $# -ne 1 ] || [ -z "$1" ] || [ "${1#-}" != "$1" ]; then
  echo "usage: $PROG DIR   (stop the Slurm that slurm_up.sh DIR started)" >&2
  exit 1
fi
if [ ! -d "$1" ]; then
  say "$1 does not exist: nothing to stop"
  exit 0
fi
DIR=$(cd "$1" && pwd)
RUN=$DIR/run
CONF=$DIR/etc/slurm.conf

# A live process: it exists and is not a zombie (state letter in /proc/PID/stat).
alive() {
  local state
  state=$(sed -E 's/^.*\) ([A-Za-z]).*$/\1/' "/proc/$1/stat" 2>/dev/null) || return 1
  [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

# The recorded PID of daemon $1 if it is still that daemon and alive, else nothing.
our_pid() {
  local file=$RUN/$1.pid pid comm
  [ -s "$file" ] || return 0
  pid=$(tr -d '[:space:]' <"$file")
  case "$pid" in '' | *[!0-9]*) return 0 ;; esac
  alive "$pid" || return 0
  comm=$(cat "/proc/$pid/comm" 2>/dev/null || true)
  if [ "$comm" != "$1" ]; then
    say "$1: pid $pid from $file is now '$comm', not $1: leaving it alone"
    return 0
  fi
  echo "$pid"
}

# 1. Cancel this cluster's jobs while its controller still answers.
ctld=$(our_pid slurmctld)
if [ -n "$ctld" ] && [ -f "$CONF" ]; then
  export SLURM_CONF=$CONF
  jobs=$(squeue -h -o %A 2>/dev/null | sort -u | tr '\n' ' ' || true)
  if [ -n "${jobs// /}" ]; then
    say "cancelling jobs still in the queue: $jobs"
    # shellcheck disable=SC2086 # one argument per job ID
    scancel $jobs 2>/dev/null || true
    for _ in $(seq 1 $((WAIT * 4))); do
      [ -z "$(squeue -h 2>/dev/null || true)" ] && break
      sleep 0.25
    done
  fi
fi

# 2. Stop the daemons, last started first.
status=0
stop() {
  local name=$1 pid
  pid=$(our_pid "$name")
  if [ -z "$pid" ]; then
    if [ -e "$RUN/$name.pid" ]; then say "$name: not running"; fi
    rm -f "$RUN/$name.pid"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 $((WAIT * 10))); do
    alive "$pid" || break
    sleep 0.1
  done
  if alive "$pid"; then
    say "$name: pid $pid still running ${WAIT}s after SIGTERM: sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
      alive "$pid" || break
      sleep 0.1
    done
  fi
  if alive "$pid"; then
    say "ERROR: $name: pid $pid survived SIGKILL"
    status=1
    return 0
  fi
  say "$name: stopped pid $pid"
  rm -f "$RUN/$name.pid"
}
stop slurmd
stop slurmctld
stop munged
exit "$status"
