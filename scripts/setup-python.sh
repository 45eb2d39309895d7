#!/usr/bin/env bash
# Creates .venv-ci with the peer runtimes the tests call (onnxruntime, ...). Idempotent: a venv whose
# requirements stamp matches is reused.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${EFFV2_VENV:-.venv-ci}
REQ=scripts/py/requirements-ci.txt
# Wheels installed without their dependencies (only a tool inside them is used).
TOOLS=scripts/py/requirements-ci-tools.txt
if [[ -x "$VENV/bin/python" ]] && cat "$REQ" "$TOOLS" | cmp -s - "$VENV/.requirements"; then
  exit 0
fi
python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQ"
"$VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps -r "$TOOLS"
cat "$REQ" "$TOOLS" > "$VENV/.requirements"
echo "python peers ready in $VENV"
