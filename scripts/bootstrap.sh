#!/usr/bin/env bash
# Creates .venv/ and installs wan-diffusers with its dev extra (the test extra and ruff).
#
# torch is installed first and on its own: a later `pip install` that finds a satisfying torch keeps it, while one
# that finds none would pull the newest build from PyPI (several GB of CUDA wheels on Linux). Set TORCH_SPEC to pick
# another build, e.g. TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128".
set -euo pipefail
cd "$(dirname "$0")/.."

python_bin="${PYTHON:-python3}"
torch_spec="${TORCH_SPEC:-torch==2.13.0}"

if [ ! -x .venv/bin/python ]; then
  "$python_bin" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# shellcheck disable=SC2086
.venv/bin/python -m pip install --quiet $torch_spec
.venv/bin/python -m pip install --quiet -c .ci/constraints.txt -e ".[dev]"
.venv/bin/python -c "import torch, diffusers, transformers, wan_diffusers; print('wan-diffusers', wan_diffusers.__version__, '| torch', torch.__version__, '| diffusers', diffusers.__version__, '| transformers', transformers.__version__)"
