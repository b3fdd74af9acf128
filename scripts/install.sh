#!/usr/bin/env bash
# Install mlm_pretrain (editable) into the active Python environment.
#   bash scripts/install.sh        # the package
#   bash scripts/install.sh dev    # + test dependencies
# PyTorch comes first, as the pinned CPU build, when the environment has none: an unpinned torch
# resolved by pip on a machine without it pulls several GB of CUDA packages.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
if ! "$PY" -c "import torch" 2>/dev/null; then
    "$PY" -m pip install --quiet "torch==${TORCH_VERSION:-2.13.0}"
fi
extras=${1:-}
"$PY" -m pip install --quiet -e ".${extras:+[$extras]}"
