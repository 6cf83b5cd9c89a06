#!/usr/bin/env bash
# Create .venv, install rlr, and run the main job on the default small CPU setting:
# the reward-hacking probe (seconds), then the paper's ablation on the synthetic task
# (`rlr reproduce --preset cpu`, about half an hour on 2 cores; cached, so a rerun continues).
#   bash launch/local.sh [OUT_DIR] [extra rlr reproduce arguments, e.g. --seeds 3]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
export JAX_PLATFORMS="${JAX_PLATFORMS:-cpu}"
OUT="${1:-runs/reproduce}"
shift || true
rlr probe --out runs/probe
rlr reproduce --preset cpu --out "$OUT" "$@"
echo "[rlr] probe: $RLR_ROOT/runs/probe (probe.json, probe.png)"
echo "[rlr] reproduction: $RLR_ROOT/$OUT (results.md, results.json, curves.png)"
