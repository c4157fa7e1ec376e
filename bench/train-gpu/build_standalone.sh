#!/usr/bin/env bash
# Build only the GPU trainer's check tool (pm_cuda_check) with nvcc + gcc, without CMake and
# without the project's other dependencies (MPI, libarchive, curl, codecs...): for GPU
# machines that lack them. Needs OpenMP, zlib and jansson (headers + libs; from
# DEPS_ROOT, e.g. .devdeps/root made by fetch_deps.sh, when the system has none), cuBLAS and
# optionally NCCL (the toolkit's, or the nvidia-nccl pip package's).
#   bench/train-gpu/build_standalone.sh OUTDIR [DEPS_ROOT]
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:?OUTDIR}
deps=${2:-}
mkdir -p "$out/obj"
nvcc=${CUDACXX:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
cuda_home=$(dirname "$(dirname "$(readlink -f "$nvcc")")")
inc=(-Icommon -Ishards -Itrainer -Itrainer/cuda)
lib=()
if [[ -n "$deps" && -d "$deps" ]]; then
    inc+=(-isystem "$deps/usr/include")
    lib+=(-L"$deps/usr/lib/x86_64-linux-gnu" -Wl,-rpath,"$(readlink -f "$deps")/usr/lib/x86_64-linux-gnu")
fi
nccl_def=() nccl_lib=()
nccl_inc=""
for d in "$cuda_home/include" /usr/include; do
    [[ -f $d/nccl.h ]] && nccl_inc=$d && break
done
nccl_dir=""
if [[ -z $nccl_inc ]]; then
    nccl_dir=$(python3 -c 'import nvidia.nccl, os; print(os.path.dirname(nvidia.nccl.__file__) if nvidia.nccl.__file__ else list(nvidia.nccl.__path__)[0])' 2>/dev/null || true)
    [[ -n $nccl_dir && -f $nccl_dir/include/nccl.h ]] && nccl_inc=$nccl_dir/include
fi
if [[ -n $nccl_inc ]]; then
    nccl_def=(-DPM_HAVE_NCCL -isystem "$nccl_inc")
    libdir=""
    for d in "$cuda_home/lib64" "$cuda_home/lib" "$nccl_dir/lib" /usr/lib/x86_64-linux-gnu; do
        if ls "$d"/libnccl.so* >/dev/null 2>&1; then libdir=$d; break; fi
    done
    if [[ -n $libdir ]]; then
        [[ -e $libdir/libnccl.so ]] || ln -sf "$(ls "$libdir"/libnccl.so.* | head -1)" "$out/libnccl.so"
        nccl_lib=(-L"$libdir" -L"$out" -Wl,-rpath,"$libdir" -lnccl)
    else
        nccl_def=()
    fi
fi
echo "standalone build: nvcc $nccl_inc ${nccl_lib[*]:-no NCCL}"
pids=()
for f in trainer/*.c common/pm_error.c shards/atomic_file.c tests/tools/pm_cuda_check.c; do
    gcc -std=gnu11 -O3 -fopenmp -Wall -Wextra "${inc[@]}" -c "$f" \
        -o "$out/obj/$(basename "${f%.c}").o" &
    pids+=($!)
done
# cuBLAS and NCCL are dlopen'ed (gpu_trainer.cu); the -l flags below only set the run path
blasdir=$(dirname "$(ls "$cuda_home"/lib64/libcublas.so.* "$cuda_home"/lib/libcublas.so.* 2>/dev/null | head -1)")
"$nvcc" -O3 -DPM_CUDA_LIBDIR="\"$blasdir\"" -gencode arch=compute_90,code=sm_90 -gencode arch=compute_90,code=compute_90 \
    -Xcompiler=-Wall,-Wextra "${inc[@]}" "${nccl_def[@]}" -c trainer/cuda/gpu_trainer.cu \
    -o "$out/obj/gpu_trainer.o"
for p in "${pids[@]}"; do wait "$p"; done
g++ -o "$out/pm_cuda_check" "$out"/obj/*.o -fopenmp -L"$cuda_home/lib64" -L"$cuda_home/lib" \
    -Wl,-rpath,"$cuda_home/lib64" "${lib[@]}" -lcudart_static -lcublas "${nccl_lib[@]}" \
    -ljansson -lz -lm -lpthread -ldl -lrt
echo "built $out/pm_cuda_check"
