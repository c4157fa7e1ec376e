"""pixelmill sheet: the chosen samples (sorted or seeded random, through a view) against
a pyarrow reference; the same page for -np 1 and -np 3; images are the tar's bytes."""
import base64
import io
import re
import tarfile

import numpy as np
import pyarrow as pa
import pytest

from conftest import mpirun, run
from tuning_fixture import make_dataset
from tuning_ref import clause, passes, success


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    d = tmp_path_factory.mktemp("sh") / "data"
    table = make_dataset(str(d), nshards=3, rows=120, seed=5)
    return str(d), table


def keys_in(html):
    return re.findall(r'<img alt="(\d+)"', html)


def test_sorted_through_view(ds, pixelmill, tmp_path):
    d, table = ds
    run([pixelmill, "filter", d, "--where", "punsafe < 0.3", "--view", "safe"])
    out = tmp_path / "s.html"
    run([pixelmill, "sheet", f"{d}:safe", "--where", "min(WIDTH,HEIGHT) >= 200",
         "--sort", "-AESTHETIC_SCORE", "--n", "10", "-o", str(out)])
    m = success(table).to_numpy(zero_copy_only=False)
    for operand, op, v in [("punsafe", "<", 0.3), (("min", "WIDTH", "HEIGHT"), ">=", 200)]:
        m &= passes(clause(table, operand, op, v)).to_numpy(zero_copy_only=False)
    a = table["AESTHETIC_SCORE"].cast(pa.float64()).to_numpy(zero_copy_only=False)
    m &= ~np.isnan(a)
    idx = np.flatnonzero(m)
    order = idx[np.lexsort((idx, -a[idx]))][:10]
    keys = np.array(table["key"].to_pylist())
    html = out.read_text()
    assert keys_in(html) == list(keys[order])
    # the first image is the tar's JPEG byte for byte, with its caption
    first = keys[order[0]]
    shard = first[:5]
    with tarfile.open(f"{d}/{shard}.tar") as t:
        jpg = t.extractfile(f"{first}.jpg").read()
        txt = t.extractfile(f"{first}.txt").read().decode()
    b64 = re.search(r'<img alt="%s" src="data:image/jpeg;base64,([^"]+)"' % first, html).group(1)
    assert base64.b64decode(b64) == jpg
    assert txt in html


def test_random_same_for_any_rank_count(ds, pixelmill, tmp_path):
    d, _ = ds
    o1, o3, o4 = tmp_path / "1.html", tmp_path / "3.html", tmp_path / "4.html"
    run([pixelmill, "sheet", d, "--n", "9", "--seed", "4", "-o", str(o1)])
    mpirun(3, [pixelmill, "sheet", d, "--n", "9", "--seed", "4", "-o", str(o3)])
    run([pixelmill, "sheet", d, "--n", "9", "--seed", "5", "-o", str(o4)])
    assert o1.read_bytes() == o3.read_bytes()
    assert len(keys_in(o1.read_text())) == 9
    assert keys_in(o1.read_text()) != keys_in(o4.read_text())


def test_sheet_usage(ds, pixelmill, tmp_path):
    d, _ = ds
    assert run([pixelmill, "sheet", d], check=False).returncode == 2
    assert run([pixelmill, "sheet", d, "-o", str(tmp_path / "x.gif")],
               check=False).returncode == 2
    r = run([pixelmill, "sheet", d, "--sort", "caption", "-o", str(tmp_path / "x.html")],
            check=False)
    assert r.returncode == 2 and "not numeric" in r.stderr


@pytest.mark.parametrize("ext", ["png", "jpg"])
def test_grid_image(ds, pixelmill, tmp_path, ext):
    """The grid holds the same samples as the HTML sheet, in order: each 128x128 cell's
    mean colour matches the sample's JPEG decoded by PIL."""
    from PIL import Image
    d, _ = ds
    html, grid = tmp_path / "g.html", tmp_path / f"g.{ext}"
    args = ["--sort", "punsafe", "--n", "7"]
    run([pixelmill, "sheet", d, *args, "-o", str(html)])
    run([pixelmill, "sheet", d, *args, "-o", str(grid)])
    keys = keys_in(html.read_text())
    img = Image.open(grid)
    assert img.format == ("PNG" if ext == "png" else "JPEG")
    assert img.size == (4 + 3 * 132, 4 + 3 * 132)  # 7 -> 3 columns, 3 rows
    a = np.asarray(img.convert("RGB"), dtype=np.float64)
    for i, key in enumerate(keys):
        with tarfile.open(f"{d}/{key[:5]}.tar") as t:
            ref = np.asarray(Image.open(io.BytesIO(t.extractfile(f"{key}.jpg").read()))
                             .convert("RGB"), dtype=np.float64)
        x, y = 4 + (i % 3) * 132, 4 + (i // 3) * 132
        cell = a[y:y + 128, x:x + 128]
        assert np.abs(cell.mean(axis=(0, 1)) - ref.mean(axis=(0, 1))).max() < 6, key
    assert a[4 + 2 * 132 + 10, 4 + 1 * 132 + 10].tolist() == [255, 255, 255] or ext == "jpg"
