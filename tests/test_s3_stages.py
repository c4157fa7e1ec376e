"""Every stage on a dataset at s3://bucket/prefix gives what it gives on a directory: filter
(views, --dedupe from marks), dedupe (marks), sweep, sheet, pack SRC:VIEW and train
DATASET:VIEW read and write through the store, here against moto behind the
SigV4-checking proxy of tests/s3_server.py. The same dataset is kept on local disk and the
objects each stage writes on S3 are compared byte for byte with the files it writes
locally. verify lists the multipart uploads left under the prefix and --abort-incomplete
removes them."""
import json
import os
import re
import tarfile
import uuid
from pathlib import Path

import pytest

from conftest import run, tool
from pack_fixture import upload_dir
from s3_server import REGION, LocalS3, s3_objects
from tuning_fixture import make_dataset


@pytest.fixture(scope="module")
def s3():
    local = LocalS3()
    yield local.direct, local.env
    local.close()


@pytest.fixture
def both(s3, tmp_path):
    """The same small dataset on disk and on S3: (dir, s3 url, bucket, prefix)."""
    direct, _ = s3
    d = tmp_path / "ds"
    make_dataset(str(d), nshards=3, rows=60, seed=3)
    bucket = "pm-" + uuid.uuid4().hex[:12]
    direct.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    upload_dir(direct, bucket, "ds", d)
    return d, f"s3://{bucket}/ds", bucket, "ds"


def local_objects(d, sub):
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted((d / sub).rglob("*"))
            if p.is_file() and not p.name.startswith(".")}


def pm(args, env, check=True):
    return run([tool("pixelmill"), *map(str, args)], env=env, check=check)


def test_filter_and_dedupe_write_the_same_objects_to_s3(s3, both):
    direct, env = s3
    d, url, bucket, prefix = both
    for target in (d, url):
        pm(["dedupe", target, "--by", "url,content"], env)
        pm(["filter", target, "--where", "punsafe < 0.5", "--view", "safe", "--dedupe",
            "url,content"], env)
    got = s3_objects(direct, bucket, prefix)
    want = {**local_objects(d, "_views"), **local_objects(d, "_dedupe")}
    assert want and any(k.endswith(".keep") for k in want) and any(
        k.endswith(".dup") for k in want)
    # view.json and marks.json name nothing local; summary.json neither
    for name, data in want.items():
        assert got.get(name) == data, name
    assert set(k for k in got if k.startswith(("_views/", "_dedupe/"))) == set(want)


def test_sweep_and_sheet_read_s3_like_disk(s3, both, tmp_path):
    _, env = s3
    d, url, _, _ = both
    args = ["--column", "punsafe", "--op", "<", "--thresholds", "0.1,0.3,0.5", "--json"]
    a, b = pm(["sweep", d, *args], env), pm(["sweep", url, *args], env)
    ja, jb = json.loads(a.stdout), json.loads(b.stdout)
    ja.pop("input", None), jb.pop("input", None)
    assert ja == jb
    pm(["filter", d, "--where", "punsafe < 0.3", "--view", "safe"], env)
    pm(["filter", url, "--where", "punsafe < 0.3", "--view", "safe"], env)
    pages = []
    for target in (f"{d}:safe", f"{url}:safe"):
        out = tmp_path / f"{len(pages)}.html"
        pm(["sheet", target, "--sort", "-AESTHETIC_SCORE", "--n", "8", "-o", out], env)
        pages.append(out.read_text())
    imgs = [re.findall(r'<img alt="(\d+)" src="data:image/jpeg;base64,([^"]+)"', p)
            for p in pages]
    assert len(imgs[0]) == 8 and imgs[0] == imgs[1]  # same samples, same tar bytes


def test_pack_and_train_read_an_s3_view(s3, both, tmp_path):
    _, env = s3
    d, url, _, _ = both
    pm(["filter", url, "--where", "AESTHETIC_SCORE >= 5", "--view", "pretty"], env)
    pm(["filter", d, "--where", "AESTHETIC_SCORE >= 5", "--view", "pretty"], env)
    a, b = tmp_path / "a", tmp_path / "b"
    pm(["pack", f"{d}:pretty", "--output", a, "--samples-per-shard", 10], env)
    pm(["pack", f"{url}:pretty", "--output", b, "--samples-per-shard", 10], env)
    tars = sorted(p.name for p in a.glob("*.tar"))
    assert tars and tars == sorted(p.name for p in b.glob("*.tar"))
    for t in tars:
        assert (a / t).read_bytes() == (b / t).read_bytes()
    kept = sum(e["nsamples"] for e in json.loads((a / "dataset.json").read_text())["shardlist"])
    # train on the S3 view: one epoch sees each kept sample once, nothing else
    batch = 2
    steps = kept // batch
    log = tmp_path / "keys"
    tenv = dict(env, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="passive")
    pm(["train", "--data", f"{url}:pretty", "--model", "test-16", "--steps", steps,
        "--batch-size", batch, "--seed", 1, "--threads", 1, "--loader-threads", 1,
        "--checkpoint-dir", tmp_path / "ck", "--log-keys", log], tenv)
    seen = [line.split()[2].rsplit("/", 1)[-1]
            for f in tmp_path.glob("keys.rank*") for line in f.read_text().splitlines()]
    packed = set()
    for t in tars:
        with tarfile.open(a / t) as tf:
            for m in tf.getmembers():
                if m.name.endswith(".json"):
                    packed.add(json.load(tf.extractfile(m))["source_key"])
    assert len(seen) == steps * batch and len(set(seen)) == len(seen)
    assert set(seen) <= packed


def test_stale_s3_view_is_refused(s3, both, tmp_path):
    direct, env = s3
    d, url, bucket, prefix = both
    pm(["filter", url, "--where", "punsafe < 0.5", "--view", "v"], env)
    idx = json.loads(direct.get_object(Bucket=bucket, Key=f"{prefix}/dataset.json")["Body"].read())
    idx["shardlist"][0]["xxh3"] = "0" * 32
    direct.put_object(Bucket=bucket, Key=f"{prefix}/dataset.json", Body=json.dumps(idx).encode())
    r = pm(["pack", f"{url}:v", "--output", tmp_path / "o"], env, check=False)
    assert r.returncode == 1 and "stale" in r.stderr


def test_verify_lists_and_aborts_leftover_multipart_uploads(s3, both, tmp_path):
    direct, env = s3
    _, _, bucket, _ = both
    out = f"s3://{bucket}/packed"
    pm(["pack", both[1], "--output", out, "--samples-per-shard", 20], env)
    r = pm(["verify", out, "--json"], env)
    rep = json.loads(r.stdout)
    assert rep["ok"] and rep["incomplete"] == 0
    # a killed writer's upload under the prefix, and one outside it (not ours)
    up = direct.create_multipart_upload(Bucket=bucket, Key="packed/00001.tar")
    direct.upload_part(Bucket=bucket, Key="packed/00001.tar", UploadId=up["UploadId"],
                       PartNumber=1, Body=b"x" * 100)
    other = direct.create_multipart_upload(Bucket=bucket, Key="elsewhere/a.tar")
    r = pm(["verify", out, "--json"], env)
    rep = json.loads(r.stdout)
    assert rep["ok"] and rep["incomplete"] == 1  # a leftover upload is a warning
    assert any("incomplete multipart upload 00001.tar" in w["message"] for w in rep["warnings"])
    r = pm(["verify", out, "--abort-incomplete"], env)
    assert "removed 1 unfinished writes" in r.stdout
    left = direct.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert [u["UploadId"] for u in left] == [other["UploadId"]]
    assert json.loads(pm(["verify", out, "--json"], env).stdout)["incomplete"] == 0


def test_verify_lists_stray_temporary_files_on_disk(both, tmp_path):
    d = both[0]
    out = tmp_path / "p"
    pm(["pack", d, "--output", out, "--samples-per-shard", 20], None)
    (out / "_views").mkdir()
    stray = out / "_views" / ".x.keep.tmp.123.0123456789abcdef"
    stray.write_bytes(b"partial")
    rep = json.loads(pm(["verify", out, "--json"], None).stdout)
    assert rep["ok"] and rep["incomplete"] == 1
    pm(["verify", out, "--abort-incomplete"], None)
    assert not stray.exists()
