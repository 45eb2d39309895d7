#!/usr/bin/env bash
# Creates .venv-ci with the peer runtimes the tests call (onnxruntime, ...). Idempotent: a venv whose
# requirements stamp matches is reused.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${EFFV2_VENV:-.venv-ci}
REQ=scripts/py/requirements-ci.txt
if [[ -x "$VENV/bin/python" ]] && cmp -s "$REQ" "$VENV/.requirements"; then
  exit 0
fi
python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQ"
cp "$REQ" "$VENV/.requirements"
echo "python peers ready in $VENV"
