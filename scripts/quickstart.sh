#!/usr/bin/env bash
# The README's first command: set everything up (scripts/bootstrap.sh: .venv/ with wan-diffusers and its test extra),
# then run the offline demo, which writes outputs/demo.mp4.
#
# The demo is the tiny shapes model shipped in the package (`wan_diffusers.tiny_model_path()`): a real Wan 2.1 DiT and
# VAE, trained on a 2-core CPU by scripts/train_tiny_shapes.py on prompts such as "a red circle moves right": it
# draws a 64 x 64 moving shape of the colour and direction the prompt asks for, offline in seconds (every shape
# comes out as a roundish blob, see benchmarks/RESULTS.md); the console names the prompt and the model. For a real video, run
#   .venv/bin/wan-diffusers generate --model Wan-AI/Wan2.1-T2V-1.3B-Diffusers --prompt "..." --output cat.mp4
# on a GPU (see README.md).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/bootstrap.sh
.venv/bin/wan-diffusers generate --prompt "a red circle moves right" --output outputs/demo.mp4
