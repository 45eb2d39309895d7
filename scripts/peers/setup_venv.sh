#!/usr/bin/env bash
# Create a Python venv with the pinned peer libraries (torch, torchvision, timm, ...).
# Usage: scripts/peers/setup_venv.sh [VENV_DIR]   (default: .venv-peers)
# Needs network access to PyPI. Never run in CI: CI only reads the committed fixtures.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${1:-.venv-peers}"
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --upgrade pip
"$venv/bin/python" -m pip install -r "$here/requirements.txt"
echo "venv ready: $venv"
echo "regenerate fixtures: $venv/bin/python $here/make_fixtures.py --out toolkit/tests/fixtures/peers"
