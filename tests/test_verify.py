"""`pixelmill verify`: a sound dataset passes; each planted corruption is found and named
(shard and key). Datasets come from tests/pack_fixture.py (the download layout)."""
import io
import json
import tarfile

import pytest
import xxhash

from conftest import run, tool
from pack_fixture import add_member, make_dataset


def verify(path, *extra):
    r = run([tool("pixelmill"), "verify", str(path), "--json", *extra], check=False)
    assert r.returncode in (0, 1), r.stderr
    rep = json.loads(r.stdout)
    assert rep["ok"] == (r.returncode == 0)
    return r.returncode, rep


def problems(rep):
    return [(p["shard"], p["key"], p["message"]) for p in rep["problems"]]


@pytest.fixture
def ds(tmp_path):
    samples = make_dataset(tmp_path / "ds", nshards=3, rows=12)
    return tmp_path / "ds", samples


def reindex(d, shard, tar_bytes, nsamples=None):
    """Record a rewritten tar's size and checksum in dataset.json and the stats file, so
    only the planted problem remains."""
    name = "%05d" % shard
    h = xxhash.xxh3_128_hexdigest(tar_bytes)
    idx = json.loads((d / "dataset.json").read_text())
    e = idx["shardlist"][shard]
    e["filesize"], e["xxh3"] = len(tar_bytes), h
    st = json.loads((d / f"{name}_stats.json").read_text())
    st["filesize"], st["xxh3"] = len(tar_bytes), h
    if nsamples is not None:
        e["nsamples"] = st["successes"] = nsamples
    (d / "dataset.json").write_text(json.dumps(idx))
    (d / f"{name}_stats.json").write_text(json.dumps(st))


def rewrite_tar(path, keep):
    """Copy a tar keeping members for which keep(name) is true."""
    src = tarfile.open(path)
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        for m in src.getmembers():
            if keep(m.name):
                add_member(tf, m.name, src.extractfile(m).read())
    src.close()
    path.write_bytes(out.getvalue())
    return out.getvalue()


def test_sound_dataset_passes(ds):
    d, samples = ds
    rc, rep = verify(d, "--deep")
    assert rc == 0 and rep["problems"] == [] and rep["warnings"] == []
    assert rep["samples"] == len(samples) and rep["shards"] == 3 and rep["rows"] == 36
    r = run([tool("pixelmill"), "verify", str(d)])
    assert "sound" in r.stdout


def test_truncated_tar(ds):
    d, _ = ds
    p = d / "00001.tar"
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2 + 100])
    rc, rep = verify(d)
    assert rc == 1
    msgs = problems(rep)
    assert any(s == "00001" and "broken tar" in m for s, k, m in msgs), msgs
    assert any(s == "00001" and "checksum mismatch" in m for s, k, m in msgs), msgs
    assert all(s == "00001" for s, k, m in msgs)


def image_member(path, which=3):
    with tarfile.open(path) as tf:
        m = [m for m in tf.getmembers() if m.name.endswith(".jpg")][which]
        return m.name[:-4], m.offset_data, m.size


def test_flipped_byte_in_an_image(ds):
    d, _ = ds
    p = d / "00002.tar"
    key, off, size = image_member(p)
    data = bytearray(p.read_bytes())
    data[off + size // 2] ^= 0x01
    p.write_bytes(bytes(data))
    rc, rep = verify(d)
    assert rc == 1
    msgs = problems(rep)
    assert [(s, "checksum mismatch" in m and "dataset.json" in m) for s, k, m in msgs
            if "dataset.json" in m] == [("00002", True)], msgs
    assert any("stats file" in m and "checksum mismatch" in m for s, k, m in msgs)


def test_flipped_byte_breaking_the_jpeg_is_a_decode_failure_with_deep(ds):
    d, _ = ds
    p = d / "00000.tar"
    key, off, size = image_member(p, 2)
    data = bytearray(p.read_bytes())
    data[off + 1] ^= 0xFF  # the SOI marker: no longer a JPEG
    p.write_bytes(bytes(data))
    rc, rep = verify(d)
    assert rc == 1 and not any("decode" in m for s, k, m in problems(rep))
    rc, rep = verify(d, "--deep")
    assert rc == 1
    assert ("00000", key) in [(s, k) for s, k, m in problems(rep) if "does not decode" in m]


def test_missing_sample_member(ds):
    d, samples = ds
    victim = [k for k, v in samples.items() if v["shard"] == 1][4]
    data = rewrite_tar(d / "00001.tar", lambda n: n != victim + ".txt")
    reindex(d, 1, data)
    rc, rep = verify(d)
    assert rc == 1
    assert problems(rep) == [("00001", victim, "sample has no .txt member")]


def test_sidecar_row_without_sample(ds):
    d, samples = ds
    keys = [k for k, v in samples.items() if v["shard"] == 2]
    victim = keys[0]
    data = rewrite_tar(d / "00002.tar", lambda n: not n.startswith(victim + "."))
    reindex(d, 2, data, nsamples=len(keys) - 1)
    rc, rep = verify(d)
    assert rc == 1
    assert problems(rep) == [("00002", victim,
                              "success row in the sidecar has no sample in the tar")]


def test_extra_sample_without_success_row(ds):
    d, samples = ds
    import pyarrow.parquet as pq
    t = pq.read_table(d / "00000.parquet").to_pandas()
    failed = t[t.status != "success"].key.iloc[0]
    p = d / "00000.tar"
    src = tarfile.open(p)
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        for m in src.getmembers():
            add_member(tf, m.name, src.extractfile(m).read())
        for ext in ("jpg", "txt", "json"):
            add_member(tf, f"{failed}.{ext}", samples[next(iter(samples))]["jpg"])
    p.write_bytes(out.getvalue())
    n = sum(1 for v in samples.values() if v["shard"] == 0)
    reindex(d, 0, out.getvalue(), nsamples=n + 1)
    rc, rep = verify(d)
    assert problems(rep) == [("00000", failed,
                              "sample in the tar but its sidecar status is not success")]


def test_wrong_checksum_in_dataset_json(ds):
    d, _ = ds
    idx = json.loads((d / "dataset.json").read_text())
    good = idx["shardlist"][1]["xxh3"]
    idx["shardlist"][1]["xxh3"] = "0" * 32
    (d / "dataset.json").write_text(json.dumps(idx))
    rc, rep = verify(d)
    assert rc == 1
    assert problems(rep) == [("00001", None, "00001.tar checksum mismatch: xxh3 %s, "
                              "dataset.json says %s" % (good, "0" * 32))]


def test_missing_shard(ds):
    d, _ = ds
    (d / "00002.tar").unlink()
    rc, rep = verify(d)
    assert rc == 1
    assert problems(rep) == [("00002", None, "missing shard 00002.tar")]
    r = run([tool("pixelmill"), "verify", str(d)], check=False)
    assert r.returncode == 1 and "problem: shard 00002: missing shard 00002.tar" in r.stdout


def test_missing_stats_and_dataset_json(ds):
    d, _ = ds
    (d / "00000_stats.json").unlink()
    rc, rep = verify(d)
    assert rc == 1 and [s for s, k, m in problems(rep) if "missing stats" in m] == ["00000"]
    (d / "dataset.json").unlink()
    rc, rep = verify(d)
    assert rc == 1 and "missing dataset.json" in problems(rep)[0][2]


def test_stray_temp_file_and_unlisted_tar_are_warnings(ds):
    d, _ = ds
    (d / ".00001.tar.tmp.123.0123456789abcdef").write_bytes(b"partial")
    (d / "00007.tar").write_bytes(b"")
    rc, rep = verify(d)
    assert rc == 0
    w = [x["message"] for x in rep["warnings"]]
    assert any("stray temporary file .00001.tar.tmp" in m for m in w), w
    assert any("00007.tar is not listed" in m for m in w), w


def test_usage():
    assert run([tool("pixelmill"), "verify"], check=False).returncode == 2
    assert run([tool("pixelmill"), "verify", "--help"]).returncode == 0
