#!/usr/bin/env bash
# Run an rlr job on every worker of a Cloud TPU VM slice (the same command on each host).
#
#   bash launch/tpu_pod.sh TPU_NAME ZONE launch/configs/qwen2_1p5b_math.yaml [key=value ...]
#
# Each worker gets the repo (rsync via scp), installs rlr with jax[tpu], and runs
# `rlr ppo --config CONFIG`. JAX finds its peers through the TPU metadata; rlr calls
# jax.distributed.initialize() when TPU_WORKER_HOSTNAMES lists more than one host.
# Checkpoints and metrics should point at a bucket (out_dir=gs://...) so every host shares them.
set -euo pipefail
if [ $# -lt 3 ]; then
  sed -n '2,10p' "$0"; exit 2
fi
TPU_NAME="$1"; ZONE="$2"; CONFIG="$3"; shift 3
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
[ -f "$ROOT/$CONFIG" ] || [ -f "$CONFIG" ] || [ -f "$ROOT/rlr/configs/${CONFIG%.yaml}.yaml" ] || {
  echo "config $CONFIG is neither a file nor a shipped config (rlr/configs)" >&2; exit 2; }
OVERRIDES="$*"
tar -C "$ROOT" --exclude=.venv --exclude=runs --exclude=.git -czf /tmp/rlr.tgz .
gcloud compute tpus tpu-vm scp /tmp/rlr.tgz "$TPU_NAME":/tmp/rlr.tgz --zone "$ZONE" --worker=all
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE" --worker=all --command "
  set -e; mkdir -p ~/rlr && tar -C ~/rlr -xzf /tmp/rlr.tgz && cd ~/rlr
  python3 -m venv .venv && . .venv/bin/activate
  pip install -q -e . 'jax[tpu]' -f https://storage.googleapis.com/jax-releases/libtpu_releases.html
  rlr ppo --config $CONFIG $OVERRIDES"
