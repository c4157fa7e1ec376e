#!/usr/bin/env python3
"""bench/pipeline: CPU seconds per row of each stage of a download -> dedupe -> filter ->
pack pipeline (`pixelmill run PIPELINE.ini --only STAGE`, one process) over the fake
internet, for the sizing table in docs/operators.md. Not a test.

  python3 bench/pipeline/rates.py [--rows 3000] [--reps 3] [--build build]

The corpus rows that succeed and are not deliberately slow are served over HTTPS by the
local nginx (as bench/download/run.py). Each stage runs --reps times on a fresh copy of
its input; CPU seconds are user + system of the process tree (GNU time). The start-up
cost (MPI init, reading the pipeline file: `pixelmill run --list`) is measured too and
subtracted, giving the marginal rate: rows per CPU-second of one core.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "fakenet"))
import make_corpus  # noqa: E402
from server import FakeInternet  # noqa: E402
sys.path.insert(0, str(ROOT / "tests"))

SLOW = {"slow_drip", "raw_stall", "raw_drip", "slow_ok", "http_429", "http_503",
        "raw_flaky_429", "raw_flaky_503"}


def timed(cmd):
    rep = tempfile.mktemp()
    t0 = time.time()
    r = subprocess.run(["/usr/bin/time", "-o", rep, "-f", "%U %S"] + [str(c) for c in cmd],
                       capture_output=True, text=True)
    wall = time.time() - t0
    if r.returncode != 0:
        sys.exit(f"{cmd} failed ({r.returncode}):\n{r.stderr[-3000:]}")
    u, s = Path(rep).read_text().split()[-2:]
    os.unlink(rep)
    return float(u) + float(s), wall


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=3000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--build", default=str(ROOT / "build"))
    ap.add_argument("--synthetic", type=int, default=0, metavar="N",
                    help="instead: dedupe, filter and pack of a synthetic N-row dataset "
                         "(tests/pack_fixture.py layout, small JPEGs), no download")
    a = ap.parse_args()
    pm = Path(a.build) / "pixelmill"
    if a.synthetic:
        return synthetic(a, pm)
    corpus = Path(make_corpus.ensure_corpus(count=a.rows))
    work = Path(tempfile.mkdtemp(prefix="pm-rates-"))
    with FakeInternet(corpus) as net:
        net.write_lists(work)
        man = net.manifest()
        t = pq.read_table(work / "urls.parquet")
        keep = [i for i, m in enumerate(man) if m["case"] not in SLOW and m["server"] == "nginx"]
        urls = [(man[i]["url"] or "").replace(net.http_base, net.https_base) for i in keep]
        sub = t.take(pa.array(keep)).set_column(0, "URL", pa.array(urls))
        pq.write_table(sub, work / "in.parquet")
        rows = sub.num_rows
        ds, packed = work / "ds", work / "packed"
        ini = work / "p.ini"
        ini.write_text(f"""[pipeline]
dataset = {ds}
[download]
input = {work / 'in.parquet'}
url-col = URL
caption-col = TEXT
keep-cols = punsafe,WIDTH,HEIGHT
image-size = 256
resize-mode = border
samples-per-shard = 500
threads = 1
ca-file = {net.ca_file}
allow-address = 127.0.0.1
quiet = true
[dedupe]
by = url,content,phash
[filter]
view = safe
where = punsafe < 0.5
dedupe = url,content,phash
[pack]
output = {packed}
samples-per-shard = 500
""")
        startup = [timed([pm, "run", ini, "--list"])[0] for _ in range(a.reps)]
        res = {}
        for stage, out in (("download", ds), ("dedupe", ds / "_dedupe"),
                           ("filter", ds / "_views"), ("pack", packed)):
            cpus, walls = [], []
            for _ in range(a.reps):
                shutil.rmtree(out, ignore_errors=True)
                cpu, wall = timed([pm, "run", ini, "--only", stage])
                cpus.append(cpu)
                walls.append(wall)
            res[stage] = dict(cpu=statistics.median(cpus), wall=statistics.median(walls),
                              cpus=cpus)
        success = json.loads((ds / "dataset.json").read_text())["counts"]["status"]["success"]
    su = statistics.median(startup)
    print(json.dumps({"rows": rows, "success": success, "startup_cpu": startup, **res},
                     indent=1))
    print(f"\nrows {rows}, success {success}, start-up {su:.2f} CPU-s (median of {a.reps})\n")
    print("| stage | CPU s (median) | wall s | rows / CPU-s | rows / CPU-s net of start-up |")
    print("| --- | --- | --- | --- | --- |")
    for s, r in res.items():
        net_cpu = max(r["cpu"] - su, 1e-9)
        print(f"| {s} | {r['cpu']:.2f} | {r['wall']:.2f} | {rows / r['cpu']:.0f} | "
              f"{rows / net_cpu:.0f} |")
    shutil.rmtree(work, ignore_errors=True)


def synthetic(a, pm):
    from pack_fixture import make_dataset
    work = Path(tempfile.mkdtemp(prefix="pm-rates-"))
    ds, packed = work / "ds", work / "packed"
    per = 2000
    t0 = time.time()
    make_dataset(ds, nshards=max(1, a.synthetic // per), rows=per, fail_every=10,
                 sizes=((32, 24), (24, 32)))
    rows = json.loads((ds / "dataset.json").read_text())["counts"]["rows"]
    print(f"synthetic dataset: {rows} rows in {time.time() - t0:.0f} s", file=sys.stderr)
    ini = work / "p.ini"
    ini.write_text(f"""[pipeline]
dataset = {ds}
[dedupe]
by = url,content,phash
[filter]
view = v
where = aesthetic > 5
dedupe = url,content,phash
[pack]
output = {packed}
samples-per-shard = 2000
""")
    startup = [timed([pm, "run", ini, "--list"])[0] for _ in range(a.reps)]
    su = statistics.median(startup)
    print(f"rows {rows}, start-up {su:.2f} CPU-s (median of {a.reps})\n")
    print("| stage | CPU s (median) | wall s | rows / CPU-s | rows / CPU-s net of start-up |")
    print("| --- | --- | --- | --- | --- |")
    for stage, out in (("dedupe", ds / "_dedupe"), ("filter", ds / "_views"),
                       ("pack", packed)):
        cpus, walls = [], []
        for _ in range(a.reps):
            shutil.rmtree(out, ignore_errors=True)
            cpu, wall = timed([pm, "run", ini, "--only", stage])
            cpus.append(cpu)
            walls.append(wall)
        c, w = statistics.median(cpus), statistics.median(walls)
        print(f"| {stage} | {c:.2f} | {w:.2f} | {rows / c:.0f} | {rows / max(c - su, 1e-9):.0f} |",
              flush=True)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
