#!/usr/bin/env python3
"""bench/pack: MB/s of `pixelmill pack` writing the same shards to local disk and to a local
S3 server (moto, on 127.0.0.1, no proxy), against `aws s3 cp --recursive` (pip awscli)
uploading the same bytes to the same server in the same run.

    bench/pack/run.py [--mode copy|raw|both] [--samples N] [--reps R] [--np P] ...

Two workloads (tests/pack_fixture.py layout, sources on local disk):

* copy (the writing comparison): 1024x768 JPEGs (~220 KB) kept as they are (no
  --encode-format, no --image-size: pack copies each image's bytes), shards of 100
  samples (~22 MB). pack reads the source tars and writes new tars, sidecars and stats;
  the CLI uploads the finished files. Both sides move the same bytes and neither decodes.
* raw (end to end): small JPEGs decoded and resized to raw 256x256 .npy (196 KiB a
  sample), shards of 100 (~19.7 MB). pack's time includes its decode and resize, which
  the CLI does not do, so this row is pack's whole job against an upload only.

MB = 10^6 bytes of output objects (tars, sidecars, stats). In each repetition pack -> S3
and the CLI run back to back on the same server, their order alternating, and the
ratio of their wall times is the figure; the median and range over repetitions are
reported (the machine is shared). The server's CPU seconds per step (moto is one Python
process) are printed too: when the server is the ceiling both clients see the same
MB/s. The run checks that the S3 and disk shards are identical.
"""
import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
import boto3  # noqa: E402
from pack_fixture import make_dataset  # noqa: E402
from s3_server import ACCESS_KEY, REGION, SECRET_KEY, MotoServer  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def proc_cpu(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / TICK  # utime, stime


def timed(cmd, env, server_pid):
    c0, s0, t0 = children_cpu(), proc_cpu(server_pid), time.time()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.time() - t0, children_cpu() - c0, proc_cpu(server_pid) - s0


def med(v):
    v = sorted(v)
    return (v[len(v) // 2] + v[(len(v) - 1) // 2]) / 2


WORKLOADS = {
    # name: (make_dataset sizes, pack options)
    "copy": (((1024, 768),), ["--samples-per-shard", "100"]),
    "raw": (((64, 48),), ["--samples-per-shard", "100", "--encode-format", "raw",
                         "--image-size", "256", "--resize-mode", "fixed"]),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=["copy", "raw", "both"], default="both")
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--np", type=int, default=1)
    ap.add_argument("--part-size", default="", help="pack's --s3-part-size (default: pack's)")
    ap.add_argument("--parallel", type=int, default=0, help="pack's --s3-parallel")
    ap.add_argument("--shards", type=int, default=0, help="pack's --s3-shards")
    a = ap.parse_args()
    binary = Path(os.environ.get("PIXELMILL_BUILD", ROOT / "build")) / "pixelmill"
    work = Path(tempfile.mkdtemp(prefix="bench-pack-"))
    moto = MotoServer()
    modes = ["copy", "raw"] if a.mode == "both" else [a.mode]
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY,
                   AWS_REGION=REGION, AWS_DEFAULT_REGION=REGION, AWS_ENDPOINT_URL=moto.url)
        s3 = boto3.client("s3", endpoint_url=moto.url, aws_access_key_id=ACCESS_KEY,
                          aws_secret_access_key=SECRET_KEY, region_name=REGION)
        mpi = (["mpirun", "--allow-run-as-root", "--oversubscribe", "-np", str(a.np)]
               if a.np > 1 else [])
        s3opts = ((["--s3-part-size", a.part_size] if a.part_size else []) +
                  (["--s3-parallel", str(a.parallel)] if a.parallel else []) +
                  (["--s3-shards", str(a.shards)] if a.shards else []))
        loads = [os.getloadavg()[0]]
        results = {}
        for mode in modes:
            sizes, opts = WORKLOADS[mode]
            src = work / f"src-{mode}"
            make_dataset(src, nshards=10, rows=a.samples // 10, fail_every=0, sizes=sizes)
            bucket = "bench-" + uuid.uuid4().hex[:8]
            s3.create_bucket(Bucket=bucket,
                             CreateBucketConfiguration={"LocationConstraint": REGION})
            rows = []
            for rep in range(a.reps):
                out = work / f"fs-{mode}{rep}"
                w, c, sc = timed(mpi + [str(binary), "pack", str(src), "--output", str(out),
                                        *opts], env, moto.proc.pid)
                nbytes = sum(p.stat().st_size for p in out.iterdir())
                row = {"disk": (w, c, sc), "bytes": nbytes}
                steps = [
                    ("s3", mpi + [str(binary), "pack", str(src), "--output",
                                  f"s3://{bucket}/pm{rep}", *opts, *s3opts]),
                    ("aws", ["aws", "--endpoint-url", moto.url, "s3", "cp", "--recursive",
                             "--only-show-errors", str(out), f"s3://{bucket}/aws{rep}"]),
                ]
                for name, cmd in (steps if rep % 2 == 0 else steps[::-1]):
                    row[name] = timed(cmd, env, moto.proc.pid)
                    loads.append(os.getloadavg()[0])
                # the same shards on both sides (stats files hold times, so sizes may differ)
                objs = s3.list_objects_v2(Bucket=bucket, Prefix=f"pm{rep}/")["Contents"]
                got = {o["Key"][len(f"pm{rep}/"):]: o["Size"] for o in objs
                       if o["Key"].endswith((".tar", ".parquet"))}
                assert got == {p.name: p.stat().st_size for p in out.iterdir()
                               if p.name.endswith((".tar", ".parquet"))}, "S3 != disk"
                shutil.rmtree(out)
                rows.append(row)
            results[mode] = rows
        print(f"load average (1 min) during the run: {min(loads):.1f}-{max(loads):.1f} on "
              f"{os.cpu_count()} cores; {a.samples} samples, np {a.np}, pack S3 options: "
              f"{' '.join(s3opts) or 'defaults'}")
        for mode, rows in results.items():
            print(f"\n[{mode}] {rows[0]['bytes'] / 1e6:.1f} MB per run")
            print(f"{'rep':>3} {'what':34} {'wall s':>7} {'MB/s':>7} {'CPU s':>6} "
                  f"{'server CPU s':>12}")
            for i, r in enumerate(rows):
                for key, label in (("disk", "pixelmill pack -> local disk"),
                                   ("s3", "pixelmill pack -> S3"),
                                   ("aws", "aws s3 cp --recursive (same bytes)")):
                    w, c, sc = r[key]
                    print(f"{i:>3} {label:34} {w:7.2f} {r['bytes'] / 1e6 / w:7.1f} {c:6.2f} "
                          f"{sc:12.2f}")
            ratios = sorted(r["aws"][0] / r["s3"][0] for r in rows)
            mbs = lambda k: sorted(r["bytes"] / 1e6 / r[k][0] for r in rows)  # noqa: E731
            print(f"[{mode}] pack->S3 / aws s3 cp (per-run wall ratio): median "
                  f"{med(ratios):.2f}x, range {ratios[0]:.2f}-{ratios[-1]:.2f}x "
                  f"(runs: {', '.join(f'{x:.2f}' for x in ratios)})")
            for k, label in (("disk", "pack->disk"), ("s3", "pack->S3"), ("aws", "aws s3 cp")):
                v = mbs(k)
                print(f"[{mode}] {label:10} MB/s median {med(v):.1f} (range {v[0]:.1f}-"
                      f"{v[-1]:.1f}); server CPU s median "
                      f"{med([r[k][2] for r in rows]):.2f}")
    finally:
        moto.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
