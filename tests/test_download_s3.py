"""`pixelmill download --output s3://bucket/prefix` from the fake internet into moto behind
the SigV4-checking proxy: the same rows, statuses and sample bytes as a download to disk;
verify passes; kill -9 at several moments then a rerun neither loses nor duplicates a
sample, no partial object is ever visible under a final name, and no multipart upload is
left. Fixtures (fake internet, argument list, reference run) are test_download's."""
import io
import json
import os
import signal
import subprocess
import tarfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import run, tool
from s3_server import LocalS3, s3_objects
from test_download import MPI, dl_args, net, paced_ref, summary, tar_members  # noqa: F401


@pytest.fixture(scope="module")
def s3():
    local = LocalS3()
    yield local
    local.close()


def fetch(direct, bucket, prefix, dest):
    """Copy s3://bucket/prefix/ into directory dest; returns {name: bytes}."""
    objs = s3_objects(direct, bucket, prefix)
    dest.mkdir(parents=True, exist_ok=True)
    for k, v in objs.items():
        (dest / k).parent.mkdir(parents=True, exist_ok=True)
        (dest / k).write_bytes(v)
    return objs


def objects_sound(objs):
    """Every object under a final name is whole: tars and sidecars parse; each stats file
    (the commit record) matches its tar and sidecar."""
    for k, v in objs.items():
        if k.endswith(".tar"):
            with tarfile.open(fileobj=io.BytesIO(v)) as t:
                t.getmembers()
        elif k.endswith(".parquet"):
            pq.read_table(io.BytesIO(v))
    for k, v in objs.items():
        if k.endswith("_stats.json"):
            s = json.loads(v)
            name = k[: -len("_stats.json")]
            assert len(objs[f"{name}.tar"]) == s["filesize"]
            assert pq.read_metadata(io.BytesIO(objs[f"{name}.parquet"])).num_rows == s["count"]


def test_download_to_s3_equals_download_to_disk(net, s3, tmp_path):
    direct, env = s3.direct, s3.env
    bucket = s3.new_bucket()
    disk, url = tmp_path / "disk", f"s3://{bucket}/ds"
    fast = net.lists / "fast.parquet"
    run(dl_args(net, fast, disk), timeout=300)
    run(MPI + ["-np", "2"] + dl_args(net, fast, url, "--work-dir", tmp_path / "work"),
        env=env, timeout=300)
    got = tmp_path / "got"
    objs = fetch(direct, bucket, "ds", got)
    objects_sound(objs)
    assert "dataset.json" in objs
    assert summary(got) == summary(disk) and tar_members(got) == tar_members(disk)
    r = run([tool("pixelmill"), "verify", url, "--json"], env=env)
    rep = json.loads(r.stdout)
    assert rep["ok"] and rep["incomplete"] == 0
    # the work state stayed local; nothing of it under the prefix
    assert not any(k.startswith("_work/") for k in objs)
    assert direct.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_download_to_s3_kill9_then_resume(net, s3, paced_ref, tmp_path):
    direct, env = s3.direct, s3.env
    bucket = s3.new_bucket()
    url = f"s3://{bucket}/ds"
    paced = net.lists / "paced.parquet"
    work = ["--work-dir", tmp_path / "work"]
    # one rate-limited transfer per rank: a run lasts ~20 s whatever the machine's load
    args = MPI + ["-np", "2"] + dl_args(net, paced, url, *work, sps=4) + [
        "--concurrency", "1", "--threads", "1"]
    kills = 0
    for delay in (0.5, 1.2, 2.0, 3.0, 4.2):
        p = subprocess.Popen([str(a) for a in args], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True, env=env)
        time.sleep(delay)
        if p.poll() is not None:
            break
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        kills += 1
        objects_sound(fetch(direct, bucket, "ds", tmp_path / f"k{kills}"))
    assert kills >= 4
    run(MPI + ["-np", "2"] + dl_args(net, paced, url, *work, sps=4), env=env, timeout=180)
    got = tmp_path / "got"
    objects_sound(fetch(direct, bucket, "ds", got))
    assert (summary(got), tar_members(got)) == paced_ref
    assert direct.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
