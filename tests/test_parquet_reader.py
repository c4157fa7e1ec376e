"""parquet_reader parity with pyarrow: pm_parquet_dump must print exactly the values that
pyarrow reads, for every codec x data page version x dictionary setting, with column
selection and row-group ranges; unsupported features must fail cleanly; damaged files
must fail (or rarely still read) without crashing."""
import itertools
import json
import random
import struct

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import SANITIZED, run, tool

# ---------------------------------------------------------------------------------
# The canonical text form (see tests/tools/pm_parquet_dump.c), produced from pyarrow.

_ESC = {i: (chr(i) if 0x20 <= i <= 0x7E else f"\\x{i:02x}") for i in range(256)}
_ESC[ord('"')] = '\\"'
_ESC[ord("\\")] = "\\\\"

TYPE_NAMES = {
    pa.bool_(): "bool", pa.int8(): "int32", pa.int16(): "int32", pa.int32(): "int32",
    pa.uint8(): "int32", pa.uint16(): "int32", pa.uint32(): "int64",
    pa.int64(): "int64", pa.float32(): "float", pa.float64(): "double",
    pa.string(): "string", pa.large_string(): "string", pa.binary(): "string",
}


def esc(b: bytes) -> str:
    return '"' + b.decode("latin-1").translate(_ESC) + '"'


def fmt_column(arr: pa.ChunkedArray):
    t = arr.type
    vals = arr.to_pylist()
    if pa.types.is_boolean(t):
        return [None if v is None else ("true" if v else "false") for v in vals]
    if pa.types.is_integer(t):
        return [None if v is None else str(v) for v in vals]
    if pa.types.is_floating(t):
        return [None if v is None else '"0x%016x"' % struct.unpack("<Q", struct.pack("<d", v))[0]
                for v in vals]
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return [None if v is None else esc(v.encode("utf-8")) for v in vals]
    if pa.types.is_binary(t):
        return [None if v is None else esc(v) for v in vals]
    raise TypeError(t)


def physical(table: pa.Table) -> pa.Table:
    """What our reader gives for pyarrow's logical types: dictionaries decoded, temporal
    types as their stored integers."""
    cols, fields = [], []
    for f, col in zip(table.schema, table.columns):
        t = f.type
        if pa.types.is_dictionary(t):
            col, t = col.cast(t.value_type), t.value_type
        if pa.types.is_temporal(t):
            it = pa.int32() if t.bit_width == 32 else pa.int64()
            col = pa.chunked_array([c.view(it) for c in col.chunks], it)
            t = it
        cols.append(col)
        fields.append(pa.field(f.name, t, f.nullable))
    return pa.Table.from_arrays(cols, schema=pa.schema(fields))


def expected_rows(table: pa.Table):
    cols = [fmt_column(table.column(i)) for i in range(table.num_columns)]
    return ["[" + ",".join("null" if v is None else v for v in row) + "]"
            for row in zip(*cols)] if cols else []


def dump(path, *args, check=True):
    r = run([tool("pm_parquet_dump"), path, *args], check=check)
    if not check:
        return r
    lines = r.stdout.split("\n")
    assert lines[-1] == ""
    return json.loads(lines[0]), lines[1:-1]


def check_file(path, columns=None, row_groups=None, extra=()):
    """Our dump of `path` equals pyarrow's reading of it (whole file or a part)."""
    pf = pq.ParquetFile(path)
    args = list(extra)
    if columns is not None:
        args += ["--columns", ",".join(columns)]
    if row_groups is not None:
        first, count = row_groups
        args += ["--row-groups", f"{first}:{count}"]
        table = pf.read_row_groups(list(range(first, first + count)), columns=columns,
                                   use_threads=False)
    else:
        table = pf.read(columns=columns, use_threads=False)
    table = physical(table)
    head, rows = dump(path, *args)
    assert head["num_rows"] == pf.metadata.num_rows
    assert head["row_groups"] == [pf.metadata.row_group(i).num_rows
                                  for i in range(pf.metadata.num_row_groups)]
    schema = physical(pf.schema_arrow.empty_table()).schema
    assert [c["name"] for c in head["columns"]] == schema.names
    for c, f in zip(head["columns"], schema):
        assert c["type"] == TYPE_NAMES[f.type], f
        assert c["nullable"] == f.nullable, f
        assert c["supported"]
    exp = expected_rows(table)
    assert len(rows) == len(exp)
    for i, (a, b) in enumerate(zip(rows, exp)):
        assert a == b, f"row {i}: ours {a[:300]} != pyarrow {b[:300]}"
    return rows


# ---------------------------------------------------------------------------------
# Data.

F32_SPECIAL = [np.nan, np.inf, -np.inf, -0.0, 0.0, 1e-45, -1e-45, 1.17e-38,
               3.4028235e38, -3.4028235e38, 1.5]
F64_SPECIAL = [np.nan, np.inf, -np.inf, -0.0, 0.0, 5e-324, -5e-324, 2.2250738585072e-308,
               1.7976931348623157e308, -1.7976931348623157e308, 0.1]
WORDS = ["", "a", "hello", "é", "漢字テキスト", "emoji 😀🎉", "tab\tnew\nline", 'quote"back\\',
         "\x00nul", "https://example.com/img.jpg?x=1&y=2"]


def make_table(n, seed, long_strings=True):
    rng = np.random.default_rng(seed)
    pyr = random.Random(seed)

    def with_nulls(values, frac=0.2):
        mask = rng.random(n) < frac
        return [None if m else v for v, m in zip(values, mask)]

    i32 = rng.integers(-2**31, 2**31, n, dtype=np.int64).astype(np.int32)
    i32[:2] = [-2**31, 2**31 - 1]
    i64 = rng.integers(-2**63, 2**63 - 1, n, dtype=np.int64, endpoint=True)
    i64[:2] = [-2**63, 2**63 - 1]
    small = rng.integers(0, 7, n)  # dictionary-friendly
    f32 = rng.standard_normal(n).astype(np.float32)
    f32[:len(F32_SPECIAL)] = np.array(F32_SPECIAL, dtype=np.float32)
    f64 = rng.standard_normal(n) * 1e10
    f64[:len(F64_SPECIAL)] = F64_SPECIAL
    rng.shuffle(f64)

    def rand_str(i):
        k = pyr.random()
        if k < 0.5:
            return pyr.choice(WORDS)
        if k < 0.8:
            return "".join(pyr.choice("abcdefghé字😀 ") for _ in range(pyr.randint(0, 40)))
        return f"url-{pyr.randint(0, 50)}"

    strs = [rand_str(i) for i in range(n)]
    if long_strings:
        strs[n // 3] = "L" * 120_000 + "é"
        strs[2 * n // 3] = "".join(np.array(list("xyz字"))[rng.integers(0, 4, 110_000)])
    return pa.table({
        "i32": pa.array(i32, pa.int32()),
        "i32_null": pa.array(with_nulls(i32.tolist()), pa.int32()),
        "i64": pa.array(with_nulls(i64.tolist(), 0.1), pa.int64()),
        "i64_req": pa.array(i64, pa.int64()),
        "small": pa.array(with_nulls(small.tolist()), pa.int64()),
        "u32": pa.array(rng.integers(0, 2**32, n, dtype=np.int64), pa.uint32()),
        "i16": pa.array(rng.integers(-2**15, 2**15, n), pa.int16()),
        "f32": pa.array(with_nulls(f32.tolist()), pa.float32()),
        "f32_req": pa.array(f32, pa.float32()),
        "f64": pa.array(f64, pa.float64()),
        "f64_null": pa.array(with_nulls(f64.tolist(), 0.5), pa.float64()),
        "b": pa.array(with_nulls((rng.random(n) < 0.5).tolist()), pa.bool_()),
        "b_req": pa.array((rng.random(n) < 0.3).tolist(), pa.bool_()),
        "s": pa.array(with_nulls(strs), pa.string()),
        "s_req": pa.array([pyr.choice(WORDS) for _ in range(n)], pa.string()),
        "bin": pa.array(with_nulls([bytes(rng.integers(0, 256, pyr.randint(0, 9),
                                                       dtype=np.uint8)) for _ in range(n)]),
                        pa.binary()),
        "null_i64": pa.array([None] * n, pa.int64()),
        "null_s": pa.array([None] * n, pa.string()),
        "null_f32": pa.array([None] * n, pa.float32()),
    }).cast(pa.schema([
        pa.field(name, t, nullable=not name.endswith("_req") and name not in ("i32", "f64"))
        for name, t in [
            ("i32", pa.int32()), ("i32_null", pa.int32()), ("i64", pa.int64()),
            ("i64_req", pa.int64()), ("small", pa.int64()), ("u32", pa.uint32()),
            ("i16", pa.int16()), ("f32", pa.float32()), ("f32_req", pa.float32()),
            ("f64", pa.float64()), ("f64_null", pa.float64()), ("b", pa.bool_()),
            ("b_req", pa.bool_()), ("s", pa.string()), ("s_req", pa.string()),
            ("bin", pa.binary()), ("null_i64", pa.int64()), ("null_s", pa.string()),
            ("null_f32", pa.float32())]]))


CODECS = ["none", "snappy", "gzip", "zstd"]
COMBOS = list(itertools.product(CODECS, ["1.0", "2.0"], [True, False]))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("pq")
    out = {}
    for i, (codec, pv, dic) in enumerate(COMBOS):
        t = make_table(1500, seed=i)
        p = d / f"t_{codec}_{pv}_{dic}.parquet"
        pq.write_table(t, p, compression=codec, data_page_version=pv, use_dictionary=dic,
                       row_group_size=400, data_page_size=2048, write_batch_size=100,
                       compression_level=1 if codec == "gzip" else None)
        out[(codec, pv, dic)] = str(p)
    return out


@pytest.mark.parametrize("combo", COMBOS, ids=["-".join(map(str, c)) for c in COMBOS])
def test_parity_all_columns(files, combo):
    path = files[combo]
    meta = pq.ParquetFile(path).metadata
    assert meta.num_row_groups == 4
    # many pages per chunk
    assert meta.row_group(0).column(0).total_compressed_size > 0
    rows = check_file(path)
    assert len(rows) == 1500
    # the memory path and other batch sizes give the same text
    _, rows_mem = dump(path, "--memory", "--batch", "7" if combo[2] else "100000")
    assert rows_mem == rows


@pytest.mark.parametrize("combo", [("snappy", "1.0", True), ("zstd", "2.0", False),
                                   ("gzip", "2.0", True)])
def test_columns_and_row_groups(files, combo):
    path = files[combo]
    cols = ["s", "f32", "i32", "null_s", "b"]
    check_file(path, columns=cols)
    check_file(path, columns=["s_req"])
    full = check_file(path, columns=cols, row_groups=(0, 4))
    parts = []
    for first, count in [(0, 1), (1, 2), (3, 1)]:
        parts += check_file(path, columns=cols, row_groups=(first, count))
    assert parts == full
    # an empty range reads nothing
    _, rows = dump(path, "--row-groups", "2:0")
    assert rows == []
    r = dump(path, "--row-groups", "3:2", check=False)
    assert r.returncode == 1 and "out of range" in r.stderr


def test_spark_like_plain_dictionary(tmp_path):
    t = make_table(800, seed=99, long_strings=False)
    p = tmp_path / "spark.parquet"
    pq.write_table(t, p, version="1.0", flavor="spark", use_dictionary=True,
                   data_page_version="1.0", compression="snappy", row_group_size=300,
                   data_page_size=1024, write_batch_size=50)
    encs = pq.ParquetFile(p).metadata.row_group(0).column(13).encodings
    assert "PLAIN_DICTIONARY" in encs
    check_file(str(p))


def test_pandas_file(tmp_path):
    import pandas as pd
    rng = np.random.default_rng(5)
    n = 2000
    df = pd.DataFrame({
        "URL": [f"https://ex.com/{i}.jpg" for i in range(n)],
        "TEXT": [None if i % 17 == 0 else f"caption {i} é" for i in range(n)],
        "WIDTH": rng.integers(1, 4000, n),
        "HEIGHT": rng.integers(1, 4000, n).astype(np.int32),
        "similarity": rng.random(n).astype(np.float32),
        "punsafe": np.where(rng.random(n) < 0.1, np.nan, rng.random(n)),
        "flag": rng.random(n) < 0.5,
    }, index=pd.Index(np.arange(n) * 3, name="key"))
    p = tmp_path / "pandas.parquet"
    df.to_parquet(p, engine="pyarrow", row_group_size=700)
    check_file(str(p))


def test_large_row_group_many_pages(tmp_path):
    n = 60_000
    rng = np.random.default_rng(3)
    t = pa.table({"x": pa.array(rng.integers(0, 1000, n)),
                  "y": pa.array(np.where(rng.random(n) < 0.3, None, rng.random(n)).tolist(),
                                pa.float64())})
    p = tmp_path / "big.parquet"
    pq.write_table(t, p, row_group_size=n, data_page_size=4096)
    check_file(str(p), extra=["--batch", "70000"])


# ---------------------------------------------------------------------------------
# Unsupported features: a clear error naming the column, never values.

def unsupported_cases(d):
    n = 200
    base = {"ok": pa.array(range(n), pa.int64())}
    cases = []

    def add(name, table, col, words, **kw):
        p = d / f"{name}.parquet"
        pq.write_table(table, p, **kw)
        cases.append((name, str(p), col, words))

    add("delta_binary", pa.table({**base, "d": pa.array(range(n), pa.int64())}), "d",
        ["DELTA_BINARY_PACKED"], use_dictionary=False, column_encoding={"d": "DELTA_BINARY_PACKED"})
    add("delta_length", pa.table({**base, "d": pa.array([str(i) for i in range(n)])}), "d",
        ["DELTA_LENGTH_BYTE_ARRAY"], use_dictionary=False,
        column_encoding={"d": "DELTA_LENGTH_BYTE_ARRAY"})
    add("delta_bytes", pa.table({**base, "d": pa.array([str(i) for i in range(n)])}), "d",
        ["DELTA_BYTE_ARRAY"], use_dictionary=False, column_encoding={"d": "DELTA_BYTE_ARRAY"})
    add("bss", pa.table({**base, "d": pa.array(np.arange(n, dtype=np.float32))}), "d",
        ["BYTE_STREAM_SPLIT"], use_dictionary=False, column_encoding={"d": "BYTE_STREAM_SPLIT"})
    add("list", pa.table({**base, "d": pa.array([[i, i + 1] for i in range(n)])}), "d.list.element",
        ["nested", "repeated"])
    add("struct", pa.table({**base, "d": pa.array([{"a": i} for i in range(n)])}), "d.a",
        ["nested"])
    add("int96", pa.table({**base, "d": pa.array(np.arange(n).astype("datetime64[ms]"))}), "d",
        ["INT96"], use_deprecated_int96_timestamps=True)
    add("flba", pa.table({**base, "d": pa.array([b"abcd"] * n, pa.binary(4))}), "d",
        ["FIXED_LEN_BYTE_ARRAY"])
    add("lz4", pa.table({**base, "d": pa.array(range(n))}), None, ["LZ4"], compression="lz4")
    add("uint64", pa.table({**base, "d": pa.array(range(n), pa.uint64())}), "d", ["UINT_64"])
    add("brotli", pa.table({**base, "d": pa.array(range(n))}), None, ["BROTLI"],
        compression="brotli")
    return cases


def test_unsupported_features(tmp_path):
    for name, path, col, words in unsupported_cases(tmp_path):
        r = dump(path, check=False)
        assert r.returncode == 1, (name, r.stdout[:500])
        assert len(r.stdout.split("\n")) == 2, name  # the schema line, no values
        assert any(w in r.stderr for w in words), (name, r.stderr)
        head = json.loads(r.stdout.split("\n")[0])
        bad = [c["name"] for c in head["columns"] if not c["supported"]]
        if col is not None:
            assert bad == [col], (name, head)
            assert f"'{col}'" in r.stderr, (name, r.stderr)
            # the supported column alone still reads
            _, rows = dump(path, "--columns", "ok")
            assert rows == [f"[{i}]" for i in range(200)]
        else:
            assert "'ok'" in r.stderr or "'d'" in r.stderr, r.stderr


# ---------------------------------------------------------------------------------
# Damaged files: error exit (or rarely valid output), never a crash or sanitizer report.

def run_damaged(path, data, args=()):
    with open(path, "wb") as f:
        f.write(data)
    r = run([tool("pm_parquet_dump"), path, *args], check=False, timeout=60)
    assert r.returncode in (0, 1), (r.returncode, r.stderr[-2000:])
    assert "Sanitizer" not in r.stderr and "runtime error" not in r.stderr, r.stderr[-2000:]
    if r.returncode == 1:
        assert r.stderr.startswith("pm_parquet_dump: "), r.stderr
    return r


@pytest.fixture(scope="module")
def small_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("small")
    out = []
    for i, (codec, pv, dic) in enumerate([("none", "1.0", True), ("snappy", "2.0", False),
                                          ("gzip", "1.0", False), ("zstd", "2.0", True)]):
        t = make_table(120, seed=100 + i, long_strings=False)
        p = d / f"s_{codec}.parquet"
        pq.write_table(t, p, compression=codec, data_page_version=pv, use_dictionary=dic,
                       row_group_size=50, data_page_size=256, write_batch_size=20)
        out.append(str(p))
    return out


def test_truncated_files(small_files, tmp_path):
    rng = random.Random(1)
    n_runs = 20 if SANITIZED else 50
    for path in small_files:
        data = open(path, "rb").read()
        for cut in sorted(rng.sample(range(len(data)), n_runs)) + [0, 4, 8, len(data) - 1]:
            r = run_damaged(str(tmp_path / "cut.parquet"), data[:cut])
            assert r.returncode == 1  # the footer is gone: must be an error


def test_flipped_bytes(small_files, tmp_path):
    rng = random.Random(2)
    n_runs = 24 if SANITIZED else 60
    for path in small_files:
        data = open(path, "rb").read()
        for _ in range(n_runs):
            b = bytearray(data)
            for _ in range(rng.choice([1, 1, 2, 5])):
                # bias towards the footer and page headers, where damage matters most
                pos = (len(b) - 8 - rng.randrange(min(400, len(b) - 8))
                       if rng.random() < 0.5 else rng.randrange(len(b)))
                b[pos] ^= 1 << rng.randrange(8)
            run_damaged(str(tmp_path / "flip.parquet"), bytes(b), ["--memory"])
        # and a few inside the data region read from the file
        for _ in range(n_runs // 4):
            b = bytearray(data)
            b[rng.randrange(4, len(b) - 8)] = rng.randrange(256)
            run_damaged(str(tmp_path / "flip2.parquet"), bytes(b))


def test_not_parquet(tmp_path):
    p = tmp_path / "x.parquet"
    p.write_bytes(b"hello world, not parquet at all")
    r = dump(str(p), check=False)
    assert r.returncode == 1 and "not a Parquet file" in r.stderr
    r = dump(str(tmp_path / "missing.parquet"), check=False)
    assert r.returncode == 1 and "cannot open" in r.stderr


def test_big_page_headers(tmp_path):
    # ~1-3 KB min/max statistics in every page header: the header window must grow.
    rng = random.Random(4)
    vals = [chr(65 + rng.randrange(26)) * rng.randrange(1000, 3000) for _ in range(60)]
    p = tmp_path / "stats.parquet"
    pq.write_table(pa.table({"s": vals, "i": list(range(60))}), p, compression="none",
                   use_dictionary=False, data_page_size=4000, write_batch_size=3)
    data = p.read_bytes()
    assert data.count(max(vals).encode()) >= 3  # in a page header, the data, the footer
    check_file(str(p))
    check_file(str(p), extra=["--memory"])


def test_writer_extras(tmp_path):
    """Page index, page checksums, bloom filters, dictionary arrays, temporal types,
    rows-per-page limits and content-defined chunking: all readable, same values."""
    n = 3000
    rng = np.random.default_rng(8)
    t = pa.table({
        "cat": pa.array([f"c{i % 13}" for i in range(n)]).dictionary_encode(),
        "ts": pa.array(rng.integers(0, 2**50, n), pa.int64()).cast(pa.timestamp("us")),
        "ts_ms": pa.array(rng.integers(0, 2**40, n), pa.int64()).cast(pa.timestamp("ms")),
        "date": pa.array(rng.integers(0, 30000, n).astype(np.int32)).cast(pa.date32()),
        "t32": pa.array(rng.integers(0, 86_400_000, n).astype(np.int32)).cast(
            pa.time32("ms")),
        "i8": pa.array(rng.integers(-128, 128, n), pa.int8()),
        "u16": pa.array(rng.integers(0, 65536, n), pa.uint16()),
        "s": pa.array([None if i % 5 == 0 else f"v{rng.integers(0, 10**6)}" for i in range(n)]),
    })
    for i, kw in enumerate([
        dict(write_page_index=True, write_page_checksum=True,
             bloom_filter_options={"s": {"ndv": 1000}}),
        dict(max_rows_per_page=37, compression="zstd", data_page_version="2.0"),
        dict(use_content_defined_chunking=True, compression="snappy"),
        dict(store_schema=False, use_dictionary=["s"], compression="gzip"),
        dict(sorting_columns=[pq.SortingColumn(0)], row_group_size=1000),
    ]):
        p = tmp_path / f"extra{i}.parquet"
        try:
            pq.write_table(t, p, **kw)
        except (TypeError, ValueError, NotImplementedError, pa.ArrowException) as e:
            pytest.skip(f"this pyarrow cannot write {kw}: {e}")
        check_file(str(p))


def test_empty_table_as_written_by_pyarrow(tmp_path):
    """pyarrow writes an empty table as one 0-row row group without data pages."""
    p = tmp_path / "empty.parquet"
    pq.write_table(pa.table({"a": pa.array([], pa.int64()), "s": pa.array([], pa.string())}), p)
    assert pq.ParquetFile(p).metadata.num_row_groups == 1
    r = run([tool("pm_parquet_dump"), p])
    lines = r.stdout.splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["num_rows"] == 0
