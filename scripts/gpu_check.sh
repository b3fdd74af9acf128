#!/usr/bin/env bash
# Validate an installation on one GPU in at most 8 minutes; prints one table, exits non-zero on any failure.
#   bash scripts/gpu_check.sh                         # install from this checkout (keeping the machine's torch), then check
#   bash scripts/gpu_check.sh --wheels /path/wheels   # offline: missing requirements from a folder of wheels (--no-index)
#   bash scripts/gpu_check.sh --skip-install          # use what is installed
#   bash scripts/gpu_check.sh --dry-run               # CPU, tiny sizes, fp32 (automatic without CUDA)
#   PYTHON=/path/to/venv/bin/python bash scripts/gpu_check.sh ...
# Every option: python scripts/gpu_check.py --help
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$(command -v python || command -v python3)}
exec "$PY" scripts/gpu_check.py "$@"
