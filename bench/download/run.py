#!/usr/bin/env python3
"""bench/download: img2dataset vs pixelmill on the same corpus behind the same local nginx
over HTTPS, same settings, plus the codec floor. Not a test; prints a Markdown table row
set for docs/benchmarks.md.

  python3 bench/download/run.py [--rows 3000] [--img2dataset-path DIR] [--threads 2]

Only rows that the manifest says succeed and that are not deliberately slow are used
(pure throughput). img2dataset must be importable (pip; --img2dataset-path adds a
`pip install --target` directory to its PYTHONPATH, several joined with ':'; the install
commands, with the empty `wandb` stub it needs, are in docs/benchmarks.md). CPU seconds
are user + system of the whole process tree (GNU time), so they count every thread and
child process.
"""
import argparse
import glob
import json
import os
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

SLOW = {"slow_drip", "raw_stall", "raw_drip", "slow_ok", "http_429", "http_503",
        "raw_flaky_429", "raw_flaky_503"}


def timed(cmd, env=None):
    rep = tempfile.mktemp()
    t0 = time.time()
    r = subprocess.run(["/usr/bin/time", "-o", rep, "-f", "%U %S %M"] + [str(c) for c in cmd],
                       env=env, capture_output=True, text=True)
    wall = time.time() - t0
    if r.returncode != 0:
        sys.exit(f"{cmd[0]} failed ({r.returncode}):\n{r.stderr[-3000:]}")
    u, s, m = Path(rep).read_text().split()[-3:]
    os.unlink(rep)
    return float(u) + float(s), wall, int(m) / 1024


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=3000)
    ap.add_argument("--img2dataset-path", default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--build", default=str(ROOT / "build"))
    ap.add_argument("--skip-img2dataset", action="store_true")
    a = ap.parse_args()
    corpus = Path(make_corpus.ensure_corpus(count=a.rows))
    work = Path(tempfile.mkdtemp(prefix="pm-bench-"))
    with FakeInternet(corpus) as net:
        net.write_lists(work)
        man = net.manifest()
        t = pq.read_table(work / "urls.parquet")
        keep = [i for i, m in enumerate(man) if m["outcome"] == "success"
                and m["case"] not in SLOW and m["server"] == "nginx"]
        # everything over HTTPS (same nginx, test CA)
        urls = [man[i]["url"].replace(net.http_base, net.https_base) for i in keep]
        sub = t.take(pa.array(keep)).set_column(0, "URL", pa.array(urls))
        inp = work / "bench.parquet"
        pq.write_table(sub, inp)
        files = [str(corpus / man[i]["file"]) for i in keep]
        common = dict(size=256, mode="border", quality=95)

        # pixelmill, one process
        out = work / "pm"
        cpu, wall, rss = timed([Path(a.build) / "pixelmill", "download", inp, "--output", out,
                                "--url-col", "URL", "--caption-col", "TEXT",
                                "--image-size", "256", "--resize-mode", "border",
                                "--encode-format", "jpg", "--encode-quality", "95",
                                "--samples-per-shard", "1000", "--timeout", "10",
                                "--retries", "2", "--threads", str(a.threads),
                                "--ca-file", net.ca_file, "--allow-address", "127.0.0.1",
                                "--quiet"])
        ok = json.loads((out / "dataset.json").read_text())["counts"]["status"]["success"]
        pm = dict(ok=ok, cpu=cpu, wall=wall, rss=rss)

        # img2dataset, one process with threads (its own default way of running)
        i2d = dict(ok=0, cpu=float("nan"), wall=float("nan"), rss=float("nan"))
        env = dict(os.environ, SSL_CERT_FILE=net.ca_file)
        if a.img2dataset_path:
            env["PYTHONPATH"] = a.img2dataset_path + os.pathsep + env.get("PYTHONPATH", "")
        out2 = work / "i2d"
        cpu, wall, rss = (float("nan"),) * 3 if a.skip_img2dataset else timed([
                                sys.executable, "-c",
                                "import fire; from img2dataset import download; "
                                "fire.Fire(download)", "--url_list", inp,
                                "--input_format", "parquet", "--url_col", "URL",
                                "--caption_col", "TEXT", "--output_format", "webdataset",
                                "--output_folder", out2, "--processes_count", "1",
                                "--thread_count", "64", "--image_size", "256",
                                "--resize_mode", "border", "--encode_format", "jpg",
                                "--encode_quality", "95", "--number_sample_per_shard", "1000",
                                "--timeout", "10", "--retries", "2", "--distributor",
                                "multiprocessing", "--enable_wandb", "False"], env=env)
        ok2 = sum(json.loads(Path(p).read_text())["successes"]
                  for p in glob.glob(str(out2 / "*_stats.json")))
        if not a.skip_img2dataset:
            i2d = dict(ok=ok2, cpu=cpu, wall=wall, rss=rss)

        # the codec floor: same files, decode + resize + encode, one thread
        r = subprocess.run([Path(a.build) / "pm_codec_floor", "--size", "256", "--mode",
                            "border", "--quality", "95"] + files, capture_output=True,
                           text=True, check=True)
        floor = json.loads(r.stdout)
        r = subprocess.run([Path(a.build) / "pm_codec_floor", "--size", "256", "--mode",
                            "border", "--quality", "95", "--phash", "1"] + files,
                           capture_output=True, text=True, check=True)
        floor_ph = json.loads(r.stdout)
    pm_rate = pm["ok"] / pm["cpu"]
    i2d_rate = i2d["ok"] / i2d["cpu"] if i2d["ok"] else float("nan")
    print(json.dumps({"rows": len(keep), "pixelmill": pm, "img2dataset": i2d,
                      "codec_floor": floor, "codec_floor_phash": floor_ph,
                      "settings": common}, indent=1))
    print()
    print("| tool | successes | CPU s | wall s | peak RSS MB | successes / CPU-s |")
    print("| --- | --- | --- | --- | --- | --- |")
    print(f"| pixelmill | {pm['ok']} | {pm['cpu']:.2f} | {pm['wall']:.2f} | {pm['rss']:.0f} | "
          f"{pm_rate:.1f} |")
    print(f"| img2dataset | {i2d['ok']} | {i2d['cpu']:.2f} | {i2d['wall']:.2f} | "
          f"{i2d['rss']:.0f} | {i2d_rate:.1f} |")
    print(f"| codec floor | {floor['successes']} | {floor['cpu_s']:.2f} | - | - | "
          f"{floor['per_cpu_s']:.1f} |")
    print(f"| codec floor + pHash | {floor_ph['successes']} | {floor_ph['cpu_s']:.2f} | - | - | "
          f"{floor_ph['per_cpu_s']:.1f} |")
    print()
    print(f"codec floor + pHash / pixelmill: {floor_ph['per_cpu_s'] / pm_rate:.2f}x")
    print(f"pixelmill / img2dataset per CPU-second: {pm_rate / i2d_rate:.2f}x; "
          f"codec floor / pixelmill: {floor['per_cpu_s'] / pm_rate:.2f}x")


if __name__ == "__main__":
    main()
