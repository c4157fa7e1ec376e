"""The on-disk dataset layer (shards/) against the real readers: Python's tarfile, the
webdataset package, wids, and xxhash (reference XXH3-128)."""
import importlib
import io
import json
import math
import os
import sys
import tarfile
import types
import typing

import pytest
import xxhash

from conftest import run, tool


def write(base, *args):
    d = base / "ds"
    d.mkdir(parents=True, exist_ok=True)
    run([tool("pm_shard_tool"), "write", d, *args])
    return d


def img2dataset_key(shard, row, per_shard, shard_digits=5):
    """img2dataset's compute_key (downloader.py), with oom_sample_per_shard as it computes it."""
    oom_sample_per_shard = math.ceil(math.log10(per_shard))
    true_key = (10 ** oom_sample_per_shard) * shard + row
    key_format = oom_sample_per_shard + shard_digits
    return "{true_key:0{key_format}d}".format(key_format=key_format, true_key=true_key)


def expected_keys(shard, rows, per_shard, fail_every):
    return [img2dataset_key(shard, r, per_shard) for r in range(rows)
            if not (fail_every and r % fail_every == fail_every - 1)]


def raw_headers(data):
    """(offset, header bytes) of every tar header block, walking sizes by hand."""
    off = 0
    while off + 512 <= len(data) and data[off:off + 512] != b"\0" * 512:
        h = data[off:off + 512]
        yield off, h
        size = int(h[124:136].rstrip(b"\0 ").decode() or "0", 8)
        off += 512 + (size + 511) // 512 * 512


def listing(path):
    """Samples as our tar_reader sees them: [(key, [(field, size, xxh3)])]."""
    out = run([tool("pm_shard_tool"), "list", path]).stdout
    samples = []
    for line in out.splitlines():
        key, *fields = line.split("\t")
        samples.append((key, [tuple(f.split(":")) for f in fields]))
    return samples


def test_plain_ustar_only(tmp_path):
    d = write(tmp_path, "--samples", 40, "--seed", 3, "--fail-every", 5)
    tar = d / "00000.tar"
    with tarfile.open(tar) as tf:
        assert tf.pax_headers == {}
        members = tf.getmembers()
        assert len(members) == 3 * 32
        for m in members:
            assert m.isreg()
            assert m.pax_headers == {}
            assert len(m.name.encode()) <= 99
            assert m.mode == 0o644 and m.uid == 0 and m.gid == 0
            assert m.uname == "" and m.gname == ""
    data = tar.read_bytes()
    assert len(data) % 10240 == 0
    heads = list(raw_headers(data))
    assert len(heads) == len(members)
    for off, h in heads:
        assert h[257:265] == b"ustar\x0000", off  # POSIX ustar magic and version
        assert h[156:157] == b"0", off            # regular file; no 'x'/'g' PAX, no 'L' GNU
        assert h[345:500] == b"\0" * 155, off     # prefix unused: the whole name in 'name'
        assert tarfile.calc_chksums(h)[0] == int(h[148:156].rstrip(b"\0 ").decode(), 8)


def test_webdataset_reads_our_shards(tmp_path):
    webdataset = importlib.import_module("webdataset")
    per_shard, rows, fail = 100, 37, 6
    d = write(tmp_path, "--samples", rows, "--seed", 11, "--shards", 2,
              "--per-shard", per_shard, "--fail-every", fail)
    for shard in range(2):
        tar = d / f"{shard:05d}.tar"
        ours = listing(tar)
        ds = webdataset.WebDataset(str(tar), shardshuffle=False)
        theirs = list(ds)
        assert [s["__key__"] for s in theirs] == expected_keys(shard, rows, per_shard, fail)
        assert [k for k, _ in ours] == [s["__key__"] for s in theirs]
        for (key, fields), s in zip(ours, theirs):
            assert sorted(k for k in s if not k.startswith("__")) == ["jpg", "json", "txt"]
            assert [f[0] for f in fields] == ["jpg", "txt", "json"]
            for name, size, h in fields:
                assert int(size) == len(s[name])
                assert h == xxhash.xxh3_128_hexdigest(s[name])
            meta = json.loads(s["json"])
            assert meta["key"] == key
            assert s["txt"].decode().startswith("a synthetic caption")


def import_wids():
    """wids imports torch.distributed and torch.utils.data at import time but its
    ShardListDataset needs neither; when torch is not installed, give it stand-ins for the
    import only (and take them away again, so webdataset still sees no torch)."""
    try:
        import torch  # noqa: F401
        return importlib.import_module("wids")
    except ImportError:
        pass
    T = typing.TypeVar("T")
    torch = types.ModuleType("torch")
    dist = types.ModuleType("torch.distributed")
    utils = types.ModuleType("torch.utils")
    data = types.ModuleType("torch.utils.data")

    class Dataset(typing.Generic[T]):
        pass

    class Sampler(typing.Generic[T]):
        pass

    data.Dataset, data.Sampler = Dataset, Sampler
    dist.is_available = dist.is_initialized = lambda: False
    torch.distributed, torch.utils, utils.data = dist, utils, data
    stubs = {"torch": torch, "torch.distributed": dist, "torch.utils": utils,
             "torch.utils.data": data}
    sys.modules.update(stubs)
    try:
        return importlib.import_module("wids")
    finally:
        for name in stubs:
            sys.modules.pop(name, None)


def test_wids_opens_dataset_json(tmp_path):
    wids = import_wids()
    rows, fail = 23, 4
    d = write(tmp_path, "--samples", rows, "--seed", 5, "--shards", 3, "--fail-every", fail)
    index = json.loads((d / "dataset.json").read_text())
    ds = wids.ShardListDataset(str(d / "dataset.json"), cache_dir=str(tmp_path / "cache"),
                               transformations=[])
    keys = [k for sh in range(3) for k in expected_keys(sh, rows, rows, fail)]
    assert len(ds) == len(keys) == index["counts"]["nsamples"]
    for i in range(len(ds)):
        s = ds[i]
        assert s["__key__"] == keys[i]
        assert json.loads(s[".json"].read())["key"] == keys[i]
        assert s[".txt"].read().startswith(b"a synthetic caption")
    # and the same bytes as webdataset's reader
    webdataset = importlib.import_module("webdataset")
    first = next(iter(webdataset.WebDataset(str(d / "00000.tar"), shardshuffle=False)))
    assert ds[0][".jpg"].read() == first["jpg"]


def test_dataset_json_and_stats(tmp_path):
    rows, fail = 30, 7
    d = write(tmp_path, "--samples", rows, "--seed", 2, "--shards", 3, "--fail-every", fail)
    names = sorted(os.listdir(d))
    assert names == ["00000.tar", "00000_stats.json", "00001.tar", "00001_stats.json",
                     "00002.tar", "00002_stats.json", "dataset.json"]  # no temporary files
    index = json.loads((d / "dataset.json").read_text())
    assert index["wids_version"] == 1
    assert index["checksum_algorithm"] == "xxh3_128"
    assert index["config"] == {"samples": rows, "seed": 2, "per_shard": rows}
    ok = len(expected_keys(0, rows, rows, fail))
    total = 0
    for i, e in enumerate(index["shardlist"]):
        tar = d / e["url"]
        data = tar.read_bytes()
        assert e["url"] == f"{i:05d}.tar"
        assert e["filesize"] == len(data)
        assert e["xxh3"] == xxhash.xxh3_128_hexdigest(data)
        assert e["nsamples"] == ok and e["rows"] == rows
        stats = json.loads((d / f"{i:05d}_stats.json").read_text())
        assert stats["count"] == rows and stats["successes"] == ok
        assert stats["status"] == {"success": ok, "failed_to_download": rows - ok}
        assert stats["xxh3"] == e["xxh3"] and stats["filesize"] == e["filesize"]
        total += e["nsamples"]
    assert index["counts"] == {"shards": 3, "rows": 3 * rows, "nsamples": total,
                               "status": {"success": total,
                                          "failed_to_download": 3 * rows - total}}
    # our own reader reads it back the same
    back = run([tool("pm_shard_tool"), "index", d / "dataset.json"]).stdout.split("\n")
    assert back[0].split() == ["00000.tar", str(ok), str(index["shardlist"][0]["filesize"]),
                               index["shardlist"][0]["xxh3"], str(rows)]


def test_hash_matches_reference_xxh3_128(tmp_path):
    for n in (0, 1, 240, 241, 1000, 100003):
        p = tmp_path / f"f{n}"
        data = bytes((i * 31 + 7) % 251 for i in range(n))
        p.write_bytes(data)
        h, size = run([tool("pm_shard_tool"), "hash", p]).stdout.split()
        assert h == xxhash.xxh3_128_hexdigest(data)
        assert int(size) == n


def test_keys_match_img2dataset():
    cases = [(0, 0, 10000), (1, 5, 10000), (12, 9999, 10000), (3, 7, 1000), (99999, 42, 10000),
             (123456, 1, 10000), (4, 0, 1), (2, 9, 10), (2, 10, 11), (7, 123, 500)]
    for shard, row, per_shard in cases:
        r = run([tool("pm_shard_tool"), "key", shard, row, per_shard, 5])
        assert r.stdout.strip() == img2dataset_key(shard, row, per_shard), (shard, row, per_shard)
    assert img2dataset_key(1, 5, 10000) == "000010005"


def test_same_samples_give_identical_tars(tmp_path):
    a = write(tmp_path / "a", "--samples", 25, "--seed", 9)
    b = write(tmp_path / "b", "--samples", 25, "--seed", 9)
    assert (a / "00000.tar").read_bytes() == (b / "00000.tar").read_bytes()
    c = write(tmp_path / "c", "--samples", 25, "--seed", 10)
    assert (a / "00000.tar").read_bytes() != (c / "00000.tar").read_bytes()


def python_tar(path, members):
    """members: (name, type, data or link target)."""
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tf:
        for name, typ, payload in members:
            ti = tarfile.TarInfo(name)
            ti.type = typ
            if typ == tarfile.REGTYPE:
                ti.size = len(payload)
                tf.addfile(ti, io.BytesIO(payload))
            else:
                ti.linkname = payload
                tf.addfile(ti)


@pytest.mark.parametrize("bad,why", [
    (("../evil.txt", tarfile.REGTYPE, b"x"), "'..'"),
    (("a/../../evil.txt", tarfile.REGTYPE, b"x"), "'..'"),
    (("/etc/passwd", tarfile.REGTYPE, b"root:x:0:0"), "absolute"),
    (("/tmp/abs.txt", tarfile.REGTYPE, b"x"), "absolute"),
    (("k.txt", tarfile.SYMTYPE, "/etc/passwd"), "symbolic link"),
    (("k.txt", tarfile.LNKTYPE, "a.jpg"), "hard link"),
    (("dir", tarfile.DIRTYPE, ""), "not a regular file"),
])
def test_reader_refuses_unsafe_members(tmp_path, bad, why):
    tar = tmp_path / "evil.tar"
    python_tar(tar, [("a.jpg", tarfile.REGTYPE, b"ok"), bad, ("b.jpg", tarfile.REGTYPE, b"ok")])
    r = run([tool("pm_shard_tool"), "list", tar], check=False)
    assert r.returncode == 1
    assert why in r.stderr and "evil.tar" in r.stderr and bad[0] in r.stderr


def test_reader_reads_python_written_pax_and_gnu(tmp_path):
    # other writers' tars (PAX long names, GNU) are read; grouping as webdataset does
    webdataset = importlib.import_module("webdataset")
    long = "d/" + "x" * 120
    for fmt in (tarfile.PAX_FORMAT, tarfile.GNU_FORMAT):
        tar = tmp_path / f"t{fmt}.tar"
        with tarfile.open(tar, "w", format=fmt) as tf:
            for name, data in [(long + ".jpg", b"1"), (long + ".Seg.PNG", b"22"),
                               ("README", b"skip"), ("s2.txt", b"333"), (long + ".cls", b"4"),
                               ("caf\u00e9.txt", b"55")]:
                ti = tarfile.TarInfo(name)
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
        ours = listing(tar)
        theirs = list(webdataset.WebDataset(str(tar), shardshuffle=False))
        assert [k for k, _ in ours] == [s["__key__"] for s in theirs] == [long, "s2", long,
                                                                          "caf\u00e9"]
        assert [f[0] for f in ours[0][1]] == ["jpg", "seg.png"]


def test_truncated_shard_is_refused(tmp_path):
    d = write(tmp_path, "--samples", 10, "--seed", 4)
    data = (d / "00000.tar").read_bytes()
    heads = [off for off, _ in raw_headers(data)]
    for cut in (100, heads[1] + 10, heads[4] + 600, heads[3], heads[6]):
        p = tmp_path / f"cut{cut}.tar"
        p.write_bytes(data[:cut])
        r = run([tool("pm_shard_tool"), "list", p], check=False)
        assert r.returncode == 1, cut
        assert f"cut{cut}.tar" in r.stderr and "offset" in r.stderr
        assert "runcated" in r.stderr or "not a tar" in r.stderr


def test_member_size_limit(tmp_path):
    tar = tmp_path / "big.tar"
    python_tar(tar, [("a.bin", tarfile.REGTYPE, b"x" * 1000),
                     ("b.bin", tarfile.REGTYPE, b"y" * 1001)])
    r = run([tool("pm_shard_tool"), "list", tar, "--max-member", 1000], check=False)
    assert r.returncode == 1 and "b.bin" in r.stderr and "size limit" in r.stderr
    r = run([tool("pm_shard_tool"), "list", tar, "--max-member", 1001])
    assert r.stdout.count("\n") == 2


def test_sweep_removes_only_stale_temps(tmp_path):
    d = write(tmp_path, "--samples", 3, "--seed", 1)
    (d / ".00001.tar.tmp.1234.0123456789abcdef").write_bytes(b"partial")
    (d / ".hidden").write_bytes(b"")
    before = set(os.listdir(d))
    r = run([tool("pm_shard_tool"), "sweep", d])
    assert r.stdout.strip() == "1"
    assert set(os.listdir(d)) == before - {".00001.tar.tmp.1234.0123456789abcdef"}
