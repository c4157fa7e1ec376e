#!/usr/bin/env bash
# README step 1: install what is missing, build, and run the main job for real: start the
# fake internet (tests/fakenet: nginx over HTTP and HTTPS with a test CA, serving a
# generated LAION-like corpus and fault endpoints, all on 127.0.0.1), download its URL
# list into webdataset shards with `mpirun -np 2 pixelmill download`, print the summary,
# check with Python's webdataset that the shards read, and stop the fake internet.
#   DEMO_ROWS=3000 (corpus size)  DEMO_OUT=/tmp/pixelmill-demo (dataset directory)
set -euo pipefail
cd "$(dirname "$0")/.."
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
rows=${DEMO_ROWS:-3000}
out=${DEMO_OUT:-/tmp/pixelmill-demo}
state=$(mktemp -d /tmp/pixelmill-fakenet.XXXXXX)

bash scripts/install-deps.sh
bash scripts/build.sh build

stop_net() { python3 tests/fakenet/server.py stop --state "$state" >/dev/null 2>&1 || true; }
trap stop_net EXIT

echo "== starting the fake internet ($rows rows; the corpus is generated once and cached)"
python3 tests/fakenet/server.py start --state "$state" --count "$rows"
# shellcheck disable=SC1091
. "$state/fakenet.env"

rm -rf "$out"
echo "== mpirun -np 2 pixelmill download $FAKENET_URLS -> $out"
# --allow-address 127.0.0.1: the fake internet is on loopback, which the downloader
# refuses by default; this admits exactly that address (the redirect to the cloud
# metadata address 169.254.169.254 in the corpus is still refused).
mpirun --oversubscribe -np 2 build/pixelmill download "$FAKENET_URLS" --output "$out" \
    --url-col URL --caption-col TEXT --keep-cols punsafe,pwatermark,AESTHETIC_SCORE \
    --samples-per-shard 1000 --timeout 5 --ca-file "$FAKENET_CA_FILE" \
    --user-agent-token pixelmill --allow-address 127.0.0.1 \
    --metrics-file "$out.prom"

echo "== reading the shards back with webdataset"
python3 - "$out" <<'EOF'
import glob, json, sys
import pyarrow.parquet as pq
import webdataset as wds
out = sys.argv[1]
tars = sorted(glob.glob(f"{out}/[0-9]*.tar"))
n = sum(1 for _ in wds.WebDataset(tars, shardshuffle=False, empty_check=False).decode("pil"))
side = sum(pq.read_metadata(p).num_rows for p in glob.glob(f"{out}/[0-9]*.parquet"))
idx = json.load(open(f"{out}/dataset.json"))
ok = idx["counts"]["status"].get("success", 0)
print(f"webdataset read {n} samples from {len(tars)} shards; sidecars hold {side} rows; "
      f"dataset.json says {ok} successes")
assert n == ok, "webdataset and dataset.json disagree"
EOF
echo "== done: dataset in $out, metrics in $out.prom"

# Train the demo config (test-16, 16x16) on a synthetic captioned set of coloured shapes for
# a short while and sample a grid (about 1-2 minutes on 2 cores; see docs/trainer.md).
echo "== pixelmill train on demo shapes (test-16, 120 steps, mpirun -np 2)"
out=${DEMO_TRAIN_OUT:-/tmp/pixelmill-demo-train}
rm -rf "$out"
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
