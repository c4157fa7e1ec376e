# Sourced by bench/*/run.sh (from the repository root): the cached LAION-like input and
# the pixelmill binary. Each function takes the bench's name for its messages.

# laion_data NAME ROWS SEED: print the path of bench/out/laion-ROWS-sSEED.parquet, generating it
# once with bench/gen_laion.py (written to a .tmp file, then renamed).
laion_data() {
  local name=$1 rows=$2 seed=$3 out=bench/out
  mkdir -p "$out"
  local data=$out/laion-$rows-s$seed.parquet
  if [ ! -f "$data" ]; then
    echo "bench/$name: generating $rows rows into $data (once)" >&2
    python3 bench/gen_laion.py --rows "$rows" --seed "$seed" --progress "$data.tmp" >&2
    mv "$data.tmp" "$data"
  fi
  echo "$data"
}

# pixelmill_bin NAME: print the path of the built pixelmill ($PIXELMILL_BUILD or build/).
pixelmill_bin() {
  local bin=${PIXELMILL_BUILD:-build}/pixelmill
  test -x "$bin" || { echo "bench/$1: build first (scripts/build.sh)" >&2; return 1; }
  echo "$bin"
}

# bench_header DATA [NOTE]: the input's size and the machine's load before the run.
bench_header() {
  echo "input: $1 ($(( $(stat -c %s "$1") / 1048576 )) MiB${2:+, $2})"
  echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores"
  cat "$1" >/dev/null # warm the page cache for every side
}
