#!/usr/bin/env bash
# Start N processes of an rlr command on this machine, the CPU devices split between them:
# the multi-host path of a TPU pod or GPU cluster (one mesh over every process's devices,
# gloo collectives on CPU), without the pod.
#
#   bash launch/local_multiprocess.sh N CMD [ARGS ...]
#   bash launch/local_multiprocess.sh 2 ppo --config ppo_cpu iterations=3
#
# Each process gets RLR_COORDINATOR_ADDRESS, RLR_NUM_PROCESSES and RLR_PROCESS_ID (what
# launch/gpu.sh sets on several nodes; a TPU pod takes them from its metadata) and
# RLR_DEVICES_PER_PROCESS fake CPU devices (default 4). Process 0 prints to this terminal; process i > 0 writes to
# $RLR_LOG_DIR/process_i.log (default runs/multiprocess). SIGTERM / Ctrl-C reaches every
# process as SIGTERM (each saves the same step and exits 0). When one process fails, the others
# are stopped; the script exits with the first non-zero status.
set -euo pipefail
if [ $# -lt 2 ] || ! [[ "$1" =~ ^[1-9][0-9]*$ ]]; then
  sed -n '2,15p' "$0"; exit 2
fi
N="$1"; shift
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${RLR_PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON="$(command -v python3)"
DEVICES="${RLR_DEVICES_PER_PROCESS:-4}"
LOG_DIR="${RLR_LOG_DIR:-runs/multiprocess}"
PORT="${RLR_PORT:-$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("", 0)); print(s.getsockname()[1])')}"
mkdir -p "$LOG_DIR"
pids=()
forward() { for pid in "${pids[@]}"; do kill -s "$1" "$pid" 2>/dev/null || true; done; }
# Background children of a script ignore SIGINT; both signals reach them as SIGTERM, which
# each process answers by saving the same step and exiting 0.
trap 'forward TERM' INT TERM
export RLR_COORDINATOR_ADDRESS="localhost:$PORT" RLR_NUM_PROCESSES="$N" JAX_PLATFORMS=cpu
export XLA_FLAGS="--xla_force_host_platform_device_count=$DEVICES ${XLA_FLAGS:-}"
for ((i = 0; i < N; i++)); do
  if [ "$i" -eq 0 ]; then
    RLR_PROCESS_ID=0 "$PYTHON" -m rlr.cli "$@" &
  else
    RLR_PROCESS_ID="$i" "$PYTHON" -m rlr.cli "$@" > "$LOG_DIR/process_$i.log" 2>&1 &
  fi
  pids+=("$!")
done
status=0
reaper=""
remaining=("${pids[@]}")
while [ "${#remaining[@]}" -gt 0 ]; do
  alive=()
  for pid in "${remaining[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then alive+=("$pid"); continue; fi
    set +e; wait "$pid"; code=$?; set -e  # the exit status bash kept for it
    if [ "$code" -ne 0 ] && [ "$status" -eq 0 ]; then
      status=$code
      # the others would wait for it in a collective: stop them, and kill what remains later
      forward TERM
      # (its output goes to /dev/null: a sleep left holding this script's stdout would keep
      # a reader of it, such as `| tee`, waiting 30 s after the script exits)
      ( sleep 30; forward KILL ) > /dev/null 2>&1 &
      reaper=$!
    fi
  done
  remaining=("${alive[@]+"${alive[@]}"}")
  if [ "${#remaining[@]}" -gt 0 ]; then sleep 0.5; fi
done
if [ -n "$reaper" ]; then kill "$reaper" 2>/dev/null || true; fi
exit "$status"
