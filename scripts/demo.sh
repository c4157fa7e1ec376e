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
