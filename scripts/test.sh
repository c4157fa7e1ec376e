#!/usr/bin/env bash
# The test command (README step 2; .ci/run calls it). Installs what is missing, builds
# a normal and an ASan+UBSan build, runs the C unit tests (ctest) and the CLI / parity
# tests (pytest) against both builds.
#   PIXELMILL_TEST_SANITIZE=0 scripts/test.sh   # skip the sanitizer pass (faster locally)
#   scripts/test.sh -k parquet                  # extra arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1
bash scripts/install-deps.sh

run_suite() { # build_dir
  local dir=$1
  echo "== tests against $dir"
  (cd "$dir" && ctest --output-on-failure -j2)
  # LeakSanitizer's tracer crashes now and then at exit of processes that ran Open MPI's
  # progress threads; leaks are checked by the unit tests above, not in MPI processes.
  ASAN_OPTIONS="${ASAN_OPTIONS:-}${ASAN_OPTIONS:+:}detect_leaks=0" \
    PIXELMILL_BUILD="$PWD/$dir" python3 -m pytest -q tests "${PYTEST_ARGS[@]}"
}

PYTEST_ARGS=("$@")
bash scripts/build.sh build
if [ "${PIXELMILL_TEST_SANITIZE:-1}" = 1 ]; then
  CC=clang bash scripts/build.sh build-asan -DPIXELMILL_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug
  # leak checking stays on; MPI's own allocations are suppressed
  export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:suppressions=$PWD/tests/asan.supp"
  export LSAN_OPTIONS="suppressions=$PWD/tests/lsan.supp:print_suppressions=0"
  export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
  export LD_PRELOAD="$PWD/build-asan/libpm_nodlclose.so"   # see tests/sanitizer/nodlclose.c
  PIXELMILL_SANITIZED=1 run_suite build-asan
  unset ASAN_OPTIONS LSAN_OPTIONS UBSAN_OPTIONS LD_PRELOAD
fi
run_suite build
