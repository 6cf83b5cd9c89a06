# Sourced by launch/local.sh and launch/test.sh: make .venv and install rlr into it.
# Usage: source launch/_venv.sh [EXTRAS]   (EXTRAS e.g. "dev"; empty for the plain package)
set -euo pipefail
RLR_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$RLR_ROOT"
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "[rlr] creating .venv with $($PYTHON --version 2>&1)"
  "$PYTHON" -m venv .venv
fi
# shellcheck disable=SC1091
source .venv/bin/activate
extras="${1:-}"
spec="."
[ -n "$extras" ] && spec=".[$extras]"
stamp=".venv/.rlr-installed-$(cat setup.cfg pyproject.toml | cksum | cut -d' ' -f1)-${extras:-base}"
if [ ! -f "$stamp" ]; then
  echo "[rlr] installing rlr ($spec) into .venv"
  python -m pip install -q --upgrade pip
  python -m pip install -q -e "$spec"
  touch "$stamp"
fi
