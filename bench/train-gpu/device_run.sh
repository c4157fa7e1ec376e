#!/usr/bin/env bash
# The GPU trainer's one device script (docs/trainer.md, "GPU trainer"): on a GPU machine it
# builds, runs every check against the CPU reference, the pytest GPU tests (full build only),
# the benchmark against PyTorch, and prints a short table last. Designed for < 8 minutes on
# one H100. Everything is also written under $OUT (or /tmp/pm_gpu_run) for the record.
#
# From a session with the device tool, once, here:   bash bench/train-gpu/fetch_deps.sh
# then:   run(command="bash bench/train-gpu/device_run.sh", carry=[".devdeps"], timeout_s=590)
#
# Knobs: PM_GPU_SKIP_TORCH=1 (no PyTorch comparison), PM_GPU_SKIP_COMPILE=1 (no
# torch.compile), PM_GPU_BENCH_STEPS (default 20), PM_GPU_FULL_BUILD=0|1 (default: full CMake
# build when MPI and the libraries are there, else the standalone check-tool build).
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-/tmp/pm_gpu_run}
mkdir -p "$out"
exec > >(tee "$out/device_run.log") 2>&1
t_start=$(date +%s)
declare -a table
note() { table+=("$(printf '%-46s %s' "$1" "$2")"); }
elapsed() { echo $(($(date +%s) - t_start)); }

echo "== machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
nproc
export PATH=/usr/local/cuda/bin:$PATH
nvcc --version | tail -1 || true

echo "== build ($(elapsed)s)"
full=${PM_GPU_FULL_BUILD:-auto}
if [[ $full == auto ]]; then
    full=0
    if command -v mpicc >/dev/null && pkg-config --exists jansson libarchive libzstd libcurl \
        libjpeg libpng libwebp libxml-2.0 2>/dev/null; then full=1; fi
fi
build=""
if [[ $full == 1 ]]; then
    if cmake -S . -B build-gpu >"$out/cmake.log" 2>&1 &&
        cmake --build build-gpu -j16 >"$out/build.log" 2>&1; then
        build=build-gpu
        note "build" "full CMake build with CUDA ($(elapsed)s)"
    else
        echo "full build failed (tail of logs below); falling back to the standalone build"
        tail -20 "$out/cmake.log" "$out/build.log" 2>/dev/null
        full=0
    fi
fi
if [[ $full == 0 ]]; then
    if bash bench/train-gpu/build_standalone.sh build-gpu-sa .devdeps/root >"$out/build.log" 2>&1; then
        build=build-gpu-sa
        note "build" "standalone pm_cuda_check (no MPI/codecs here) ($(elapsed)s)"
    else
        tail -30 "$out/build.log"
        note "build" "FAILED (see build.log)"
    fi
fi
tool=$build/pm_cuda_check
if [[ -z $build || ! -x $tool ]]; then
    printf '%s\n' "${table[@]}"
    exit 1
fi
grep -c -i warning "$out/build.log" | xargs -I{} echo "build warnings: {}"

echo "== checks against the CPU reference ($(elapsed)s)"
export OMP_NUM_THREADS=$(nproc)
runcheck() { # name, timeout, args...
    local name=$1 to=$2
    shift 2
    local t0=$(date +%s)
    timeout "$to" "$tool" "$@" >"$out/check_$name.log" 2>&1
    local rc=$?
    cat "$out/check_$name.log"
    local fails=$(grep -c ' FAIL ' "$out/check_$name.log")
    local passes=$(grep -c ' PASS ' "$out/check_$name.log")
    local res="PASS"
    [[ $rc -ne 0 || $fails -ne 0 ]] && res="FAIL (exit $rc, $fails failed)"
    [[ $rc -eq 124 ]] && res="TIMEOUT after ${to}s"
    note "check $name" "$res: $passes passed ($(($(date +%s) - t0))s)"
}
"$tool" status || { note "GPU" "none visible"; printf '%s\n' "${table[@]}"; exit 1; }
runcheck grads-test16-fp32 60 grads test-16 4 fp32
runcheck grads-tiny32-fp32 90 grads tiny-32 8 fp32
runcheck grads-small64-fp32 120 grads small-64 4 fp32
runcheck grads-tiny32-bf16 90 grads tiny-32 8 bf16
runcheck step-tiny32-fp32 90 step tiny-32 8 fp32
runcheck step-tiny32-bf16 90 step tiny-32 8 bf16
runcheck loss50-tiny32-fp32 180 loss tiny-32 8 50 fp32
rm -rf "$out/resume_ck"
runcheck resume-tiny32-fp32 120 resume tiny-32 8 6 fp32 "$out/resume_ck"
runcheck ranks-tiny32-fp32 120 ranks tiny-32 8 3 fp32

# a CUDA fault (asynchronous, so reported late): locate it once, on the smallest config
if grep -l -E 'gpu_trainer.cu:[0-9]+|illegal|misaligned|CUDA error|cuda' "$out"/check_*.log \
    2>/dev/null | xargs -r grep -l -E 'pm_cuda_check: ' >/dev/null 2>&1; then
    echo "== a check hit a CUDA error: PM_GPU_SYNC_DEBUG=1 and compute-sanitizer ($(elapsed)s)"
    PM_GPU_SYNC_DEBUG=1 timeout 120 "$tool" grads test-16 2 fp32 >"$out/debug_sync.log" 2>&1
    tail -5 "$out/debug_sync.log"
    note "debug: PM_GPU_SYNC_DEBUG=1 grads test-16" "$(grep -o -m1 'gpu_trainer.cu:[0-9]*: [^:]*: .*' "$out/debug_sync.log" || echo 'no fault reported')"
    if command -v compute-sanitizer >/dev/null; then
        timeout 180 compute-sanitizer --tool memcheck --print-limit 5 "$tool" grads test-16 2 fp32 \
            >"$out/debug_memcheck.log" 2>&1
        grep -m8 -E 'Invalid|at .*gpu_trainer|ERROR SUMMARY' "$out/debug_memcheck.log"
        note "debug: compute-sanitizer memcheck" "$(grep -m1 'ERROR SUMMARY' "$out/debug_memcheck.log" || echo 'did not finish')"
    fi
fi

if [[ $build == build-gpu ]]; then
    echo "== pytest GPU tests ($(elapsed)s)"
    # the checks above already ran: only the end-to-end pixelmill tests here (SIGTERM, SIGKILL, GPU->CPU)
    if PIXELMILL_BUILD=$PWD/$build timeout 240 python3 -m pytest -q -rs tests/test_train_cuda.py \
        -k "pixelmill or checkpoint_resumes" >"$out/pytest.log" 2>&1; then
        note "pytest tests/test_train_cuda.py (pixelmill)" "PASS: $(tail -1 "$out/pytest.log")"
    else
        note "pytest tests/test_train_cuda.py (pixelmill)" "FAIL: $(tail -1 "$out/pytest.log")"
    fi
    tail -30 "$out/pytest.log"
else
    note "pytest / pixelmill --device cuda" "not run: standalone build (no MPI here)"
fi

echo "== benchmark ($(elapsed)s)"
bargs=(--tool "$tool" --steps "${PM_GPU_BENCH_STEPS:-20}" --json "$out/bench.json")
[[ ${PM_GPU_SKIP_TORCH:-0} == 1 ]] && bargs+=(--no-torch)
[[ ${PM_GPU_SKIP_COMPILE:-0} == 1 ]] && bargs+=(--no-compile)
left=$((450 - $(elapsed)))
((left < 60)) && { bargs+=(--no-compile); left=120; }
timeout "$left" python3 bench/train-gpu/bench.py "${bargs[@]}" >"$out/bench.log" 2>&1
brc=$?
cat "$out/bench.log"

echo
echo "================ summary ($(elapsed)s) ================"
printf '%s\n' "${table[@]}"
[[ $brc -ne 0 ]] && echo "bench.py exit $brc (124 = stopped at the time budget)"
# the last table bench.py printed
awk '/^GPU:/{buf=""; on=1} on && !/^\{/{buf=buf $0 "\n"} END{printf "%s", buf}' "$out/bench.log"
