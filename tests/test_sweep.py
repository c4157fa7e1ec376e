"""pixelmill sweep: per-threshold counts and histogram against pyarrow.compute; -np 1 and
mpirun -np 3 identical; the HTML report renders in headless Chromium with its charts and
the expected number of thumbnails, and the screenshot is not blank."""
import io
import json
import os
import re
import shutil
import subprocess

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from conftest import mpirun, run
from tuning_fixture import make_dataset
from tuning_ref import clause, passes, success

FIXED = [("AESTHETIC_SCORE >= 4.5", "AESTHETIC_SCORE", ">=", 4.5),
         ("min(WIDTH,HEIGHT) >= 256", ("min", "WIDTH", "HEIGHT"), ">=", 256)]
THRESHOLDS = [0.02, 0.1, 0.05, 0.2, 0.5, 0.9, 0.1000000015]


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    d = tmp_path_factory.mktemp("sw") / "data"
    table = make_dataset(str(d), nshards=3, rows=300, seed=11)
    return str(d), table


def sweep_args(col="punsafe", op="<", ths=THRESHOLDS, fixed=FIXED):
    a = ["--column", col, "--thresholds", ",".join(repr(t) for t in ths), "--op", op]
    for f in fixed:
        a += ["--where", f[0]]
    return a


def fixed_mask(table, dataset=True, fixed=FIXED):
    m = np.ones(table.num_rows, bool)
    if dataset:
        m &= success(table).to_numpy(zero_copy_only=False)
    for _, operand, op, value in fixed:
        m &= passes(clause(table, operand, op, value)).to_numpy(zero_copy_only=False)
    return m


def check_counts(got, table, col, op, ths, dataset=True, fixed=FIXED):
    base = fixed_mask(table, dataset, fixed)
    rows = int(success(table).to_numpy(zero_copy_only=False).sum()) if dataset else table.num_rows
    assert got["rows"] == rows and got["base"] == int(base.sum())
    for t, g in zip(ths, got["thresholds"]):
        m = base & passes(clause(table, col, op, t)).to_numpy(zero_copy_only=False)
        assert g["kept"] == int(m.sum()), (op, t)
        assert g["fraction"] == pytest.approx(m.sum() / rows, rel=1e-12)
    x = table[col].cast(pa.float64()).to_numpy(zero_copy_only=False)
    valid = base & ~np.isnan(x)
    h = got["histogram"]
    assert h["lo"] == x[valid].min() and h["hi"] == x[valid].max()
    ref, _ = np.histogram(x[valid], bins=len(h["counts"]), range=(h["lo"], h["hi"]))
    assert sum(h["counts"]) == valid.sum()
    # bin edges may differ from numpy's by one ulp; totals per bin within one value
    assert np.abs(np.array(h["counts"]) - ref).max() <= 1


@pytest.mark.parametrize("op", ["<", "<=", ">", ">="])
def test_counts_match_pyarrow(ds, pixelmill, op):
    d, table = ds
    r = run([pixelmill, "sweep", d, *sweep_args(op=op), "--json"])
    check_counts(json.loads(r.stdout), table, "punsafe", op, THRESHOLDS)


@pytest.mark.parametrize("op", ["<", "<=", ">", ">="])
def test_many_thresholds(ds, pixelmill, op):
    """Above 16 thresholds the counting switches to bucketing by binary search."""
    d, table = ds
    ths = sorted(set(np.round(np.linspace(0, 1, 37), 3).tolist())) + [0.1, 0.5,
                                                                       0.10000000149011612]
    r = run([pixelmill, "sweep", d, *sweep_args(op=op, ths=ths), "--json"])
    check_counts(json.loads(r.stdout), table, "punsafe", op, ths)


def test_double_and_int_columns_and_inputs(ds, pixelmill, tmp_path):
    d, table = ds
    r = run([pixelmill, "sweep", d, "--column", "similarity", "--thresholds", "0.3,0.32,0.35",
             "--json"])
    check_counts(json.loads(r.stdout), table, "similarity", "<", [0.3, 0.32, 0.35], fixed=[])
    src = tmp_path / "meta.parquet"
    pq.write_table(table, src, row_group_size=128)
    args = ["--column", "WIDTH", "--thresholds", "256,512,1024", "--op", ">=",
            "--where", "punsafe < 0.5", "--json"]
    fixed = [("punsafe < 0.5", "punsafe", "<", 0.5)]
    r1 = run([pixelmill, "sweep", str(src), *args])
    check_counts(json.loads(r1.stdout), table, "WIDTH", ">=", [256, 512, 1024], False, fixed)
    r3 = mpirun(3, [pixelmill, "sweep", str(src), *args])
    assert r1.stdout == r3.stdout


def expected_thumbs(table, col, ths, per_side):
    base = fixed_mask(table)
    x = table[col].cast(pa.float64()).to_numpy(zero_copy_only=False)
    v = base & ~np.isnan(x)
    return sum(min(per_side, int((v & (x < t)).sum())) + min(per_side, int((v & (x >= t)).sum()))
               for t in ths)


def test_np3_identical_and_html(ds, pixelmill, tmp_path):
    d, table = ds
    h1, h3 = tmp_path / "r1.html", tmp_path / "r3.html"
    r1 = run([pixelmill, "sweep", d, *sweep_args(), "--html", str(h1), "--per-side", "5"])
    r3 = mpirun(3, [pixelmill, "sweep", d, *sweep_args(), "--html", str(h3), "--per-side", "5"])
    assert r1.stdout == r3.stdout
    assert h1.read_bytes() == h3.read_bytes()
    html = h1.read_text()
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in html and "<script" not in html
    n = expected_thumbs(table, "punsafe", sorted(set(THRESHOLDS)), 5)
    assert html.count("<img") == n
    # the thumbnails shown just below 0.1 are the largest values below 0.1, in order
    base = fixed_mask(table)
    x = table["punsafe"].cast(pa.float64()).to_numpy(zero_copy_only=False)
    keys = np.array(table["key"].to_pylist())
    sel = base & ~np.isnan(x) & (x < 0.1)
    order = np.lexsort((np.arange(len(x))[sel], -x[sel]))[:5]
    section = html.split("punsafe = 0.1</h3>")[1].split("just above")[0]
    assert re.findall(r'alt="(\d+)"', section) == list(keys[sel][order])


def chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(not chromium(), reason="chromium not installed (scripts/install-deps.sh)")
def test_report_renders_in_chromium(ds, pixelmill, tmp_path):
    from PIL import Image
    d, table = ds
    page = tmp_path / "report.html"
    run([pixelmill, "sweep", d, *sweep_args(ths=[0.05, 0.2]), "--html", str(page),
         "--per-side", "4"])
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([chromium(), *flags, "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=60).stdout
    assert dom.count("<svg") == 2
    assert len(re.findall(r"<rect ", dom)) == 40
    assert dom.count("<circle") == 2
    assert dom.count("<img") == expected_thumbs(table, "punsafe", [0.05, 0.2], 4)
    shot = tmp_path / "shot.png"
    subprocess.run([chromium(), *flags, "--window-size=1000,1400", f"--screenshot={shot}",
                    page.as_uri()], capture_output=True, timeout=60)
    img = np.asarray(Image.open(shot).convert("RGB"), dtype=np.float64)
    assert img.shape[0] == 1400 and img.shape[1] == 1000
    assert img.std() > 20  # not blank
    # the chart area holds the bar colour (#4a7ab5) and the images are painted
    bar = (np.abs(img - [0x4a, 0x7a, 0xb5]).sum(axis=2) < 30).sum()
    assert bar > 500


def test_usage(ds, pixelmill):
    d, _ = ds
    assert run([pixelmill, "sweep", d, "--column", "punsafe"], check=False).returncode == 2
    r = run([pixelmill, "sweep", d, "--column", "caption", "--thresholds", "1"], check=False)
    assert r.returncode == 2 and "not a number" in r.stderr
    r = run([pixelmill, "sweep", d, "--column", "punsafe", "--thresholds", "0.1,x"],
            check=False)
    assert r.returncode == 2
