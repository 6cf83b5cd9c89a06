#!/usr/bin/env bash
# Create .venv, install rlr, and run the main job on the default small CPU setting.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
export JAX_PLATFORMS="${JAX_PLATFORMS:-cpu}"
OUT="${1:-runs/probe}"
rlr probe --out "$OUT"
echo "[rlr] results in $RLR_ROOT/$OUT (probe.json, probe.png)"
