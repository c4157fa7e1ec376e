#!/usr/bin/env bash
# README step 1: install what is missing, build, and run the main job on the bundled
# demo data (a 20,000-row LAION-like metadata file), on 2 MPI ranks.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
bash scripts/install-deps.sh
bash scripts/build.sh build
echo "== pixelmill stats demo/laion-demo.parquet (mpirun -np 2)"
mpirun --oversubscribe -np 2 build/pixelmill stats demo/laion-demo.parquet

# Train the demo config (test-16, 16x16) on a synthetic captioned set of coloured shapes for
# a short while and sample a grid (about 1-2 minutes on 2 cores; see docs/trainer.md).
echo "== pixelmill train on demo shapes (test-16, 120 steps, mpirun -np 2)"
out=${PIXELMILL_DEMO_OUT:-demo-out}
mkdir -p "$out"
python3 demo/make_shapes.py "$out/shapes" --samples 512 --size 16
python3 demo/make_shapes.py "$out/shapes-held" --samples 32 --per-shard 32 --size 16 --seed 99
OMP_NUM_THREADS=1 OMP_WAIT_POLICY=passive mpirun --oversubscribe -np 2 build/pixelmill train \
  --data "$out/shapes" --model test-16 --steps 120 --batch-size 8 --lr 2e-3 --ema-decay 0 \
  --checkpoint-dir "$out/ckpt" --resume auto --log-every 20 --metrics-file "$out/train.prom" \
  --eval-data "$out/shapes-held"
echo "== pixelmill sample -> $out/grid.png"
build/pixelmill sample --checkpoint "$out/ckpt" --prompt "a white circle on a red background" \
  --prompt "a white circle on a blue background" --n 8 --cols 4 --steps 25 -o "$out/grid.png"
