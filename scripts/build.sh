#!/usr/bin/env bash
# Configure and build pixelmill. Usage: scripts/build.sh [BUILD_DIR] [extra cmake args...]
#   scripts/build.sh                      -> build/ (release with debug info, -Werror)
#   scripts/build.sh build-asan -DPIXELMILL_SANITIZE=ON
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-build}
shift || true
cmake -S . -B "$dir" -DPIXELMILL_WERROR=ON "$@" >/dev/null
# pipefail: a failed build fails the script (grep finding nothing to print does not)
cmake --build "$dir" -j"$(nproc)" 2>&1 | { grep -Ev '^\[ *[0-9]+%\] (Building|Linking)|^Consolidate|^gmake' || true; }
test -x "$dir/pixelmill"
