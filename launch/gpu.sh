#!/usr/bin/env bash
# Run an rlr job on one GPU node, or on several nodes through a coordinator.
#
#   One node, all its GPUs:
#     bash launch/gpu.sh launch/configs/qwen2_1p5b_math.yaml [key=value ...]
#   Several nodes (run the same line on each, with its own RLR_PROCESS_ID = node rank):
#     RLR_COORDINATOR_ADDRESS=10.0.0.1:1234 RLR_NUM_PROCESSES=4 RLR_PROCESS_ID=0 \
#       bash launch/gpu.sh launch/configs/qwen25_math_7b.yaml
#
# Installs rlr with jax[cuda12] into .venv on first use. rlr calls
# jax.distributed.initialize() from the RLR_* variables when they are set.
set -euo pipefail
if [ $# -lt 1 ]; then
  sed -n '2,12p' "$0"; exit 2
fi
CONFIG="$1"; shift
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
[ -f "$CONFIG" ] || [ -f "rlr/configs/${CONFIG%.yaml}.yaml" ] || {
  echo "config $CONFIG is neither a file nor a shipped config (rlr/configs)" >&2; exit 2; }
if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
# shellcheck disable=SC1091
source .venv/bin/activate
python -c "import rlr, jax; assert jax.default_backend() == 'gpu'" 2>/dev/null || \
  python -m pip install -q -e . 'jax[cuda12]'
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}"
exec rlr ppo --config "$CONFIG" "$@"
