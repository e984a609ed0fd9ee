#!/usr/bin/env bash
# Creates .venv and installs fulmen with its test/example extras.
# torch is installed FIRST and pinned: on a CPU-only machine this takes the CPU wheel, and the later
# `torch>=2.3` requirement is then already satisfied, so pip never pulls a multi-GB CUDA build.
# GPU users: set FULMEN_TORCH="torch==2.13.0 --index-url <your CUDA wheel index>" (see README).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q ${FULMEN_TORCH:-torch==2.13.0} 2> >(grep -v "Location .file:" >&2)
.venv/bin/python -m pip install -q -e ".[dev,extra]" 2> >(grep -v "Location .file:" >&2)
.venv/bin/python -c "import torch, fulmen; print('fulmen', fulmen.__version__, '| torch', torch.__version__)"
