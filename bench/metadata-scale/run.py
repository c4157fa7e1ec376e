#!/usr/bin/env python3
"""Metadata stages on a very large LAION-like input: wall time, CPU time and peak RSS.

  python3 bench/metadata-scale/run.py --work /tmp/m100 --rows 10000000 --copies 10

generates (once) WORK/laion.parquet with bench/gen_laion.py and reads it COPIES times
(WORK/partN.parquet symlinks: COPIES * ROWS input rows), then runs under /usr/bin/time -v,
one process each (no mpirun) unless --np is given:

  stats                 pixelmill stats PARTS --json
  download-plan         pixelmill download --input PARTS --dedupe-urls ...: the plan (input
                        slices) and the global URL dedupe, then stopped before any fetch: a
                        SIGTERM sent once the handlers are in place is held until the
                        agreed check after the dedupe, so the run exits 75 having fetched
                        nothing ("interrupted before downloading")
  filter                pixelmill filter PARTS --where ... --output WORK/filtered.parquet
  sweep                 pixelmill sweep PARTS --column punsafe --thresholds ...

and prints one line per command: wall s, user+sys CPU s, peak RSS MiB (GNU time's maximum
resident set size; with --np it is the largest single process of the job). Outputs are
deleted after each step (--keep to keep them); --clean deletes the generated input too.
"""
import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("PIXELMILL_BUILD", ROOT / "build"))


def timed(cmd, work, name, np_=0, stop_when_caught=False):
    rep = work / f"{name}.time"
    log = work / f"{name}.log"
    full = ["/usr/bin/time", "-v", "-o", str(rep)]
    if np_:
        full += ["mpirun", "--allow-run-as-root", "--oversubscribe", "-np", str(np_)]
    full += [str(c) for c in cmd]
    t0 = time.monotonic()
    with open(log, "w") as f:
        p = subprocess.Popen(full, stdout=f, stderr=subprocess.STDOUT)
        if stop_when_caught:
            # SIGTERM to the pixelmill process(es) once they catch it
            sent = False
            while not sent and p.poll() is None:
                for pid in pids_of(p.pid):
                    if caught(pid, signal.SIGTERM):
                        os.kill(pid, signal.SIGTERM)
                        sent = True
                time.sleep(0.01)
        rc = p.wait()
    wall = time.monotonic() - t0
    t = rep.read_text()
    cpu = float(re.search(r"User time \(seconds\): ([\d.]+)", t).group(1)) + \
        float(re.search(r"System time \(seconds\): ([\d.]+)", t).group(1))
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", t).group(1)) / 1024
    return rc, wall, cpu, rss, log.read_text()


def pids_of(root):
    """pixelmill processes under root (for the singleton: root's child)."""
    out = []
    stack = [root]
    while stack:
        p = stack.pop()
        try:
            kids = open(f"/proc/{p}/task/{p}/children").read().split()
        except OSError:
            continue
        for k in map(int, kids):
            try:
                if os.readlink(f"/proc/{k}/exe").endswith("/pixelmill"):
                    out.append(k)
            except OSError:
                pass
            stack.append(k)
    return out


def caught(pid, sig):
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("SigCgt:"):
                return int(line.split()[1], 16) >> (sig - 1) & 1
    except OSError:
        pass
    return False


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", required=True)
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--copies", type=int, default=10)
    ap.add_argument("--np", type=int, default=0)
    ap.add_argument("--only", default="stats,download-plan,filter,sweep")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--clean", action="store_true")
    a = ap.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    src = work / "laion.parquet"
    if not src.exists():
        subprocess.run([sys.executable, str(ROOT / "bench" / "gen_laion.py"), "--rows",
                        str(a.rows), "--seed", "1", str(src)], check=True)
    parts = []
    for i in range(a.copies):
        p = work / f"part{i}.parquet"
        if not p.exists():
            p.symlink_to(src.name)
        parts.append(p)
    pm = BUILD / "pixelmill"
    steps = {
        "stats": ([pm, "stats", *parts, "--json"], False),
        "download-plan": ([pm, "download", *[x for p in parts for x in ("--input", p)],
                           "--output", work / "dl", "--url-col", "URL", "--dedupe-urls",
                           "--samples-per-shard", "100000"], True),
        "filter": ([pm, "filter", *parts, "--where", "punsafe < 0.1", "--where",
                    "AESTHETIC_SCORE >= 6", "--output", work / "filtered.parquet"], False),
        "sweep": ([pm, "sweep", *parts, "--column", "punsafe", "--thresholds",
                   "0.02,0.05,0.1,0.2,0.5", "--where", "AESTHETIC_SCORE >= 5", "--json"], False),
    }
    rows = a.rows * a.copies
    print(f"{rows:,} input rows ({a.copies} x {src.name}, {src.stat().st_size / 2**30:.2f} GiB "
          f"each), np {a.np or 1}")
    for name in a.only.split(","):
        cmd, stop = steps[name]
        rc, wall, cpu, rss, log = timed(cmd, work, name, a.np, stop)
        ok = rc == 0 or (stop and rc == 75 and "interrupted before downloading" in log)
        extra = ""
        if name == "download-plan":
            m = re.search(r"url dedupe: (\d+) urls, (\d+) duplicates", log)
            extra = f" ({m.group(1)} urls, {m.group(2)} duplicates)" if m else ""
        print(f"{name:14s} rc={rc:<3d} wall {wall:8.1f} s  cpu {cpu:8.1f} s  "
              f"peak RSS {rss:8.1f} MiB  {'ok' if ok else 'FAILED'}{extra}", flush=True)
        if not ok:
            print(log[-3000:], file=sys.stderr)
        if not a.keep:
            shutil.rmtree(work / "dl", ignore_errors=True)
            (work / "filtered.parquet").unlink(missing_ok=True)
    if a.clean:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
