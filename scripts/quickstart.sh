#!/usr/bin/env bash
# The README's first command: set everything up (scripts/bootstrap.sh: .venv/ with wan-diffusers and its test extra),
# then run the offline demo, which writes outputs/demo.mp4.
#
# The demo is a tiny random-weight Wan pipeline built in code: it needs no download and runs on a CPU in seconds, and
# its frames are noise. It shows that the whole path (prompt, sampling, decoding, mp4) works. For a real video, run
#   .venv/bin/wan-diffusers generate --model Wan-AI/Wan2.1-T2V-1.3B-Diffusers --prompt "..." --output cat.mp4
# on a GPU (see README.md).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/bootstrap.sh
.venv/bin/wan-diffusers generate --prompt "A cat walks on the grass, realistic style." --output outputs/demo.mp4
