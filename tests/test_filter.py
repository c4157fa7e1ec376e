"""pixelmill filter: views and filtered Parquet, against pyarrow.compute on the same data.

Counts and keep-bitmaps must equal the reference exactly (rule: tests/tuning_ref.py);
-np 1 and mpirun -np 3 must write byte-identical views.
"""
import filecmp
import json
import os
import shutil
import struct

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from conftest import mpirun, run, tool
from tuning_fixture import make_dataset
from tuning_ref import clause, passes, success

WHERE = [
    ("punsafe < 0.1", "punsafe", "<", 0.1),
    ("min(WIDTH,HEIGHT) >= 256", ("min", "WIDTH", "HEIGHT"), ">=", 256),
    ("AESTHETIC_SCORE >= 4.5", "AESTHETIC_SCORE", ">=", 4.5),
    ("similarity > 0.3", "similarity", ">", 0.3),
    ("LANGUAGE in ('en', 'de', 'fr')", "LANGUAGE", "in", ["en", "de", "fr"]),
    ("len(caption) > 34", ("len", "caption"), ">", 34),
]


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    d = tmp_path_factory.mktemp("ds") / "data"
    table = make_dataset(str(d), nshards=3, rows=300, seed=7)
    return str(d), table


def read_keep(path):
    with open(path, "rb") as f:
        b = f.read()
    assert b[:8] == b"PMVKEEP\0"
    version, reserved, rows, kept = struct.unpack("<IIQQ", b[8:32])
    assert version == 1 and reserved == 0
    assert len(b) == 32 + (rows + 7) // 8
    bits = np.unpackbits(np.frombuffer(b[32:], np.uint8), bitorder="little")[:rows]
    assert bits.sum() == kept
    return bits.astype(bool)


def reference(table, where, dedupe=()):
    ok = success(table).to_numpy(zero_copy_only=False)
    keep = ok.copy()
    clauses = []
    missing_any = np.zeros(len(ok), bool)
    for _, operand, op, value in where:
        r = clause(table, operand, op, value)
        p = passes(r).to_numpy(zero_copy_only=False)
        nul = pc.is_null(r).to_numpy(zero_copy_only=False)
        clauses.append((int((ok & ~p).sum()), int((ok & nul).sum())))
        keep &= p
        missing_any |= ok & nul
    kept_where = int(keep.sum())
    dd = {}
    for m in dedupe:
        col = table["url" if m == "url" else "content_hash"].to_pylist()
        seen, n = set(), 0
        for i in range(len(keep)):  # global order = shard order, row order: keeper = lowest
            if not keep[i] or col[i] is None:
                continue
            if col[i] in seen:
                keep[i] = False
                n += 1
            else:
                seen.add(col[i])
        dd[m] = n
    return keep, clauses, kept_where, int(missing_any.sum()), int(ok.sum()), dd


def test_view_matches_pyarrow(ds, pixelmill):
    d, table = ds
    args = []
    for w in WHERE:
        args += ["--where", w[0]]
    r = run([pixelmill, "filter", d, *args, "--dedupe", "url,content", "--view", "t1", "--json"])
    got = json.loads(r.stdout)
    keep, clauses, kept_where, missing, nsucc, dd = reference(table, WHERE, ["url", "content"])
    assert got["rows"] == table.num_rows
    assert got["success"] == nsucc
    assert [(c["dropped"], c["missing"]) for c in got["clauses"]] == clauses
    assert got["kept_by_where"] == kept_where
    assert got["missing"] == missing
    assert got["dedupe"] == dd
    assert got["kept"] == int(keep.sum())
    # bitmaps, shard by shard
    index = json.load(open(os.path.join(d, "dataset.json")))
    view = json.load(open(os.path.join(d, "_views/t1/view.json")))
    bits = np.concatenate([read_keep(os.path.join(d, "_views/t1", s["url"][:-4] + ".keep"))
                           for s in index["shardlist"]])
    assert (bits == keep).all()
    assert [s["xxh3"] for s in view["shards"]] == [s["xxh3"] for s in index["shardlist"]]
    assert view["where"] == [w[0] for w in WHERE]
    assert view["counts"] == got


def test_dedupe_matches_reference(ds, pixelmill):
    d, table = ds
    for methods in (["url"], ["content"], ["content", "url"]):
        r = run([pixelmill, "filter", d, "--where", "punsafe < 0.5", "--dedupe",
                 ",".join(methods), "--view", "dd", "--json"])
        got = json.loads(r.stdout)
        keep, _, _, _, _, dd = reference(table, [("", "punsafe", "<", 0.5)], methods)
        assert got["dedupe"] == dd and got["kept"] == int(keep.sum())
        assert all(v > 0 for v in dd.values())  # the fixture has duplicates of both kinds


def test_float32_rule(ds, pixelmill):
    """float32 0.1 is above double 0.1: `punsafe < 0.1` drops it, `<= 0.1` too."""
    d, table = ds
    f32 = np.float32(0.1)
    vals = table["punsafe"].to_numpy(zero_copy_only=False)
    ok = success(table).to_numpy(zero_copy_only=False)
    n_exact = int((ok & (vals == f32)).sum())
    assert n_exact > 0
    for op in ["<", "<=", ">", ">="]:
        r = run([pixelmill, "filter", d, "--where", f"punsafe {op} 0.1", "--view", "f",
                 "--json"])
        keep, *_ = reference(table, [("", "punsafe", op, 0.1)])
        assert json.loads(r.stdout)["kept"] == int(keep.sum()), op


def test_np3_identical(ds, pixelmill, tmp_path):
    d, _ = ds
    args = ["--where", "punsafe < 0.2", "--where", "min(WIDTH,HEIGHT) >= 256",
            "--dedupe", "url,content", "--view", "mp", "--json"]
    r1 = run([pixelmill, "filter", d, *args])
    saved = tmp_path / "np1"
    shutil.copytree(os.path.join(d, "_views/mp"), saved)
    r3 = mpirun(3, [pixelmill, "filter", d, *args])
    assert r1.stdout == r3.stdout
    cmp = filecmp.dircmp(saved, os.path.join(d, "_views/mp"))
    assert sorted(os.listdir(saved)) == sorted(os.listdir(os.path.join(d, "_views/mp")))
    for name in os.listdir(saved):
        assert filecmp.cmp(saved / name, os.path.join(d, "_views/mp", name), shallow=False), name
    del cmp


def test_rerun_sweeps_temporaries_of_a_killed_run(ds, pixelmill, tmp_path):
    """A run killed while writing keep-bitmaps leaves `.NAME.tmp.PID.HEX` files in the view
    directory; the next run removes them (found by tests/chaos/chaos.py)."""
    d, _ = ds
    work = tmp_path / "copy"
    shutil.copytree(d, work)
    run([pixelmill, "filter", str(work), "--where", "punsafe < 0.5", "--view", "v"])
    want = {p.name: p.read_bytes() for p in (work / "_views/v").iterdir()}
    (work / "_views/v/.00001.keep.tmp.4242.0123456789abcdef").write_bytes(b"partial")
    (work / "_views/v/view.json").unlink()
    run([pixelmill, "filter", str(work), "--where", "punsafe < 0.5", "--view", "v"])
    assert {p.name: p.read_bytes() for p in (work / "_views/v").iterdir()} == want


def test_bad_views_refused(ds, pixelmill, tmp_path):
    d, _ = ds
    work = tmp_path / "copy"
    shutil.copytree(d, work)
    run([pixelmill, "filter", str(work), "--where", "punsafe < 0.5", "--view", "v"])
    out = str(tmp_path / "s.html")
    run([pixelmill, "sheet", f"{work}:v", "--n", "4", "-o", out])
    keep = work / "_views/v/00001.keep"
    good = keep.read_bytes()
    for bad in [good[:-1], good + b"\0", b"XXXXXXXX" + good[8:],
                good[:24] + struct.pack("<Q", 1) + good[32:],
                good[:8] + struct.pack("<I", 2) + good[12:]]:
        keep.write_bytes(bad)
        r = run([pixelmill, "sheet", f"{work}:v", "--n", "4", "-o", out], check=False)
        assert r.returncode == 1 and "00001.keep" in r.stderr, r.stderr
    keep.write_bytes(good)
    idx = json.load(open(work / "dataset.json"))
    idx["shardlist"][2]["xxh3"] = "0" * 32
    json.dump(idx, open(work / "dataset.json", "w"))
    r = run([pixelmill, "sheet", f"{work}:v", "-o", out], check=False)
    assert r.returncode == 1 and "stale" in r.stderr


def test_input_metadata_to_parquet(ds, pixelmill, tmp_path):
    _, table = ds
    src = tmp_path / "in.parquet"
    pq.write_table(table, src, row_group_size=250)
    out = tmp_path / "out.parquet"
    where = WHERE[:3] + WHERE[4:]
    args = [a for w in where for a in ("--where", w[0])]
    r = run([pixelmill, "filter", str(src), *args, "--output", str(out), "--json"])
    mask = np.ones(table.num_rows, bool)
    for _, operand, op, value in where:
        mask &= passes(clause(table, operand, op, value)).to_numpy(zero_copy_only=False)
    expect = table.filter(pa.array(mask))
    got = pq.read_table(out)
    assert json.loads(r.stdout)["kept"] == expect.num_rows
    assert got.num_rows == expect.num_rows
    for name in expect.column_names:
        assert got[name].to_pylist() == expect[name].to_pylist(), name
    # the same from CSV (types inferred: floats become double, same rule)
    csv = tmp_path / "in.csv"
    import pyarrow.csv as pacsv
    pacsv.write_csv(table.select(["key", "punsafe", "WIDTH", "HEIGHT"]), csv)
    r = run([pixelmill, "filter", str(csv), "--where", "min(WIDTH,HEIGHT) >= 256",
             "--output", str(tmp_path / "c.parquet"), "--json"])
    m = passes(clause(table, ("min", "WIDTH", "HEIGHT"), ">=", 256))
    assert json.loads(r.stdout)["kept"] == pc.sum(m.cast(pa.int64())).as_py()


def test_usage_errors(ds, pixelmill):
    d, _ = ds
    assert run([pixelmill, "filter", d, "--where", "punsafe < 0.1"], check=False).returncode == 2
    assert run([pixelmill, "filter", d, "--where", "nosuch < 1", "--view", "x"],
               check=False).returncode == 1
    r = run([pixelmill, "filter", d, "--where", "punsafe <", "--view", "x"], check=False)
    assert r.returncode == 2
    r = run([pixelmill, "filter", d, "--dedupe", "phash", "--view", "x"], check=False)
    assert r.returncode == 2 and "pixelmill dedupe" in r.stderr
    assert run([pixelmill, "filter", d, "--view", "../x"], check=False).returncode == 2
