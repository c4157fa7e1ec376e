#!/usr/bin/env bash
# Installs every Debian and Python package pixelmill needs to build, run its demo and
# run its tests. Idempotent: apt-get and pip run only for what is missing.
# One package per line, so parallel changes merge cleanly.
set -euo pipefail

DEB_PACKAGES=(
  build-essential
  cmake
  pkg-config
  time
  clang
  libclang-rt-14-dev
  zlib1g-dev
  libzstd-dev
  libsnappy-dev
  libjansson-dev
  libxxhash-dev
  libopenmpi-dev
  openmpi-bin
  libcurl4-openssl-dev
  libssl-dev   # SHA-256 of S3 payloads
  libxml2-dev  # S3 XML answers
  libjpeg62-turbo-dev
  libwebp-dev
  libpng-dev
  libgif-dev
  libarchive-dev
  libinih-dev     # pixelmill run: pipeline files (INI)
  libomp-dev   # OpenMP for the trainer in the clang (sanitizer) build; libarcher.so for TSan
  openssl   # test CAs (tests/fakenet, fetcher tests)
  curl      # tests/fakenet checks
  nginx     # tests/fakenet: the fake internet (started unprivileged by the tests)
  chromium  # tests/test_sweep.py: the HTML report renders in headless Chromium
  slurm-wlm       # tests: a real single-machine Slurm (cluster/slurm/local/start.sh)
  munge           # Slurm's authentication
  libfabric-dev   # doctor --fabric: headers (the library itself is loaded with dlopen)
  libfabric-bin   # fi_info: the reference the doctor's provider list is tested against
  prometheus      # promtool check metrics (~25 MB download, ~45 s to install here)
)

# pip-name[:import-name] where the two differ
PY_PACKAGES=(
  pyarrow
  pandas
  numpy
  pytest
  pytest-xdist:xdist     # scripts/test.sh runs the suite on several workers
  prometheus-client:prometheus_client   # reference parser for the metrics files
  webdataset
  wids
  xxhash
  zstandard
  pillow:PIL
  opencv-python-headless:cv2
  imagehash
  scikit-image:skimage   # tests/fakenet builds test images from the photos in its wheel
  moto[server]:flask_cors   # the local S3 server of the storage tests
  boto3
  awscli
  duckdb                 # bench/sweep
)

missing=()
for p in "${DEB_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "install-deps: apt-get install ${missing[*]}"
  $SUDO apt-get update -qq
  # never let a package's maintainer script start a service (nginx would take port 80)
  made_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d
    made_policy=1
  fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
  [ "$made_policy" = 0 ] || $SUDO rm -f /usr/sbin/policy-rc.d
fi

PY=${PYTHON:-python3}
need_py=()
for spec in "${PY_PACKAGES[@]}"; do
  pkg=${spec%%:*}
  mod=${spec#*:}
  mod=${mod//-/_}
  $PY -c "import importlib.util,sys; sys.exit(0 if importlib.util.find_spec('$mod') else 1)" 2>/dev/null ||
    need_py+=("$pkg")
done
if [ ${#need_py[@]} -gt 0 ]; then
  echo "install-deps: pip install ${need_py[*]}"
  $PY -m pip install -q "${need_py[@]}"
fi
