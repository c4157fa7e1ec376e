#!/usr/bin/env bash
# Installs every Debian and Python package pixelmill needs to build, run its demo and
# run its tests. Idempotent: apt-get runs only for packages that are missing.
set -euo pipefail

DEB_PACKAGES=(
  build-essential cmake pkg-config clang libclang-rt-14-dev
  zlib1g-dev libzstd-dev libsnappy-dev libjansson-dev libxxhash-dev
  libopenmpi-dev openmpi-bin
  libcurl4-openssl-dev libjpeg62-turbo-dev libwebp-dev libpng-dev libgif-dev libarchive-dev
  libomp-dev
)
PY_PACKAGES=(pyarrow pandas numpy pytest webdataset wids xxhash)
# Not installed here (large, never needed by CI): torch and safetensors, used only by
# bench/train-ref/unet_ref.py (regenerating tests/golden/) and bench/train-cpu/:
#   python3 -m pip install torch safetensors

missing=()
for p in "${DEB_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "install-deps: apt-get install ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

PY=${PYTHON:-python3}
need_py=()
for p in "${PY_PACKAGES[@]}"; do
  $PY -c "import importlib.util,sys; sys.exit(0 if importlib.util.find_spec('$p') else 1)" 2>/dev/null || need_py+=("$p")
done
if [ ${#need_py[@]} -gt 0 ]; then
  echo "install-deps: pip install ${need_py[*]}"
  $PY -m pip install -q "${need_py[@]}"
fi
