#!/usr/bin/env bash
# Create .venv, install rlr, and run the main job on the default small CPU setting:
# the reward-hacking probe (seconds), then the paper's ablation on the synthetic task
# (`rlr reproduce --preset cpu`, about 21 minutes on 2 cores for one seed, 65-85 for --seeds 3;
# cached, so a rerun continues).
#   bash launch/local.sh [OUT_DIR] [extra rlr reproduce arguments, e.g. --seeds 3]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh" ""  # no extras (a sourced file would see our arguments)
export JAX_PLATFORMS="${JAX_PLATFORMS:-cpu}"
OUT="${1:-runs/reproduce}"
shift || true
rlr probe --out runs/probe
rlr reproduce --preset cpu --out "$OUT" "$@"
where() { python -c 'import os, sys; print(os.path.abspath(sys.argv[1]))' "$1"; }
echo "[rlr] probe: $(where runs/probe) (probe.json, probe.png)"
echo "[rlr] reproduction: $(where "$OUT") (results.md, results.json, curves.png)"
