#!/usr/bin/env python3
"""bench/pack: MB/s of `pixelmill pack` writing the same shards to local disk and to a local
S3 server (moto, on 127.0.0.1, no proxy), against `aws s3 cp --recursive` (pip awscli)
uploading the same bytes to the same server in the same run.

    bench/pack/run.py [--samples N] [--image-size S] [--reps R] [--np P]

The source dataset (tests/pack_fixture.py layout, small JPEGs) is packed to raw .npy
samples of S x S (default 256: 196 KiB each) in shards of 100 samples (~19 MiB, so S3
writes are multipart uploads). MB = 10^6 bytes of output objects. Each pack run includes
its own decode + resize work and start-up; `aws s3 cp` only uploads finished files.
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


def children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed(cmd, env):
    c0, t0 = children_cpu(), time.time()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.time() - t0, children_cpu() - c0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--np", type=int, default=1)
    ap.add_argument("--part-size", default="5Mi", help="pack's --s3-part-size")
    ap.add_argument("--parallel", type=int, default=8, help="pack's --s3-parallel")
    ap.add_argument("--shards", type=int, default=0,
                    help="pack's --s3-shards (shards uploading at once; 0: pack's default)")
    a = ap.parse_args()
    binary = Path(os.environ.get("PIXELMILL_BUILD", ROOT / "build")) / "pixelmill"
    work = Path(tempfile.mkdtemp(prefix="bench-pack-"))
    moto = MotoServer()
    try:
        src = work / "src"
        make_dataset(src, nshards=10, rows=a.samples // 10, fail_every=0, sizes=((64, 48),))
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY,
                   AWS_REGION=REGION, AWS_DEFAULT_REGION=REGION, AWS_ENDPOINT_URL=moto.url)
        s3 = boto3.client("s3", endpoint_url=moto.url, aws_access_key_id=ACCESS_KEY,
                          aws_secret_access_key=SECRET_KEY, region_name=REGION)
        bucket = "bench-" + uuid.uuid4().hex[:8]
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
        opts = ["--samples-per-shard", "100", "--encode-format", "raw", "--image-size",
                str(a.image_size), "--resize-mode", "fixed"]
        mpi = (["mpirun", "--allow-run-as-root", "--oversubscribe", "-np", str(a.np)]
               if a.np > 1 else [])
        rows = []
        for rep in range(a.reps):
            out = work / f"fs{rep}"
            w, c = timed(mpi + [str(binary), "pack", str(src), "--output", str(out), *opts], env)
            nbytes = sum(p.stat().st_size for p in out.iterdir())
            rows.append(("pixelmill pack -> local disk", nbytes, w, c))
            w, c = timed(mpi + [str(binary), "pack", str(src), "--output",
                                f"s3://{bucket}/pm{rep}", *opts, "--s3-part-size",
                                a.part_size, "--s3-parallel", str(a.parallel),
                                *(["--s3-shards", str(a.shards)] if a.shards else [])], env)
            rows.append(("pixelmill pack -> S3", nbytes, w, c))
            w, c = timed(["aws", "--endpoint-url", moto.url, "s3", "cp", "--recursive",
                          "--only-show-errors", str(out), f"s3://{bucket}/aws{rep}"], env)
            rows.append(("aws s3 cp --recursive (same bytes)", nbytes, w, c))
            # the same objects on both sides
            # the same shards on both sides (stats files hold times, so sizes may differ)
            a_objs = {o["Key"][len(f"pm{rep}/"):]: o["Size"] for o in s3.list_objects_v2(
                Bucket=bucket, Prefix=f"pm{rep}/")["Contents"]
                if o["Key"].endswith((".tar", ".parquet"))}
            assert a_objs == {p.name: p.stat().st_size for p in out.iterdir()
                              if p.name.endswith((".tar", ".parquet"))}, "S3 != disk"
            shutil.rmtree(out)
        print(f"load average: {open('/proc/loadavg').read().split()[:3]} on {os.cpu_count()} "
              f"cores; {a.samples} samples, raw {a.image_size}x{a.image_size}, np {a.np}, "
              f"S3 parts {a.part_size} x {a.parallel} in flight")
        print(f"{'what':38} {'MB':>8} {'wall s':>7} {'MB/s':>7} {'CPU s':>6}")
        best = {}
        for name, nb, w, c in rows:
            print(f"{name:38} {nb / 1e6:8.1f} {w:7.2f} {nb / 1e6 / w:7.1f} {c:6.2f}")
            best[name] = max(best.get(name, 0), nb / 1e6 / w)
        s3r = best["pixelmill pack -> S3"] / best["aws s3 cp --recursive (same bytes)"]
        fsr = best["pixelmill pack -> S3"] / best["pixelmill pack -> local disk"]
        print(f"best of {a.reps}: pack->S3 / aws s3 cp = {s3r:.2f}x; pack->S3 / pack->disk = "
              f"{fsr:.2f}x")
        # per repetition, pack->S3 and aws ran back to back on the same load: the median of
        # those ratios is the figure least moved by a shared machine
        ratios = sorted(rows[3 * r + 2][2] / rows[3 * r + 1][2] for r in range(a.reps))
        med = lambda v: (v[len(v) // 2] + v[(len(v) - 1) // 2]) / 2  # noqa: E731
        print(f"median of {a.reps} per-run ratios: pack->S3 / aws s3 cp = {med(ratios):.2f}x "
              f"(runs: {', '.join(f'{x:.2f}' for x in ratios)})")
    finally:
        moto.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
