"""`pixelmill pack` (and pack -> verify) on paths and S3.

Sources are made by tests/pack_fixture.py in the download layout. Checks: exactly the
kept samples (keys, unchanged bytes, pixels for raw .npy), uniform shard sizes, Python
webdataset reads the output, -np 1 and -np 3 give identical bytes, S3 output (through
the SigV4-verifying, fault-injecting proxy of tests/s3_server.py) equals FS output and
leaves no multipart upload, and kill -9 at random moments then a rerun gives the same
output as an uninterrupted run with nothing partial under a final name.
"""
import io
import json
import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import webdataset as wds
from PIL import Image

from conftest import SANITIZED, mpirun, run, tool
from pack_fixture import make_dataset, upload_dir
from s3_server import bucket, client_env, direct, moto, proxy  # noqa: F401 (fixtures)
from s3_server import s3_objects

MiB = 1 << 20


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    d = tmp_path_factory.mktemp("src") / "ds"
    samples = make_dataset(d, nshards=3, rows=12)
    return d, samples


def pack(args, np_=1, check=True, env=None):
    cmd = [tool("pixelmill"), "pack", *map(str, args)]
    if np_ == 1:
        return run(cmd, check=check, env=env, timeout=300)
    return mpirun(np_, cmd, check=check, env=env, timeout=300)


def verify(path, env=None, deep=False):
    r = run([tool("pixelmill"), "verify", str(path), "--json"] + (["--deep"] if deep else []),
            check=False, env=env)
    rep = json.loads(r.stdout)
    assert r.returncode == 0, rep["problems"]
    return rep


def files(d):
    return {p.name: p.read_bytes() for p in sorted(Path(d).iterdir()) if p.is_file()}


def tars(d):
    return sorted(str(p) for p in Path(d).glob("*.tar"))


def wds_samples(d):
    ds = wds.WebDataset(tars(d), shardshuffle=False).decode()
    return list(ds)


def success_keys(samples):
    return list(samples)  # fixture returns them in global (shard, row) order


def test_pack_gives_exactly_the_kept_samples(src, tmp_path):
    d, samples = src
    out = tmp_path / "out"
    pack([d, "--output", out, "--samples-per-shard", 7])
    rep = verify(out, deep=True)
    idx = json.loads((out / "dataset.json").read_text())
    counts = [e["nsamples"] for e in idx["shardlist"]]
    assert counts == [7, 7, 7, 7, 2] and idx["stage"] == "pack" and rep["samples"] == 30
    got = wds_samples(out)
    assert [s["json"]["source_key"] for s in got] == success_keys(samples)
    raw = list(wds.WebDataset(tars(out), shardshuffle=False))
    for s, r in zip(got, raw):
        o = samples[s["json"]["source_key"]]
        assert r["jpg"] == o["jpg"]  # bytes unchanged
        assert s["txt"] == o["caption"] and s["json"]["caption"] == o["caption"]
        assert s["json"]["key"] == s["__key__"] and s["json"]["url"] == o["url"]
        assert s["json"]["status"] == "success" and "aesthetic" in s["json"]
    # new sidecars: one row per packed sample, keys and source keys
    side = pq.read_table(out / "00001.parquet").to_pandas()
    assert list(side.key) == [s["__key__"] for s in got[7:14]]
    assert list(side.source_key) == [s["json"]["source_key"] for s in got[7:14]]
    assert set(side.status) == {"success"} and "phash" in side and "aesthetic" in side
    stats = json.loads((out / "00004_stats.json").read_text())
    assert stats["successes"] == 2 and stats["count"] == 2


def view_source(tmp_path_factory, src):
    """A copy of the source with view `good` (aesthetic > 5) made by `pixelmill filter`;
    returns (dir, expected source keys in global order) computed with pyarrow."""
    d, _ = src
    v = tmp_path_factory.mktemp("view") / "ds"
    shutil.copytree(d, v)
    run([tool("pixelmill"), "filter", v, "--where", "aesthetic > 5", "--view", "good"])
    want = []
    for sh in sorted(v.glob("*.parquet")):
        t = pq.read_table(sh).to_pandas()
        want += list(t[(t.status == "success") & (t.aesthetic > 5)].key)
    return v, want


def test_pack_of_a_view_gives_exactly_its_samples(src, tmp_path_factory, tmp_path):
    v, want = view_source(tmp_path_factory, src)
    assert 0 < len(want) < 30
    out = tmp_path / "out"
    pack([f"{v}:good", "--output", out, "--samples-per-shard", 4], np_=2)
    verify(out)
    got = wds_samples(out)
    assert [s["json"]["source_key"] for s in got] == want
    assert [e["nsamples"] for e in json.loads((out / "dataset.json").read_text())["shardlist"]
            ][:-1] == [4] * ((len(want) - 1) // 4)
    assert json.loads((out / "dataset.json").read_text())["config"]["view"] == "good"
    r = pack([f"{v}:nosuch", "--output", tmp_path / "x"], check=False)
    assert r.returncode == 1 and "view 'nosuch' not found" in r.stderr


def test_shuffle_is_a_deterministic_permutation_independent_of_ranks(src, tmp_path):
    d, samples = src
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    pack([d, "--output", a, "--samples-per-shard", 8, "--shuffle", "--seed", 7])
    pack([d, "--output", b, "--samples-per-shard", 8, "--shuffle", "--seed", 7], np_=3)
    pack([d, "--output", c, "--samples-per-shard", 8, "--shuffle", "--seed", 8], np_=2)
    fa, fb = files(a), files(b)
    for name in fa:
        if name.endswith((".tar", ".parquet")):
            assert fa[name] == fb[name], name
    ka = [s["json"]["source_key"] for s in wds_samples(a)]
    kc = [s["json"]["source_key"] for s in wds_samples(c)]
    assert sorted(ka) == sorted(samples) and ka != list(samples) and ka != kc
    verify(b)


def test_raw_npy_pixels(src, tmp_path):
    d, samples = src
    out = tmp_path / "raw"
    pack([d, "--output", out, "--samples-per-shard", 10, "--encode-format", "raw"], np_=2)
    verify(out, deep=True)
    got = wds_samples(out)
    assert len(got) == 30
    for s in got:
        arr = s["npy"]
        o = samples[s["json"]["source_key"]]
        ref = np.asarray(Image.open(io.BytesIO(o["jpg"])).convert("RGB"))
        assert arr.dtype == np.uint8 and arr.shape == (o["height"], o["width"], 3)
        # libjpeg-turbo on both sides; allow the IDCT/upsampling differences of versions
        assert np.abs(arr.astype(int) - ref.astype(int)).max() <= 2
    # resized raw: shape from the mode, pixels close to PIL's own resize
    out2 = tmp_path / "raw16"
    pack([d, "--output", out2, "--samples-per-shard", 10, "--encode-format", "raw",
          "--image-size", 16, "--resize-mode", "fixed"])
    for s in wds_samples(out2):
        o = samples[s["json"]["source_key"]]
        ref = np.asarray(Image.open(io.BytesIO(o["jpg"])).convert("RGB")
                         .resize((16, 16), Image.BOX)).astype(int)
        assert s["npy"].shape == (16, 16, 3) and s["json"]["width"] == 16
        assert np.abs(s["npy"].astype(int) - ref).mean() < 3


def test_resize_to_jpg_and_webp(src, tmp_path):
    d, _ = src
    for fmt, ext in (("jpg", "jpg"), ("webp", "webp")):
        out = tmp_path / fmt
        pack([d, "--output", out, "--samples-per-shard", 30, "--image-size", 20,
              "--resize-mode", "center_crop", "--encode-format", fmt])
        verify(out, deep=True)
        got = wds_samples(out)
        assert len(got) == 30
        for s in got:
            assert Image.open(io.BytesIO(s[ext])).size == (20, 20)
        side = pq.read_table(out / "00000.parquet").to_pandas()
        assert set(side.width) == {20} and set(side.height) == {20}


def test_shard_bytes_and_usage(src, tmp_path):
    d, _ = src
    out = tmp_path / "sb"
    pack([d, "--output", out, "--shard-bytes", "12k"])
    counts = [e["nsamples"] for e in json.loads((out / "dataset.json").read_text())["shardlist"]]
    assert len(counts) > 1 and len(set(counts[:-1])) == 1 and sum(counts) == 30
    assert pack([d, "--output", out, "--samples-per-shard", 3, "--shard-bytes", "1M"],
                check=False).returncode == 2
    assert pack([d, "--output", out, "--encode-format", "gif"], check=False).returncode == 2
    assert pack([d], check=False).returncode == 2


def test_rerun_skips_complete_shards_and_sigterm_exits_75(src, tmp_path):
    d, _ = src
    ref = tmp_path / "ref"
    opts = ["--samples-per-shard", 3, "--encode-format", "raw", "--image-size", 128,
            "--resize-mode", "fixed"]
    pack([d, "--output", ref, *opts])
    out = tmp_path / "out"
    p = subprocess.Popen([tool("pixelmill"), "pack", str(d), "--output", str(out),
                          *map(str, opts)], stderr=subprocess.PIPE, text=True)
    while not list(out.glob("*_stats.json")) and p.poll() is None:
        time.sleep(0.005)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    if p.returncode == 75:
        assert "interrupted" in err
        assert not (out / "dataset.json").exists()
    else:
        assert p.returncode == 0  # finished before the signal landed
    r = pack([d, "--output", out, *opts])
    assert files(out) .keys() == files(ref).keys()
    for k, v in files(ref).items():
        if not k.endswith(("_stats.json", "dataset.json")):
            assert files(out)[k] == v, k
    verify(out)


def assert_no_partial(out, ref_files):
    """Every object under a final name is complete: equal to the uninterrupted run's."""
    for name, data in out.items():
        if name.startswith("."):
            continue  # a killed writer's temporary file: not a final name
        if name.endswith((".tar", ".parquet")):
            assert data == ref_files[name], f"{name} differs from the uninterrupted run"


KILL_OPTS = ["--samples-per-shard", 3, "--encode-format", "raw", "--image-size", 96,
             "--resize-mode", "fixed", "--shuffle", "--seed", 5]


# Kill moments are states, not times: the source is read through the S3 proxy with every
# GET of it delayed (a rate-limited input, as the download tests use nginx's /slow/), so a
# shard takes at least one delayed read on any machine, and each kill waits for an
# observable state of its run (its first source tar read, or one more finished shard) and
# then a random time shorter than a shard. Each run resumes the previous one's state; a
# kill uses at most 2 shards.
SLOW_GET_S = 0.1
KILL_STATES = (0, 1, 1, 0, 1, 1)  # 0: after the run's first source tar GET; 1: one more shard


def paced_kills(cmd, env, proxy, rng, progress, total, check_visible, extra=None):
    """Run `cmd` once per KILL_STATES entry and kill -9 it at that state + a random 0-0.15
    s; check_visible() after each kill. progress(): finished shards now. extra(): a flag
    sampled at each kill. Returns (kills that hit a running process, those that landed
    mid-write: the run had finished a shard of its own and not the last one, those that
    saw extra())."""
    hit = mid = flagged = 0
    for state in KILL_STATES:
        with proxy.lock:
            mark = len(proxy.log)
        base = progress()
        p = subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL)

        def reached():
            if state == 0:
                with proxy.lock:
                    return any(m == "GET" and "/src/" in path and path.endswith(".tar")
                               for m, path, _, _ in proxy.log[mark:])
            return progress() >= base + state

        deadline = time.monotonic() + 120
        while p.poll() is None and not reached():
            assert time.monotonic() < deadline, "the run made no progress"
            time.sleep(0.005)
        time.sleep(rng.uniform(0, 0.15))
        done = progress()
        flag = extra() if extra else False
        if p.poll() is None:
            hit += 1
            mid += base < done < total
            flagged += bool(flag)
        p.kill()
        p.wait()
        check_visible()
    return hit, mid, flagged


def test_kill_9_at_random_moments_fs(src, tmp_path, proxy, direct, bucket):
    d, _ = src
    upload_dir(direct, bucket, "src", d)
    env = client_env(proxy)
    opts = [*KILL_OPTS[2:], "--samples-per-shard", 2]  # 15 shards
    ref = tmp_path / "ref"
    pack([d, "--output", ref, *opts])
    ref_files = files(ref)
    total = len([n for n in ref_files if n.endswith(".tar")])
    out = tmp_path / "k"
    cmd = [tool("pixelmill"), "pack", f"s3://{bucket}/src", "--output", str(out),
           *map(str, opts)]
    proxy.add_fault("slow", method="GET", path=f"/{bucket}/src/", times=None, delay=SLOW_GET_S)

    def progress():
        return len(list(out.glob("*_stats.json"))) if out.exists() else 0

    hit, mid, tmp_seen = paced_kills(
        cmd, env, proxy, random.Random(1234), progress, total,
        lambda: out.exists() and assert_no_partial(files(out), ref_files),
        extra=lambda: out.exists() and any(".tmp." in n for n in os.listdir(out)))
    print(f"kills: {hit} hit a running pack, {mid} mid-write, {tmp_seen} with a temporary "
          "file present")
    assert hit >= 5, f"only {hit} of {len(KILL_STATES)} kills hit a running pack"
    assert mid >= 3, f"only {mid} kills landed mid-write"
    proxy.clear()
    run(cmd, env=env, timeout=300)
    got = files(out)
    assert got.keys() == ref_files.keys()
    assert_no_partial(got, ref_files)
    assert not [n for n in os.listdir(out) if n.startswith(".")]
    verify(out)


def test_rerun_with_other_options_is_refused(src, tmp_path):
    d, _ = src
    out = tmp_path / "o"
    pack([d, "--output", out, "--samples-per-shard", 5])
    r = pack([d, "--output", out, "--samples-per-shard", 6], check=False)
    assert r.returncode == 2 and "other options" in r.stderr
    r = pack([d, "--output", out, "--samples-per-shard", 5])
    assert "0 shards, 6 already complete" in r.stderr


# ------------------------------------------------------------------------------ S3

s3_files = s3_objects


def uploads(direct, bucket):
    return direct.list_multipart_uploads(Bucket=bucket).get("Uploads", [])


# 10 raw 256x256 samples per shard: ~1.9 MiB shards; 384x384: ~4.3 MiB; with 5 MiB parts
# and 12 samples per shard of 384x384 (5.3 MiB) the tars go up as multipart uploads.
BIG = ["--samples-per-shard", 12, "--encode-format", "raw", "--image-size", 384,
       "--resize-mode", "fixed", "--s3-part-size", "5Mi", "--s3-backoff", "0.01"]


def test_pipeline_fs_and_s3_give_the_same_objects(src, tmp_path, proxy, direct, bucket,
                                                  tmp_path_factory):
    d, samples = src
    upload_dir(direct, bucket, "src", d)
    env = client_env(proxy)
    fs_out = tmp_path / "fs"
    pack([d, "--output", fs_out, *BIG])
    pack([f"s3://{bucket}/src", "--output", f"s3://{bucket}/packed", *BIG], np_=2, env=env)
    rep = verify(f"s3://{bucket}/packed", env=env, deep=True)
    assert rep["samples"] == 30
    got = s3_files(direct, bucket, "packed")
    ref = files(fs_out)
    assert got.keys() == ref.keys()
    for k in ref:
        if k.endswith((".tar", ".parquet")):
            assert got[k] == ref[k], k
    assert any(p[0] == "POST" and "uploads=" in p[2] for p in proxy.log), "no multipart"
    assert uploads(direct, bucket) == []
    # S3 source to a local directory
    back = tmp_path / "back"
    pack([f"s3://{bucket}/src", "--output", back, *BIG], env=env)
    for k in ref:
        if k.endswith((".tar", ".parquet")):
            assert files(back)[k] == ref[k], k
    # a view read from S3
    v, want = view_source(tmp_path_factory, src)
    upload_dir(direct, bucket, "viewsrc", v)
    pack([f"s3://{bucket}/viewsrc:good", "--output", f"s3://{bucket}/vout",
          "--samples-per-shard", 5], env=env)
    verify(f"s3://{bucket}/vout", env=env)
    vdir = tmp_path / "vout"
    vdir.mkdir()
    for k, data in s3_files(direct, bucket, "vout").items():
        (vdir / k).write_bytes(data)
    assert [s["json"]["source_key"] for s in wds_samples(vdir)] == want


def test_s3_under_injected_faults(src, tmp_path, proxy, direct, bucket):
    d, _ = src
    upload_dir(direct, bucket, "src", d)
    env = client_env(proxy)
    fs_out = tmp_path / "fs"
    pack([d, "--output", fs_out, *BIG])
    proxy.add_fault("503", method="POST", query="uploads=")
    proxy.add_fault("503", method="PUT", query="partNumber=1&", times=2)
    proxy.add_fault("reset", method="PUT", query="partNumber=2&")
    proxy.add_fault("500", method="PUT", times=2, skip=3)
    proxy.add_fault("reset", method="POST", query="uploadId=")
    proxy.add_fault("503", method="GET", times=2)
    proxy.add_fault("truncate", method="GET", path="/src/00001.tar")
    proxy.add_fault("slow", method="PUT", delay=0.5, skip=5)
    pack([f"s3://{bucket}/src", "--output", f"s3://{bucket}/packed", *BIG], env=env)
    fired = [f.fired for f in proxy.faults]
    assert all(fired), fired
    proxy.clear()
    verify(f"s3://{bucket}/packed", env=env)
    got = s3_files(direct, bucket, "packed")
    for k, v in files(fs_out).items():
        if k.endswith((".tar", ".parquet")):
            assert got[k] == v, k
    assert uploads(direct, bucket) == []


@pytest.fixture(scope="module")
def kill_src(tmp_path_factory):
    """144 samples: with BIG's 12 a shard, 12 shards of 5.3 MB (multipart uploads)."""
    d = tmp_path_factory.mktemp("killsrc") / "ds"
    make_dataset(d, nshards=3, rows=48, fail_every=0, sizes=((40, 30),))
    return d


def test_kill_9_at_random_moments_s3(kill_src, tmp_path, proxy, direct, bucket):
    d = kill_src
    upload_dir(direct, bucket, "src", d)
    env = client_env(proxy)
    ref = tmp_path / "ref"
    pack([d, "--output", ref, *BIG])
    ref_files = files(ref)
    total = len([n for n in ref_files if n.endswith(".tar")])
    prefix = "k"
    cmd = [tool("pixelmill"), "pack", f"s3://{bucket}/src", "--output", f"s3://{bucket}/{prefix}",
           *map(str, BIG)]
    proxy.add_fault("slow", method="GET", path=f"/{bucket}/src/", times=None, delay=SLOW_GET_S)
    # parts slowed too, so that kills also land while a multipart upload is going up
    proxy.add_fault("slow", method="PUT", path=f"/{bucket}/{prefix}/", query="partNumber=",
                    times=None, delay=0.05)

    def progress():  # shards whose stats object (each shard's last) is there
        objs = direct.list_objects_v2(Bucket=bucket, Prefix=prefix + "/").get("Contents", [])
        return len([o for o in objs if o["Key"].endswith("_stats.json")])

    def uploading():
        with proxy.lock:
            return proxy.parts_inflight > 0

    checked = set()

    def check_visible():  # every final object is complete (each version read once)
        objs = direct.list_objects_v2(Bucket=bucket, Prefix=prefix + "/").get("Contents", [])
        for o in objs:
            name = o["Key"][len(prefix) + 1:]
            if name.endswith((".tar", ".parquet")) and (name, o["ETag"]) not in checked:
                data = direct.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
                assert_no_partial({name: data}, ref_files)
                checked.add((name, o["ETag"]))

    hit, mid, mid_upload = paced_kills(cmd, env, proxy, random.Random(99), progress, total,
                                       check_visible, extra=uploading)
    print(f"kills: {hit} hit a running pack, {mid} mid-write, {mid_upload} mid-upload")
    assert hit >= 5, f"only {hit} of {len(KILL_STATES)} kills hit a running pack"
    assert mid >= 3, f"only {mid} kills landed mid-write"
    proxy.clear()
    pack([f"s3://{bucket}/src", "--output", f"s3://{bucket}/{prefix}", *BIG], env=env)
    got = s3_files(direct, bucket, prefix)
    assert got.keys() == ref_files.keys()
    assert_no_partial(got, ref_files)
    verify(f"s3://{bucket}/{prefix}", env=env)
    assert uploads(direct, bucket) == []
