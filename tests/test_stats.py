"""`pixelmill stats` against pandas/pyarrow on LAION-like data (Parquet, CSV, JSONL), and
byte-identical JSON for any rank count and any split of the input into files."""
import json
import math
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from conftest import ROOT, mpirun, run, tool

sys.path.insert(0, str(ROOT / "bench"))
import gen_laion  # noqa: E402

QS = {"p1": 0.01, "p5": 0.05, "p25": 0.25, "p50": 0.5, "p75": 0.75, "p95": 0.95, "p99": 0.99}
ROWS = 30000


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """The LAION-like table plus a bool and a NaN-holding column, as one Parquet file
    with several row groups and as a 3-file split with other row-group sizes."""
    d = tmp_path_factory.mktemp("stats")
    base = d / "base.parquet"
    gen_laion.write(str(base), ROWS, seed=7, row_group_rows=ROWS)
    t = pq.read_table(base)
    rng = np.random.default_rng(3)
    flag = pa.array(rng.random(ROWS) < 0.3, mask=rng.random(ROWS) < 0.05)
    nanny = rng.normal(-2.5, 10.0, ROWS)
    nanny[rng.random(ROWS) < 0.02] = np.nan
    nanny = pa.array(nanny, mask=rng.random(ROWS) < 0.03)
    t = t.append_column("flag", flag).append_column("nanny", nanny)
    whole = d / "whole.parquet"
    pq.write_table(t, whole, row_group_size=7000, compression="snappy")
    split = []
    for i, (lo, hi, rg) in enumerate([(0, 9999, 2500), (9999, 10003, 10), (10003, ROWS, 6000)]):
        p = d / f"part{i}.parquet"
        pq.write_table(t.slice(lo, hi - lo), p, row_group_size=rg, compression="zstd")
        split.append(p)
    return {"dir": d, "table": t, "whole": whole, "split": split}


def stats_json(args, np_=None):
    cmd = [tool("pixelmill"), "stats", "--json", "--top", "100", *args]
    r = mpirun(np_, cmd) if np_ else run(cmd)
    return r.stdout


def close(a, b, rel):
    return abs(a - b) <= rel * max(abs(a), abs(b)) + 1e-300


def check_column(col, s, sorted_values_of=None):
    """Compare one column's JSON statistics with pandas/pyarrow on Series `s`."""
    name = col["name"]
    if pd.api.types.is_bool_dtype(s) or col["type"] == "bool":
        v = s.dropna().astype(bool)
        assert col["nulls"] == int(s.isna().sum()), name
        assert col["true"] == int(v.sum()) and col["false"] == int((~v).sum()), name
        return
    if col["type"] == "string":
        v = s.dropna()
        assert col["nulls"] == int(s.isna().sum()), name
        assert col["count"] == len(v), name
        lens = v.str.len()
        assert col["min_length"] == int(lens.min()) and col["max_length"] == int(lens.max()), name
        assert close(col["mean_length"], float(lens.mean()), 1e-12), name
        vc = v.value_counts()
        if len(vc) <= 1000:
            assert col["distinct"] == len(vc), name
            expect = sorted(vc.items(), key=lambda kv: (-kv[1], kv[0].encode()))[:100]
            got = [(e["value"], e["count"]) for e in col["top"]]
            assert got == [(k, int(c)) for k, c in expect], name
        else:
            assert col["distinct"] is None and col["top"] is None, name
        return
    # numeric: NaN is counted apart from nulls
    f = s.astype("float64")
    nan_mask = f.isna()
    assert col["nulls"] + col.get("nans", 0) == int(nan_mask.sum()), name
    v = f.dropna()
    assert col["count"] == len(v), name
    if col["type"] in ("int32", "int64"):
        iv = s.dropna().astype("int64")
        assert col["min"] == int(iv.min()) and col["max"] == int(iv.max()), name
        exact_mean = sum(int(x) for x in iv) / len(iv)
    else:
        assert col["min"] == float(v.min()) and col["max"] == float(v.max()), name
        exact_mean = math.fsum(v.tolist()) / len(v)
    assert close(col["mean"], exact_mean, 1e-12), (name, col["mean"], exact_mean)
    assert close(col["mean"], float(v.mean()), 1e-12), name
    x = np.sort(v.to_numpy())
    bound = col["quantile_max_rel_error"]
    assert bound <= 2.0 ** -(col["quantile_mantissa_bits"] + 1), name
    for qn, q in QS.items():
        ref = float(v.quantile(q))  # pandas, default 'linear'
        pos = (len(x) - 1) * q
        k = int(math.floor(pos))
        scale = max(abs(x[k]), abs(x[min(k + 1, len(x) - 1)]))
        err = abs(col["quantiles"][qn] - ref)
        assert err <= bound * scale + 4e-16 * scale, (name, qn, col["quantiles"][qn], ref, bound)


def test_parquet_matches_pandas(data):
    out = json.loads(stats_json([data["whole"]]))
    df = data["table"].to_pandas()
    assert out["rows"] == ROWS
    names = [c["name"] for c in out["columns"]]
    assert names == data["table"].column_names
    types = {c["name"]: c["type"] for c in out["columns"]}
    assert types["WIDTH"] == "int32" and types["SAMPLE_ID"] == "int64"
    assert types["punsafe"] == "float" and types["similarity"] == "double"
    assert types["flag"] == "bool" and types["URL"] == "string"
    for col in out["columns"]:
        check_column(col, df[col["name"]])
    # pyarrow's own null counts (NaN is not null there) and min/max
    t = data["table"]
    for col in out["columns"]:
        assert col["nulls"] == t[col["name"]].null_count, col["name"]
        if col["type"] in ("int32", "int64", "float", "double") and col["name"] != "nanny":
            mm = pc.min_max(t[col["name"]]).as_py()
            assert (col["min"], col["max"]) == (mm["min"], mm["max"]), col["name"]
    # float32 scores and small ints are exact at the default resolution
    by = {c["name"]: c for c in out["columns"]}
    for n in ("WIDTH", "HEIGHT", "punsafe", "pwatermark", "AESTHETIC_SCORE"):
        assert by[n]["quantile_max_rel_error"] == 0.0, n
        assert by[n]["quantiles"] == {k: float(df[n].astype("float64").quantile(q))
                                      for k, q in QS.items()}, n


def test_identical_for_ranks_and_splits(data):
    one = stats_json([data["whole"]])
    assert stats_json([data["whole"]], np_=3) == one
    assert stats_json(data["split"]) == one
    assert stats_json(list(reversed(data["split"])), np_=3) == one


def test_text_formats_match_pandas(data, tmp_path):
    t = data["table"].select(["WIDTH", "similarity", "LANGUAGE", "TEXT", "flag"]).slice(0, 6000)
    csv = tmp_path / "t.csv"
    pacsv.write_csv(t, csv)
    jsonl = tmp_path / "t.jsonl"
    with open(jsonl, "w", encoding="utf-8") as f:
        for row in t.to_pylist():
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    # pyarrow's CSV parser (pandas' C parser may be 1 ulp off on 17-digit floats)
    ref_csv = pacsv.read_csv(csv, convert_options=pacsv.ConvertOptions(
        null_values=[""], strings_can_be_null=True)).to_pandas()
    # Python's json parser (pandas' read_json may be 1 ulp off on 17-digit floats)
    with open(jsonl, encoding="utf-8") as f:
        ref_jsonl = pd.DataFrame([json.loads(line) for line in f])
    for path, ref in ((csv, ref_csv), (jsonl, ref_jsonl)):
        out = json.loads(stats_json([path]))
        assert out["rows"] == 6000
        types = {c["name"]: c["type"] for c in out["columns"]}
        assert types["WIDTH"] == "int64" and types["similarity"] == "double", path
        assert types["flag"] == "bool" and types["TEXT"] == "string", path
        for col in out["columns"]:
            check_column(col, ref[col["name"]])


def test_cols_and_table_output(data):
    out = json.loads(stats_json(["--cols", "LANGUAGE,WIDTH", data["whole"]]))
    assert [c["name"] for c in out["columns"]] == ["LANGUAGE", "WIDTH"]
    r = run([tool("pixelmill"), "stats", data["whole"]])
    for name in ("URL", "AESTHETIC_SCORE", "LANGUAGE", "flag", "p50", "q.err"):
        assert name in r.stdout
    assert f"{ROWS} rows" in r.stdout


def test_bad_input_names_the_file(data, tmp_path):
    bad = tmp_path / "broken.parquet"
    bad.write_bytes(b"PAR1 this is not a parquet file PAR1")
    r = run([tool("pixelmill"), "stats", data["whole"], bad], check=False)
    assert r.returncode == 1 and "broken.parquet" in r.stderr
    r = run([tool("pixelmill"), "stats", tmp_path / "missing.parquet"], check=False)
    assert r.returncode == 1 and "missing.parquet" in r.stderr
    other = tmp_path / "other.parquet"
    pq.write_table(pa.table({"x": [1, 2, 3]}), other)
    r = run([tool("pixelmill"), "stats", data["whole"], other], check=False)
    assert r.returncode == 1 and "other.parquet" in r.stderr
    r = run([tool("pixelmill"), "stats", "--cols", "NOPE", data["whole"]], check=False)
    assert r.returncode in (1, 2) and "NOPE" in r.stderr


def test_usage_errors(data):
    for args in ([], ["--top", "x", data["whole"]], ["--format", "xls", data["whole"]],
                 ["--bogus", data["whole"]], ["--cols", "a,,b", data["whole"]]):
        r = run([tool("pixelmill"), "stats", *args], check=False)
        assert r.returncode == 2, args
    r = run([tool("pixelmill"), "stats", "--help"])
    assert "2^-(m+1)" in r.stdout and "mpirun" in r.stdout


def test_corrupt_row_group_under_mpi(data, tmp_path):
    """A file whose footer is fine but a later row group is damaged: the rank that reads
    it reports the file, and the job exits 1."""
    p = tmp_path / "damaged.parquet"
    raw = bytearray(data["whole"].read_bytes())
    meta = pq.ParquetFile(data["whole"]).metadata
    rg = meta.row_group(1)  # unit 1: read by rank 1 of 2
    col = rg.column(1)  # URL, snappy
    start = col.data_page_offset + 40
    raw[start:start + 4096] = bytes((i * 37 + 11) % 256 for i in range(4096))
    p.write_bytes(bytes(raw))
    r = mpirun(2, [tool("pixelmill"), "stats", "--json", p], check=False)
    assert r.returncode != 0 and "damaged.parquet" in r.stderr
    assert "pixelmill[1]" in r.stderr
    assert r.stdout == ""


def test_empty_parquet(tmp_path):
    empty = tmp_path / "empty.parquet"
    pq.write_table(pa.table({"x": pa.array([], pa.float32()), "s": pa.array([], pa.string())}),
                   empty)
    out = json.loads(stats_json([empty]))
    assert out["rows"] == 0
    assert [(c["name"], c["count"], c["min"] if "min" in c else c["min_length"])
            for c in out["columns"]] == [("x", 0, None), ("s", 0, None)]


def test_empty_input_and_format_option(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("x,s\n")
    out = json.loads(stats_json([empty]))
    assert out["rows"] == 0 and [c["count"] for c in out["columns"]] == [0, 0]
    txt = tmp_path / "table.txt"
    txt.write_text("a,b\n1,x\n3,y\n,x\n")
    r = run([tool("pixelmill"), "stats", txt], check=False)
    assert r.returncode == 2 and "--format" in r.stderr
    out = json.loads(stats_json(["--format", "csv", txt]))
    a, b = out["columns"]
    assert (a["type"], a["nulls"], a["min"], a["max"], a["mean"]) == ("int64", 1, 1, 3, 2.0)
    assert b["top"] == [{"value": "x", "count": 2}, {"value": "y", "count": 1}]


def test_coarse_histogram_bound_and_identity(data):
    """Few buckets force m down: quantiles stay within the printed bound of pandas' and
    the output is still identical for another rank count and split."""
    args = ["--quantile-buckets", "8192", "--cols", "similarity,nanny,SAMPLE_ID,punsafe"]
    text = stats_json([*args, data["whole"]])
    out = json.loads(text)
    df = data["table"].to_pandas()
    by = {c["name"]: c for c in out["columns"]}
    assert by["similarity"]["quantile_mantissa_bits"] < 23
    assert by["punsafe"]["quantile_max_rel_error"] > 0
    for col in out["columns"]:
        check_column(col, df[col["name"]])
    assert stats_json([*args, *data["split"]], np_=2) == text
