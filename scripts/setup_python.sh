#!/usr/bin/env bash
# Creates the Python environment used only by the reference scripts under scripts/ (fixtures and
# peer benchmarks). The Rust project never needs Python at run time.
# Usage: scripts/setup_python.sh [VENV_DIR]   (default: /opt/pyref)
set -euo pipefail
venv=${1:-/opt/pyref}
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --upgrade pip
"$venv/bin/pip" install --quiet torch==2.9.0 transformers accelerate gguf sentence-transformers \
  pandas numpy safetensors peft matplotlib pyarrow
echo "reference environment ready: $venv/bin/python"
