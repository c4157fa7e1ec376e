"""Text table readers (CSV, TSV, JSONL; plain, gzip, zstd) against pandas and json.

`pm_table_dump` prints what table_reader sees; we compare it with
  - pandas.read_csv(dtype=str) + the documented inference rule (types and raw values),
  - pandas.read_csv with its own type inference (numbers parsed by pandas, round_trip),
  - json.loads line by line for JSONL.
Deliberate differences from pandas' defaults (documented in tables/csv_reader.h):
only the empty field is null (pandas also treats "NA", "null", ... as NaN: we compare
with keep_default_na=False, na_values=['']); an integer column with nulls stays int64
(pandas makes it float64); a column with no values in the window is a string column.
"""
import gzip
import json
import math
import re
import struct
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import zstandard

from conftest import SANITIZED, run, tool

INT_RE = re.compile(r"[+-]?[0-9]+\Z")
FLOAT_RE = re.compile(r"[+-]?(([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?|inf|infinity|nan)\Z",
                      re.IGNORECASE)
# pandas < 3 parses floats approximately unless asked; pandas 3 deprecates the option.
PRECISE = {} if int(pd.__version__.split(".")[0]) >= 3 else {"float_precision": "round_trip"}
TRUE = {"True", "TRUE", "true"}
FALSE = {"False", "FALSE", "false"}


def dump(path, *args, check=True):
    r = run([tool("pm_table_dump"), path, *args], check=check)
    if not check:
        return r
    lines = r.stdout.splitlines()
    head = json.loads(lines[0])
    rows, batches = [], []
    for ln in lines[1:]:
        v = json.loads(ln)
        if isinstance(v, dict):
            batches.append(v["batch"])
        else:
            rows.append(v)
    return head, rows, batches


def is_int(s):
    return bool(INT_RE.match(s)) and -2**63 <= int(s) < 2**63


def infer(values):
    """The documented rule over the non-null raw strings of the inference window."""
    kinds = set()
    for s in values:
        if s is None:
            continue
        kinds.add("int" if is_int(s) else "real" if FLOAT_RE.match(s) else
                  "bool" if s in TRUE or s in FALSE else "str")
    if "str" in kinds or ("bool" in kinds and len(kinds) > 1) or not kinds:
        return "string"
    return {"bool": "bool", "real": "double", "int": "int64"}[max(
        kinds, key=["bool", "int", "real"].index)]


def convert(t, s):
    if s is None:
        return None
    return {"int64": int, "double": float, "bool": lambda x: x in TRUE,
            "string": str}[t](s)


def same(a, b):
    if isinstance(a, float) and isinstance(b, float):
        return struct.pack("<d", a) == struct.pack("<d", b) or (math.isnan(a) and math.isnan(b))
    return type(a) is type(b) and a == b


def check_rows(got, expected, where):
    assert len(got) == len(expected), where
    for i, (g, e) in enumerate(zip(got, expected)):
        for j, (x, y) in enumerate(zip(g, e)):
            if not same(x, y):
                raise AssertionError(f"{where}: row {i} col {j}: got {x!r}, expected {y!r}")


def csv_expected(path, sep, infer_rows=65536):
    raw = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, na_values=[""])
    names = list(raw.columns)
    cols = [[None if not isinstance(v, str) else v for v in raw[c]] for c in names]
    types = [infer(c[:infer_rows]) for c in cols]
    rows = [[convert(t, c[i]) for t, c in zip(types, cols)] for i in range(len(raw))]
    return names, types, rows


def check_csv(path, sep, *args):
    head, rows, _ = dump(path, *args)
    names, types, expected = csv_expected(path, sep)
    assert [c["name"] for c in head["columns"]] == names
    assert [c["type"] for c in head["columns"]] == types
    check_rows(rows, expected, path)
    # Independent check of the typed values against pandas' own parser.
    typed = pd.read_csv(path, sep=sep, keep_default_na=False, na_values=[""],
                        **PRECISE)
    for j, name in enumerate(names):
        dt = typed[name].dtype
        ours = head["columns"][j]["type"]
        if dt == np.int64:
            assert ours == "int64", name
        elif dt == np.float64:
            assert ours in ("double", "int64", "string"), name  # int+nulls, all-null
            if ours != "string":
                for r, v in zip(rows, typed[name]):
                    assert (r[j] is None and math.isnan(v)) or float(r[j]) == v or \
                        (math.isnan(v) and math.isnan(r[j])), (name, r[j], v)
        elif dt == bool:
            assert ours == "bool", name
            assert [r[j] for r in rows] == list(typed[name]), name
    return head, rows


def random_frame(seed, n):
    rng = np.random.default_rng(seed)
    alphabet = list("abc xyz,\"'\t\n;|\\") + ["é", "ß", "漢", "🙂", "\r\n", "  "]

    def text():
        k = int(rng.integers(0, 12))
        return "".join(alphabet[int(i)] for i in rng.integers(0, len(alphabet), k))

    caption = [text() for _ in range(n)]
    for i in rng.choice(n, n // 10, replace=False):
        caption[i] = None
    mags = rng.choice([1e-300, 1e-20, 1e-5, 1.0, 1e5, 1e20, 1e300], n)
    score = rng.standard_normal(n) * mags
    score[rng.choice(n, n // 8, replace=False)] = np.nan
    score[0] = 5e-324
    count = pd.array(rng.integers(-2**62, 2**62, n), dtype="Int64")
    count[rng.choice(n, n // 7, replace=False)] = pd.NA
    flag = rng.integers(0, 2, n).astype(bool)
    return pd.DataFrame({"id": np.arange(n, dtype=np.int64) * 7 - 100, "caption": caption,
                         "score": score, "count": count, "flag": flag,
                         "url": [f"https://x.example/{i}?a=1,b=2" for i in range(n)]})


def compress(path, data, how):
    if how == "gz":
        # Two concatenated members.
        half = len(data) // 2
        path.write_bytes(gzip.compress(data[:half]) + gzip.compress(data[half:]))
    elif how == "zst":
        cctx = zstandard.ZstdCompressor()
        half = len(data) // 3
        path.write_bytes(cctx.compress(data[:half]) + cctx.compress(data[half:]))
    else:
        path.write_bytes(data)


@pytest.mark.parametrize("how", ["plain", "gz", "zst"])
@pytest.mark.parametrize("fmt", ["csv", "tsv"])
def test_random_csv_tsv_match_pandas(tmp_path, fmt, how):
    df = random_frame(1234 + len(fmt) + len(how), 3000)
    sep = "," if fmt == "csv" else "\t"
    data = df.to_csv(index=False, sep=sep).encode()
    name = f"t.{fmt}" + ("" if how == "plain" else "." + how)
    path = tmp_path / name
    compress(path, data, how)
    plain = tmp_path / f"plain.{fmt}"
    plain.write_bytes(data)
    head, rows, batches = dump(str(path), "--batch", "1000")
    assert head["format"] == fmt and head["parts"] == 1
    assert [b["first_row"] for b in batches] == [0, 1000, 2000]
    names, types, expected = csv_expected(plain, sep)
    assert [c["type"] for c in head["columns"]] == types
    assert types == ["int64", "string", "double", "int64", "bool", "string"]
    check_rows(rows, expected, name)
    check_csv(str(plain), sep)
    # The original frame's values survive too (empty strings become null).
    assert [r[0] for r in rows] == list(df["id"])
    for r, c in zip(rows, df["caption"]):
        assert r[1] == (c if isinstance(c, str) and c else None)
    for r, s in zip(rows, df["score"]):
        assert (r[2] is None and math.isnan(s)) or same(r[2], float(s))


def test_column_selection_and_small_inference_window(tmp_path):
    df = random_frame(7, 500)
    path = tmp_path / "sel.csv"
    df.to_csv(path, index=False)
    head, rows, _ = dump(str(path), "--columns", "url,id", "--infer", "10")
    assert [(c["name"], c["type"]) for c in head["columns"]] == [("url", "string"),
                                                                  ("id", "int64")]
    assert [r[1] for r in rows] == list(df["id"])
    assert [r[0] for r in rows] == list(df["url"])
    r = dump(str(path), "--columns", "id,nope", check=False)
    assert r.returncode == 1
    assert "nope" in r.stderr and "'caption'" in r.stderr and "sel.csv" in r.stderr
    head, rows, batches = dump(str(path), "--parts", "0:0")
    assert rows == [] and batches == []
    head, rows, _ = dump(str(path), "--parts", "0:1")
    assert len(rows) == 500


EDGE_CSV = {
    "crlf": b"a,b\r\n1,x\r\n2,y\r\n",
    "bom": b"\xef\xbb\xbfa,b\n1,2\n3,4\n",
    "quoted_header": b'"a,1","b""2",c\n1,2,3\n',
    "no_final_newline": b"a,b\n1,x\n2,y",
    "only_quotes": b'a,b,c\n"""","""""",x\n"""","""""""",y\n',
    "quoted_newlines": b'a,b\n"line1\nline2",1\n"x\r\ny",2\n"",3\n',
    "empty_fields": b"a,b,c\n,,\n1,,x\n,2.5,\n",
    "blank_lines": b"a,b\n1,2\n\n3,4\n\n",
    "mixed_types": b"i,f,b,s\n1,1.5,True,1\n-2,3,false,x\n+3,1e-310,TRUE,\n",
    "big_ints": b"a,b\n9223372036854775807,9223372036854775808\n-9223372036854775808,1\n",
    "quote_inside": b'a,b\nx"y,1\n"a""b",2\n',
    "utf8": "a,é\nß,漢字🙂\n".encode(),
}


@pytest.mark.parametrize("case", sorted(EDGE_CSV))
def test_edge_case_csv_matches_pandas(tmp_path, case):
    path = tmp_path / f"{case}.csv"
    path.write_bytes(EDGE_CSV[case])
    check_csv(str(path), ",")


def test_tsv_quotes_like_pandas(tmp_path):
    df = pd.DataFrame({"a": ["x\ty", 'q"q', "n\nl", "plain", ""], "b": [1, 2, 3, 4, 5]})
    path = tmp_path / "q.tsv"
    df.to_csv(path, sep="\t", index=False)
    head, rows = check_csv(str(path), "\t")
    assert [r[0] for r in rows] == ["x\ty", 'q"q', "n\nl", "plain", None]


def jsonl_expected(lines, infer_rows=65536):
    objs = [json.loads(ln) for ln in lines if ln.strip()]
    keys, kinds = [], {}
    for o in objs[:infer_rows]:
        for k, v in o.items():
            if k not in kinds:
                keys.append(k)
                kinds[k] = set()
            if v is not None:
                kinds[k].add("bool" if isinstance(v, bool) else "int" if isinstance(v, int)
                             else "real" if isinstance(v, float) else "str")
    types = []
    for k in keys:
        s = kinds[k]
        if "str" in s or ("bool" in s and len(s) > 1) or not s:
            types.append("string")
        else:
            types.append({"bool": "bool", "real": "double", "int": "int64"}[max(
                s, key=["bool", "int", "real"].index)])

    def conv(t, v):
        if v is None:
            return None
        if t == "string":
            return v if isinstance(v, str) else json.dumps(v, separators=(",", ":"),
                                                           ensure_ascii=False)
        return float(v) if t == "double" else v

    rows = [[conv(t, o.get(k)) for k, t in zip(keys, types)] for o in objs]
    return keys, types, rows


@pytest.mark.parametrize("how", ["plain", "gz", "zst"])
def test_random_jsonl_matches_json(tmp_path, how):
    df = random_frame(99, 2000)
    df["nested"] = [[i, "x", {"k": "é"}] if i % 3 else None for i in range(len(df))]
    df["obj"] = [{"a": i, "b": [1, 2]} for i in range(len(df))]
    text = df.to_json(orient="records", lines=True, double_precision=15)
    data = text.encode()
    path = tmp_path / ("t.jsonl" + ("" if how == "plain" else "." + how))
    compress(path, data, how)
    head, rows, _ = dump(str(path), "--batch", "777")
    keys, types, expected = jsonl_expected(text.splitlines())
    assert [c["name"] for c in head["columns"]] == keys
    assert [c["type"] for c in head["columns"]] == types
    assert types[:5] == ["int64", "string", "double", "int64", "bool"]
    check_rows(rows, expected, str(path))


def test_jsonl_edge_cases(tmp_path):
    lines = ['\ufeff{"a": 1, "b": "x"}', "", "   ", '{"b": null, "c": [1, {"d": "\\u0000"}]}\r',
             '{"a": 2.5, "c": "s", "b": "\\ud83d\\ude42"}', '{"a": -0.0}']
    path = tmp_path / "e.json"
    path.write_bytes("\n".join(lines).encode())
    head, rows, _ = dump(str(path))
    keys, types, expected = jsonl_expected([ln.lstrip("\ufeff") for ln in lines])
    assert [c["name"] for c in head["columns"]] == keys == ["a", "b", "c"]
    assert types == ["double", "string", "string"]
    check_rows(rows, expected, "e.json")


def test_format_by_option_and_name(tmp_path):
    path = tmp_path / "data.txt"
    path.write_bytes(b"a\tb\n1\t2\n")
    head, rows, _ = dump(str(path), "--format", "tsv")
    assert head["format"] == "tsv" and rows == [[1, 2]]
    r = dump(str(path), check=False)
    assert r.returncode == 1 and "data.txt" in r.stderr
    # Compression is detected from the magic bytes whatever the name says.
    gz = tmp_path / "x.csv"
    gz.write_bytes(gzip.compress(b"a,b\n1,2\n"))
    assert dump(str(gz))[1] == [[1, 2]]


MALFORMED = [
    ("unterminated.csv", b'a,b\n1,2\n3,"abc\n4,5\n', [], "line 3"),
    ("fields.csv", b"a,b\n1,2\n3\n", [], "line 3"),
    ("fields_more.csv", b"a,b\n1,2\n3,4,5\n", [], "expected 2 fields, found 3"),
    ("after_quote.csv", b'a,b\n"x"y,1\n', [], "line 2"),
    ("empty.csv", b"", [], "empty"),
    ("type.csv", b"a,b\n1,x\n2,y\n3.5,z\n", ["--infer", "2"], "line 4 column 'a'"),
    ("type_bool.csv", b"a\ntrue\nfalse\nmaybe\n", ["--infer", "2"], '"maybe"'),
    ("long.csv", b"a\n" + b"x" * 5000 + b"\n", ["--max-record", "1000"], "longer than"),
    ("long_quoted.csv", b'a\n"' + b"x" * 5000, ["--max-record", "1000"], "longer than"),
    ("bad.jsonl", b'{"a":1}\n{"a":2,}\n', [], "line 2"),
    ("notobj.jsonl", b'{"a":1}\n[1,2]\n', [], "line 2"),
    ("jtype.jsonl", b'{"a":1}\n{"a":2}\n{"a":"x"}\n', ["--infer", "2"], "line 3 column 'a'"),
    ("newkey.jsonl", b'{"a":1}\n{"a":2}\n{"b":3}\n', ["--infer", "2"], 'key "b"'),
    ("long.jsonl", b'{"a":"' + b"x" * 5000 + b'"}\n', ["--max-record", "1000"], "longer than"),
    ("wide.csv", ",".join(f"c{i}" for i in range(16385)).encode() + b"\n", [], "16384"),
    ("wide.jsonl", json.dumps({f"k{i}": i for i in range(16385)}).encode(), [], "16384"),
    ("dup.csv", b"a,b,a\n1,2,3\n", [], 'duplicate column name "a"'),
    ("missing.csv", None, [], "No such file"),
]


@pytest.mark.parametrize("name,data,args,needle", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_inputs_fail_cleanly(tmp_path, name, data, args, needle):
    path = tmp_path / name
    if data is not None:
        path.write_bytes(data)
    r = dump(str(path), *args, check=False)
    assert r.returncode == 1, r.stderr
    assert name in r.stderr and needle in r.stderr, r.stderr


def test_new_key_ignored_when_columns_selected(tmp_path):
    path = tmp_path / "k.jsonl"
    path.write_bytes(b'{"a":1}\n{"a":2}\n{"b":3,"a":4}\n')
    head, rows, _ = dump(str(path), "--infer", "2", "--columns", "a")
    assert rows == [[1], [2], [4]]


@pytest.mark.parametrize("how", ["gz", "zst"])
def test_truncated_and_corrupt_streams(tmp_path, how):
    data = random_frame(3, 2000).to_csv(index=False).encode()
    comp = gzip.compress(data) if how == "gz" else zstandard.ZstdCompressor().compress(data)
    for label, blob in [("cut", comp[: len(comp) // 2]), ("cut_end", comp[:-3]),
                        ("flip", comp[:40] + bytes([comp[40] ^ 0xFF]) + comp[41:])]:
        path = tmp_path / f"{label}.csv.{how}"
        path.write_bytes(blob)
        r = dump(str(path), check=False)
        assert r.returncode == 1, (label, r.stderr)
        assert path.name in r.stderr, r.stderr


def test_random_garbage_never_crashes(tmp_path):
    rng = np.random.default_rng(5)
    seeds = [b'a,b\n"x', b'{"a":', b'\x1f\x8b', b'(\xb5/\xfd', b"a\tb\n"]
    for i in range(20 if SANITIZED else 60):
        blob = seeds[i % len(seeds)] + rng.integers(0, 256, int(rng.integers(0, 300)),
                                                    dtype=np.uint8).tobytes()
        for ext in ("csv", "jsonl", "tsv"):
            path = tmp_path / f"g{i}.{ext}"
            path.write_bytes(blob)
            r = subprocess.run([tool("pm_table_dump"), str(path)], capture_output=True)
            assert r.returncode in (0, 1), (path, r.returncode, r.stderr[-2000:])


def test_streaming_memory_is_bounded(tmp_path):
    block = "".join(f'{i},"caption {i} with, some text",{i * 0.25}\n' for i in range(10000))
    path = tmp_path / "big.csv"
    blocks = 40 if SANITIZED else 200  # 2M rows (400k under the slow sanitizer build)
    with open(path, "w") as f:
        f.write("id,caption,score\n")
        for _ in range(blocks):
            f.write(block)
    size = path.stat().st_size
    probe = ("import resource,subprocess,sys;"
             "r=subprocess.run(sys.argv[1:],capture_output=True,text=True);"
             "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss);"
             "print(r.stdout.splitlines()[-1] if r.stdout else r.stderr)")
    r = run([sys.executable, "-c", probe, tool("pm_table_dump"), str(path), "--count"])
    status, rss_kib = map(int, r.stdout.split()[:2])
    assert status == 0, r.stdout
    assert json.loads(r.stdout.splitlines()[1]) == {"rows": 10000 * blocks}
    if not SANITIZED:  # ASan's shadow memory and quarantine make RSS meaningless
        assert rss_kib * 1024 < 0.4 * size, (rss_kib, size)
