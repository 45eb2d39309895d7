#!/usr/bin/env bash
# Installs the real data sets the tests and the README's main job use: Fashion-MNIST from Debian's
# `dataset-fashion-mnist` (/usr/share/datasets/fashion-mnist). Idempotent; sudo only when not root.
set -euo pipefail
if [[ -f /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz ]]; then
  exit 0
fi
SUDO=""
if [[ "$(id -u)" != 0 ]]; then
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get install -y dataset-fashion-mnist >/dev/null 2>&1 || {
  $SUDO apt-get update >/dev/null
  $SUDO apt-get install -y dataset-fashion-mnist >/dev/null
}
echo "Fashion-MNIST ready in /usr/share/datasets/fashion-mnist"
