"""The stages chained on real output: download (fake internet) -> filter (view) ->
pack SRC:VIEW -> verify, to a directory and to S3 (behind the SigV4-checking proxy), and
the packed result read by Python's webdataset."""
import json
import os
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import webdataset as wds

from conftest import ROOT, run, tool
from s3_server import LocalS3, new_bucket

sys.path.insert(0, str(ROOT / "tests" / "fakenet"))
import make_corpus  # noqa: E402
from server import FakeInternet  # noqa: E402

SLOW_CASES = {"slow_drip", "raw_stall", "raw_drip", "slow_ok", "http_429", "http_503",
              "raw_flaky_429", "raw_flaky_503"}


@pytest.fixture(scope="module")
def downloaded(tmp_path_factory):
    """A dataset made by `pixelmill download` from the fake internet (fast rows only)."""
    corpus = make_corpus.ensure_corpus(count=200)
    out = tmp_path_factory.mktemp("ds") / "ds"
    with FakeInternet(corpus) as net:
        lists = tmp_path_factory.mktemp("lists")
        net.write_lists(lists)
        man = net.manifest()
        t = pq.read_table(lists / "urls.parquet")
        keep = [i for i, m in enumerate(man) if m["case"] not in SLOW_CASES]
        pq.write_table(t.take(keep), lists / "fast.parquet")
        run([tool("pixelmill"), "download", "--input", lists / "fast.parquet", "--output", out,
             "--url-col", "URL", "--caption-col", "TEXT",
             "--keep-cols", "punsafe,AESTHETIC_SCORE", "--samples-per-shard", "40",
             "--timeout", "6", "--ca-file", net.ca_file, "--allow-address", "127.0.0.1",
             "--user-agent-token", "pixelmill", "--concurrency", "32", "--threads", "2",
             "--quiet"])
    return out


def kept_keys(ds, where):
    """Keys of success rows passing `where` (a python predicate), in dataset order."""
    rows = [r for f in sorted(Path(ds).glob("[0-9]*.parquet")) for r in pq.read_table(f).to_pylist()]
    return [r["key"] for r in rows if r["status"] == "success" and where(r)]


def test_download_filter_pack_verify_on_disk(downloaded, tmp_path):
    run([tool("pixelmill"), "verify", downloaded])
    run([tool("pixelmill"), "filter", downloaded, "--where", "punsafe < 0.5",
         "--view", "safe"])
    expect = kept_keys(downloaded, lambda r: r["punsafe"] is not None and r["punsafe"] < 0.5)
    assert 0 < len(expect) < len(kept_keys(downloaded, lambda r: True))
    out = tmp_path / "packed"
    run([tool("pixelmill"), "pack", f"{downloaded}:safe", "--output", out,
         "--samples-per-shard", "25", "--encode-format", "raw", "--image-size", "64"])
    r = run([tool("pixelmill"), "verify", out, "--deep", "--json"])
    assert json.loads(r.stdout)["ok"] is True
    got = []
    for s in wds.WebDataset(sorted(str(p) for p in out.glob("*.tar")), shardshuffle=False).decode():
        assert s["npy"].shape == (64, 64, 3)
        got.append(s["json"]["source_key"])
    assert got == expect


@pytest.fixture(scope="module")
def s3():
    local = LocalS3()
    yield local.direct, local.env
    local.close()


def test_download_pack_to_s3_then_verify(downloaded, s3):
    direct, env = s3
    bucket = new_bucket(direct)
    dst = f"s3://{bucket}/packed"
    run([tool("pixelmill"), "pack", downloaded, "--output", dst, "--samples-per-shard", "30"],
        env=env)
    r = run([tool("pixelmill"), "verify", dst, "--json"], env=env)
    assert json.loads(r.stdout)["ok"] is True
    index = json.loads(direct.get_object(Bucket=bucket, Key="packed/dataset.json")["Body"].read())
    assert sum(s["nsamples"] for s in index["shardlist"]) == len(kept_keys(downloaded, lambda r: True))
    assert direct.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_train_reads_a_view_of_downloaded_data(downloaded, tmp_path):
    """train DATASET:VIEW sees exactly the view's samples (one epoch covers each once)."""
    run([tool("pixelmill"), "filter", downloaded, "--where", "AESTHETIC_SCORE >= 5",
         "--view", "pretty"])
    expect = set(kept_keys(downloaded, lambda r: r["AESTHETIC_SCORE"] is not None
                           and r["AESTHETIC_SCORE"] >= 5))
    assert 4 <= len(expect) < len(kept_keys(downloaded, lambda r: True))
    batch = 2
    steps = len(expect) // batch
    log = tmp_path / "keys"
    env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="passive")
    run([tool("pixelmill"), "train", "--data", f"{downloaded}:pretty", "--model", "test-16",
         "--steps", steps, "--batch-size", batch, "--seed", 1, "--threads", 1,
         "--loader-threads", 1, "--checkpoint-dir", tmp_path / "ck", "--log-keys", log],
        env=env)
    seen = [line.split()[2].rsplit("/", 1)[-1]
            for f in tmp_path.glob("keys.rank*") for line in f.read_text().splitlines()]
    assert len(seen) == steps * batch and len(set(seen)) == len(seen)
    assert set(seen) <= expect
