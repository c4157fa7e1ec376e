"""parquet_writer parity: files written by tests/tools/pm_parquet_write_sample must read
back in pyarrow and pandas with exactly the values the tool generated (bit-exact floats,
NaN positions, nulls), with the right schema, row groups and column-chunk statistics.
Expected statistics are computed here in Python from the generated values."""
import json
import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import run, tool

# The sample tool's columns: name -> (arrow type, kind)
COLUMNS = {
    "b": (pa.bool_(), "bool"),
    "i32": (pa.int32(), "int"),
    "i64": (pa.int64(), "int"),
    "f32": (pa.float32(), "f32"),
    "f64": (pa.float64(), "f64"),
    "s": (pa.string(), "str"),
    "cat": (pa.string(), "str"),
    "u": (pa.string(), "str"),
    "zeros": (pa.float64(), "f64"),
    "allnan": (pa.float32(), "f32"),
}
PHYSICAL = {"bool": "BOOLEAN", "int": None, "f32": "FLOAT", "f64": "DOUBLE", "str": "BYTE_ARRAY"}
CODEC_NAME = {"none": "UNCOMPRESSED", "snappy": "SNAPPY", "gzip": "GZIP", "zstd": "ZSTD"}
ROWS = 7000
RG_ROWS = 2800  # 2800 distinct 400-byte "u" values overflow the 1 MiB dictionary


def write_sample(tmp_path, codec, rows, seed, nullable, rg_rows=None, batch_rows=None,
                 columns=None):
    out = tmp_path / f"sample_{codec}_{nullable}_{rows}_{rg_rows}.parquet"
    args = [tool("pm_parquet_write_sample"), out, "--codec", codec, "--rows", rows,
            "--seed", seed, "--nullable", int(nullable)]
    if rg_rows:
        args += ["--row-group-rows", rg_rows]
    if batch_rows:
        args += ["--batch-rows", batch_rows]
    if columns:
        args += ["--columns", ",".join(columns)]
    run(args)
    expected_path = out.with_name(out.name[: -len(".parquet")] + ".expected.jsonl")
    with open(expected_path) as f:
        rows_ = [json.loads(line) for line in f]
    names = columns or list(COLUMNS)
    expected = {n: decode_column(COLUMNS[n][1], [r[n] for r in rows_]) for n in names}
    return out, expected


def decode_column(kind, raw):
    """Expected values as Python objects (None for null). Floats stay bit patterns."""
    if kind == "f32":
        return [None if v is None else int(v, 16) for v in raw]
    if kind == "f64":
        return [None if v is None else int(v, 16) for v in raw]
    if kind == "str":
        return [None if v is None else bytes.fromhex(v) for v in raw]
    return raw


def float_bits(kind, arr):
    """Raw IEEE bits of a primitive arrow float array, straight from its data buffer."""
    dtype, udtype = (np.float32, np.uint32) if kind == "f32" else (np.float64, np.uint64)
    data = np.frombuffer(arr.buffers()[1], dtype=dtype, count=len(arr) + arr.offset)
    return data[arr.offset:].view(udtype)


def check_arrow_column(kind, arr, exp):
    arr = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
    assert len(arr) == len(exp)
    valid = np.array([v is not None for v in exp], dtype=bool)
    assert np.array_equal(arr.is_valid().to_numpy(zero_copy_only=False), valid)
    if kind in ("f32", "f64"):
        bits = float_bits(kind, arr)
        want = np.array([v or 0 for v in exp], dtype=np.uint32 if kind == "f32" else np.uint64)
        bad = np.nonzero(valid & (bits != want))[0]
        assert bad.size == 0, f"row {bad[0]}: {bits[bad[0]]:x} != {want[bad[0]]:x}"
    elif kind == "str":
        assert arr.cast(pa.binary()).to_pylist() == exp
    else:
        assert arr.to_pylist() == exp


def expected_stats(kind, values):
    """(null_count, min, max) as the Parquet spec defines them: NaN ignored, a zero min
    is -0.0 and a zero max +0.0, strings by unsigned bytes; min/max None if absent."""
    present = [v for v in values if v is not None]
    nulls = len(values) - len(present)
    if kind in ("f32", "f64"):
        utype, ftype = (np.uint32, np.float32) if kind == "f32" else (np.uint64, np.float64)
        floats = np.array(present, dtype=utype).view(ftype)
        floats = floats[~np.isnan(floats)]
        if not floats.size:
            return nulls, None, None
        lo, hi = float(floats.min()), float(floats.max())
        return nulls, -0.0 if lo == 0 else lo, 0.0 if hi == 0 else hi
    if not present:
        return nulls, None, None
    lo, hi = min(present), max(present)
    return nulls, lo, hi


def check_stats(kind, st, values):
    nulls, lo, hi = expected_stats(kind, values)
    assert st.null_count == nulls
    if lo is None:
        assert not st.has_min_max
        return
    assert st.has_min_max
    got_lo, got_hi = st.min, st.max
    if kind == "str":
        got_lo, got_hi = got_lo.encode(), got_hi.encode()
    assert got_lo == lo and got_hi == hi, (got_lo, got_hi, lo, hi)
    if kind in ("f32", "f64"):
        assert math.copysign(1, got_lo) == math.copysign(1, lo)
        assert math.copysign(1, got_hi) == math.copysign(1, hi)
    if kind in ("bool", "int"):
        assert type(got_lo) is type(lo)


class CompactReader:
    """Just enough of the Thrift compact protocol to read Parquet page headers."""

    def __init__(self, data, pos):
        self.data, self.pos = data, pos

    def byte(self):
        self.pos += 1
        return self.data[self.pos - 1]

    def varint(self):
        shift = result = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return result

    def zigzag(self):
        v = self.varint()
        return (v >> 1) ^ -(v & 1)

    def value(self, t):
        if t in (1, 2):
            return t == 1
        if t == 3:
            return self.byte()
        if t in (4, 5, 6):
            return self.zigzag()
        if t == 7:
            self.pos += 8
            return None
        if t == 8:
            n = self.varint()
            self.pos += n
            return self.data[self.pos - n:self.pos]
        if t in (9, 10):
            b = self.byte()
            n, et = b >> 4, b & 15
            if n == 15:
                n = self.varint()
            return [self.value(et) for _ in range(n)]
        if t == 12:
            return self.struct()
        raise AssertionError(f"unexpected thrift type {t}")

    def struct(self):
        fields, last = {}, 0
        while True:
            b = self.byte()
            if b == 0:
                return fields
            delta, t = b >> 4, b & 15
            last = last + delta if delta else self.zigzag()
            fields[last] = self.value(t)


PAGE_DATA, PAGE_DICT = 0, 2
ENC_PLAIN, ENC_RLE_DICT = 0, 8


def read_pages(data, cc):
    """(page type, encoding, num_values, uncompressed size) of each page of a chunk."""
    start = cc.dictionary_page_offset if cc.has_dictionary_page else cc.data_page_offset
    assert start == cc.file_offset
    r, end, pages = CompactReader(data, start), start + cc.total_compressed_size, []
    while r.pos < end:
        h = r.struct()
        sub = h[7] if h[1] == PAGE_DICT else h[5]
        pages.append((h[1], sub[2], sub[1], h[2]))
        r.pos += h[3]
    assert r.pos == end
    return pages


def check_pages(path, md, names, expected):
    """Page layout: dictionary page first; STRING chunks RLE_DICTIONARY, then PLAIN once
    the dictionary passes 1 MiB; ~1 MiB pages of at most 131072 values."""
    data = path.read_bytes()
    start = 0
    for g in range(md.num_row_groups):
        rg = md.row_group(g)
        for i, n in enumerate(names):
            kind, cc = COLUMNS[n][1], rg.column(i)
            pages = read_pages(data, cc)
            types = [p[0] for p in pages]
            assert PAGE_DICT not in types[1:]
            data_pages = [p for p in pages if p[0] == PAGE_DATA]
            assert sum(p[2] for p in data_pages) == rg.num_rows
            for p in data_pages:
                assert p[2] <= 131072
                assert p[3] <= (1 << 20) + 130_000 + 4 * 131072  # values + one long string
            encs = [p[1] for p in data_pages]
            if kind != "str":
                assert PAGE_DICT not in types and set(encs) == {ENC_PLAIN}
                continue
            values = expected[n][start:start + rg.num_rows]
            distinct = {v for v in values if v is not None}
            dict_bytes = sum(4 + len(v) for v in distinct)
            if types[0] == PAGE_DICT:
                assert pages[0][1] == ENC_PLAIN and pages[0][2] <= len(distinct)
                assert pages[0][3] <= 1 << 20
                # dictionary-encoded pages first, then PLAIN ones after a fallback
                k = encs.count(ENC_RLE_DICT)
                assert k > 0 and encs[:k] == [ENC_RLE_DICT] * k
                assert set(encs[k:]) <= {ENC_PLAIN}
                if dict_bytes <= 1 << 20:
                    assert pages[0][2] == len(distinct) and k == len(encs)
                else:
                    assert pages[0][2] < len(distinct) and k < len(encs)
            else:  # no dictionary: only when no value fit (or there are none)
                assert set(encs) == {ENC_PLAIN}
                assert not distinct or dict_bytes > 1 << 20
        start += rg.num_rows


def check_file(path, expected, nullable, codec, rg_rows):
    nrows = len(next(iter(expected.values())))
    names = list(expected)

    # schema, as pyarrow sees it
    pf = pq.ParquetFile(path)
    md = pf.metadata
    assert md.created_by.startswith("pixelmill ")
    assert md.num_columns == len(names)
    arrow_schema = pf.schema_arrow
    assert arrow_schema.names == names
    for i, n in enumerate(names):
        typ, kind = COLUMNS[n]
        field = arrow_schema.field(n)
        assert field.type == typ and field.nullable == bool(nullable), field
        col = pf.schema.column(i)
        assert col.max_definition_level == (1 if nullable else 0)
        assert col.max_repetition_level == 0
        if kind == "str":
            assert col.physical_type == "BYTE_ARRAY"
            assert col.logical_type.type == "STRING"
            assert col.converted_type == "UTF8"
        else:
            assert col.physical_type == (PHYSICAL[kind] or str(typ).upper())
            assert col.logical_type.type == "NONE"

    # row groups and per-chunk statistics
    sizes = [min(rg_rows, nrows - s) for s in range(0, nrows, rg_rows)]
    assert md.num_rows == nrows
    assert [md.row_group(g).num_rows for g in range(md.num_row_groups)] == sizes
    start = 0
    for g, size in enumerate(sizes):
        rg = md.row_group(g)
        for i, n in enumerate(names):
            kind = COLUMNS[n][1]
            cc = rg.column(i)
            assert cc.path_in_schema == n
            assert cc.num_values == size
            assert cc.compression == CODEC_NAME[codec]
            assert cc.is_stats_set
            check_stats(kind, cc.statistics, expected[n][start:start + size])
            if n == "cat":  # 12 distinct values: dictionary-encoded
                assert cc.has_dictionary_page
                assert "RLE_DICTIONARY" in cc.encodings
        start += size
    check_pages(path, md, names, expected)

    # values through pyarrow
    table = pq.read_table(path)
    assert table.num_rows == nrows
    assert table.schema.names == names
    for n in names:
        check_arrow_column(COLUMNS[n][1], table.column(n), expected[n])
    # and per row group
    start = 0
    for g, size in enumerate(sizes):
        part = pf.read_row_group(g)
        for n in names:
            check_arrow_column(COLUMNS[n][1], part.column(n), expected[n][start:start + size])
        start += size

    # values through pandas: the default numpy dtypes, and masked (nullable) dtypes for
    # bools and ints with nulls, which numpy dtypes cannot hold exactly
    df = pd.read_parquet(path)
    masked = pd.read_parquet(path, dtype_backend="numpy_nullable") if nullable else df
    assert list(df.columns) == names and len(df) == nrows
    for n in names:
        kind = COLUMNS[n][1]
        series = df[n] if kind in ("f32", "f64", "str") else masked[n]
        check_pandas_column(kind, series, expected[n], nullable)


def check_pandas_column(kind, series, exp, nullable):
    valid = np.array([v is not None for v in exp], dtype=bool)
    if kind == "str":
        assert np.array_equal(~series.isna().to_numpy(), valid)
        got = [None if not ok else v.encode() for ok, v in zip(valid, series.tolist())]
        assert got == exp
        return
    if kind in ("f32", "f64"):  # numpy floats: nulls become NaN, values stay bit-exact
        utype = np.uint32 if kind == "f32" else np.uint64
        data = series.to_numpy()
        assert data.dtype == (np.float32 if kind == "f32" else np.float64)
        assert np.isnan(data[~valid]).all()
        bits = data.view(utype)
        want = np.array([v or 0 for v in exp], dtype=utype)
        assert np.array_equal(bits[valid], want[valid])
        return
    if nullable:  # masked arrays: data + mask
        data = series.array._data
        assert np.array_equal(~series.array._mask, valid)
    else:
        data = series.to_numpy()
        assert valid.all()
    if kind == "bool":
        assert data.dtype == np.bool_
        assert data[valid].tolist() == [v for v in exp if v is not None]
    else:
        assert data.dtype in (np.int32, np.int64)
        assert data[valid].tolist() == [v for v in exp if v is not None]


@pytest.mark.parametrize("codec", ["none", "snappy", "gzip", "zstd"])
@pytest.mark.parametrize("nullable", [False, True], ids=["required", "optional"])
@pytest.mark.parametrize("rg_rows", [None, RG_ROWS], ids=["one_group", "row_groups"])
def test_roundtrip(tmp_path, codec, nullable, rg_rows):
    seed = 11 + len(codec) + 2 * nullable + (rg_rows or 0)
    path, expected = write_sample(tmp_path, codec, ROWS, seed, nullable, rg_rows)
    check_file(path, expected, nullable, codec, rg_rows or 1 << 20)


@pytest.mark.parametrize("nullable", [False, True], ids=["required", "optional"])
def test_small_batches_across_row_groups(tmp_path, nullable):
    # batches of 3 rows into row groups of 7: batches split across group boundaries
    path, expected = write_sample(tmp_path, "snappy", 50, 5, nullable, rg_rows=7, batch_rows=3)
    check_file(path, expected, nullable, "snappy", 7)


def test_many_pages(tmp_path):
    # more values than one page holds (131072) for every narrow column type
    cols = ["b", "i32", "i64", "f32", "f64", "cat", "zeros"]
    path, expected = write_sample(tmp_path, "zstd", 140_000, 9, True, batch_rows=50_000,
                                  columns=cols)
    check_file(path, expected, True, "zstd", 1 << 20)


@pytest.mark.parametrize("nullable", [False, True], ids=["required", "optional"])
def test_empty_table(tmp_path, nullable):
    path, expected = write_sample(tmp_path, "zstd", 0, 1, nullable)
    assert all(v == [] for v in expected.values())
    md = pq.ParquetFile(path).metadata
    assert md.num_rows == 0 and md.num_row_groups == 0
    check_file(path, expected, nullable, "zstd", 1 << 20)
    table = pq.read_table(path)
    assert table.num_rows == 0
    assert [f.type for f in table.schema] == [COLUMNS[n][0] for n in COLUMNS]
    assert len(pd.read_parquet(path)) == 0


def test_bad_codec_is_usage_error(tmp_path):
    r = run([tool("pm_parquet_write_sample"), tmp_path / "x.parquet", "--codec", "lz4",
             "--rows", "1", "--seed", "1"], check=False)
    assert r.returncode == 2


def test_output_is_deterministic(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a, _ = write_sample(tmp_path / "a", "gzip", 3000, 4, True, rg_rows=1000)
    b, _ = write_sample(tmp_path / "b", "gzip", 3000, 4, True, rg_rows=1000)
    assert a.read_bytes() == b.read_bytes()
