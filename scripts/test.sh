#!/usr/bin/env bash
# The test command (README step 2; .ci/run calls it). Installs what is missing, builds
# a normal and an ASan+UBSan build, runs the C unit tests (ctest) and the CLI / parity
# tests (pytest) against both builds.
#   PIXELMILL_TEST_SANITIZE=0 scripts/test.sh   # skip the sanitizer pass (faster locally)
#   PIXELMILL_TEST_FUZZ_SECONDS=0                # skip the short fuzz pass (default 60 s per
#                                                # target, after replaying the seed corpora)
#   PIXELMILL_TEST_WORKERS=1                     # pytest-xdist workers (default 3)
#   PIXELMILL_TEST_TSAN=0                        # skip the ThreadSanitizer pass
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
    PIXELMILL_BUILD="$PWD/$dir" python3 -m pytest -q -n "$workers" --dist loadfile tests \
    "${PYTEST_ARGS[@]}"
}

PYTEST_ARGS=("$@")
# Test files run side by side on pytest-xdist workers, one file per worker at a time (its
# module fixtures are built once). Most of the suite waits on servers, Slurm and paced
# downloads rather than computing, so 3 workers fit 2 cores.
workers=${PIXELMILL_TEST_WORKERS:-3}
bash scripts/build.sh build
if [ "${PIXELMILL_TEST_SANITIZE:-1}" = 1 ]; then
  # -O1: ASan's recommended level (several times faster than -O0, same checks)
  CC=clang bash scripts/build.sh build-asan -DPIXELMILL_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug \
    -DCMAKE_C_FLAGS_DEBUG="-g -O1"
  # leak checking stays on; MPI's own allocations are suppressed
  export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:suppressions=$PWD/tests/asan.supp"
  export LSAN_OPTIONS="suppressions=$PWD/tests/lsan.supp:print_suppressions=0"
  export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
  export LD_PRELOAD="$PWD/build-asan/libpm_nodlclose.so"   # see tests/sanitizer/nodlclose.c
  PIXELMILL_SANITIZED=1 run_suite build-asan
  unset ASAN_OPTIONS LSAN_OPTIONS UBSAN_OPTIONS LD_PRELOAD
fi

# Short fuzz pass: every libFuzzer target replays its committed seed corpus, then fuzzes
# for 60 s (11 targets, two at a time: about 6 minutes). A crash fails CI.
fuzz_secs=${PIXELMILL_TEST_FUZZ_SECONDS:-60}
if [ "$fuzz_secs" != 0 ]; then
  echo "== fuzz pass (${fuzz_secs}s per target)"
  bash scripts/fuzz.sh "$fuzz_secs"
fi

# ThreadSanitizer pass over the threaded engines: the fetcher (threads sharing DNS/TLS
# caches; tests/test_fetcher.py) and the trainer's OpenMP kernels (C unit tests). libomp
# is not instrumented: LLVM's Archer tool (libarcher.so, from libomp-dev) tells TSan about
# OpenMP's synchronisation, and ignore_noninstrumented_modules drops reports from inside
# libomp itself (docs/reliability.md). tests/tsan.supp documents each suppression.
if [ "${PIXELMILL_TEST_TSAN:-1}" = 1 ]; then
  echo "== ThreadSanitizer pass"
  CC=clang cmake -S . -B build-tsan -DPIXELMILL_WERROR=ON -DPIXELMILL_TSAN=ON \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build build-tsan -j2 --target pm_fetch_tool test_trainer_layers test_unet 2>&1 |
    grep -Ev '^\[ *[0-9]+%\] (Building|Linking)|^Consolidate|^gmake' || true
  tsan="halt_on_error=1:exitcode=66:second_deadlock_stack=1:suppressions=$PWD/tests/tsan.supp"
  TSAN_OPTIONS="$tsan" PIXELMILL_BUILD="$PWD/build-tsan" PIXELMILL_TSAN=1 \
    python3 -m pytest -q tests/test_fetcher.py tests/test_hostile_inputs.py -k 'fetch or refused'
  archer=$(ls /usr/lib/llvm-*/lib/libarcher.so 2>/dev/null | sort -V | tail -1 || true)
  if [ -n "$archer" ]; then
    (cd build-tsan && OMP_TOOL_LIBRARIES="$archer" \
      TSAN_OPTIONS="$tsan:ignore_noninstrumented_modules=1" \
      ctest --output-on-failure -R '^(test_trainer_layers|test_unet)$')
  else
    echo "TSan: libarcher.so not found (libomp-dev); trainer OpenMP tests skipped"
  fi
fi
run_suite build
