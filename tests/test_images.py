"""Parity tests for images/ through tests/tools/pm_image_tool.

References: Pillow (decoding, EXIF transpose, alpha), OpenCV (INTER_AREA / LANCZOS4
resizes), Python imagehash (phash), and img2dataset's resize geometry re-implemented
below from its resizer.py + albumentations (smallest_max_size / longest_max_size use
Python's round(), center_crop and pad use floor division).

The corpus is made from scikit-image's bundled photographs.
"""
import functools
import io
import json
import statistics
from pathlib import Path

import numpy as np
import pytest

from conftest import SANITIZED, run, tool

PIL = pytest.importorskip("PIL")
cv2 = pytest.importorskip("cv2")
imagehash = pytest.importorskip("imagehash")
skdata = pytest.importorskip("skimage.data")
from PIL import Image, ImageOps  # noqa: E402

MODES = ["no", "keep_ratio", "keep_ratio_largest", "center_crop", "border", "fixed"]


# --------------------------------------------------------------------------------------
# helpers

@functools.lru_cache(maxsize=None)
def photos():
    """name -> RGB uint8 array (real photographs)."""
    return {
        "astronaut": skdata.astronaut(),
        "chelsea": skdata.chelsea(),
        "coffee": skdata.coffee(),
        "rocket": skdata.rocket(),
        "hubble": skdata.hubble_deep_field()[:800],  # 1000 x 800
    }


def rgba_photo():
    """chelsea with a radial alpha: opaque centre, fully transparent corners."""
    rgb = skdata.chelsea()
    h, w = rgb.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    r = np.hypot((xx - w / 2) / (w / 2), (yy - h / 2) / (h / 2))
    alpha = np.clip((1.2 - r) * 400, 0, 255).astype(np.uint8)
    return np.dstack([rgb, alpha])


def write_ppm(path, arr):
    h, w = arr.shape[:2]
    Path(path).write_bytes(b"P6\n%d %d\n255\n" % (w, h) + np.ascontiguousarray(arr).tobytes())


def read_ppm(path):
    b = Path(path).read_bytes()
    magic, w, h, maxval = b.split(maxsplit=4)[:4]  # our writer: "P6\nW H\n255\n"
    assert magic == b"P6" and maxval == b"255"
    w, h = int(w), int(h)
    off = len(b) - w * h * 3
    return np.frombuffer(b[off:], dtype=np.uint8).reshape(h, w, 3)


def psnr(a, b):
    assert a.shape == b.shape, (a.shape, b.shape)
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def save(img, path, **kw):
    img.save(path, **kw)
    return path


def tool_json(*args):
    return json.loads(run([tool("pm_image_tool"), *args]).stdout)


def decode(path, *extra):
    out = Path(str(path) + ".out.ppm")
    run([tool("pm_image_tool"), "decode", path, out, *extra])
    return read_ppm(out)


def composite_white(rgba):
    """img2dataset's alpha matting: rint(a/255 * c + 255 - a)."""
    a = rgba[..., 3:4].astype(np.float64)
    out = a / 255 * rgba[..., :3] + 255 - a
    return np.rint(out.clip(0, 255)).astype(np.uint8)


def rnd(x):
    """Python's round (half to even), as albumentations uses; a side that rounds to 0
    makes img2dataset fail (cv2.resize error) where we keep 1 pixel (documented)."""
    return max(1, round(x))


def ref_geometry(w, h, mode, size, only_bigger):
    """img2dataset Resizer geometry: (scaled w, h), (out w, h), (pad left, top)."""
    if mode == "no":
        return (w, h), (w, h), (0, 0)
    if mode in ("keep_ratio", "center_crop"):
        downscale = min(w, h) > size
        if only_bigger and not downscale:
            return (w, h), (w, h), (0, 0)
        scale = size / float(min(w, h))
        sw, sh = (rnd(w * scale), rnd(h * scale)) if scale != 1.0 else (w, h)
        if mode == "center_crop":
            return (sw, sh), (size, size), (0, 0)
        return (sw, sh), (sw, sh), (0, 0)
    downscale = max(w, h) > size
    if only_bigger and not downscale:
        return (w, h), (w, h), (0, 0)
    if mode == "fixed":
        return (size, size), (size, size), (0, 0)
    scale = size / float(max(w, h))
    sw, sh = (rnd(w * scale), rnd(h * scale)) if scale != 1.0 else (w, h)
    if mode == "border":
        left = int((size - sw) / 2.0) if sw < size else 0
        top = int((size - sh) / 2.0) if sh < size else 0
        return (sw, sh), (max(sw, size), max(sh, size)), (left, top)
    return (sw, sh), (sw, sh), (0, 0)


def cv2_reference(arr, mode, size, only_bigger=False):
    """What img2dataset produces (OpenCV resize, albumentations crop/pad) for an RGB array."""
    h, w = arr.shape[:2]
    (sw, sh), (ow, oh), (left, top) = ref_geometry(w, h, mode, size, only_bigger)
    if (sw, sh) != (w, h):
        down = (min(w, h) if mode in ("keep_ratio", "center_crop") else max(w, h)) > size
        inter = cv2.INTER_AREA if down else cv2.INTER_LANCZOS4
        arr = cv2.resize(arr, (sw, sh), interpolation=inter)
    if mode == "center_crop":
        y0, x0 = (sh - size) // 2, (sw - size) // 2
        arr = arr[y0:y0 + size, x0:x0 + size]
    elif mode == "border":
        out = np.full((oh, ow, 3), 255, np.uint8)
        out[top:top + sh, left:left + sw] = arr
        arr = out
    return arr


# --------------------------------------------------------------------------------------
# corpus

@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("images")
    ph = photos()
    files = {}
    for name, arr in ph.items():
        files[name + ".ppm"] = d / (name + ".ppm")
        write_ppm(files[name + ".ppm"], arr)
        files[name + ".png"] = save(Image.fromarray(arr), d / (name + ".png"), compress_level=1)
        files[name + ".jpg"] = save(Image.fromarray(arr), d / (name + ".jpg"), quality=95)
    im = Image.fromarray(ph["chelsea"])
    files["progressive.jpg"] = save(im, d / "progressive.jpg", quality=90, progressive=True)
    files["grey.jpg"] = save(im.convert("L"), d / "grey.jpg", quality=90)
    files["cmyk.jpg"] = save(im.convert("CMYK"), d / "cmyk.jpg", quality=95)
    files["q444.jpg"] = save(im, d / "q444.jpg", quality=90, subsampling=0)
    files["palette.png"] = save(im.convert("P"), d / "palette.png")
    pim = im.convert("P")  # GIF with a transparent index that covers ~20% of the pixels
    files["transparent.gif"] = save(pim, d / "transparent.gif", optimize=False,
                                    transparency=pim.getpixel((0, 0)))
    files["grey.png"] = save(im.convert("L"), d / "grey.png")
    files["interlaced.png"] = save(im, d / "interlaced.png", interlace=1)
    files["trns.png"] = save(im.convert("P"), d / "trns.png", transparency=5)
    rgba = Image.fromarray(rgba_photo())
    files["rgba.png"] = save(rgba, d / "rgba.png")
    files["lossless_alpha.webp"] = save(rgba, d / "lossless_alpha.webp",
                                        lossless=True)
    files["lossy.webp"] = save(im, d / "lossy.webp", quality=85)
    # 16-bit RGB PNG (written by OpenCV, which takes BGR) from a smooth 16-bit ramp
    ramp = np.arange(600, dtype=np.uint16)[None, :, None] % 200
    rgb16 = ph["coffee"].astype(np.uint16) * 257 + ramp
    cv2.imwrite(str(d / "rgb16.png"), rgb16[..., ::-1])
    files["rgb16.png"] = d / "rgb16.png"
    frames = [im, im.transpose(Image.FLIP_LEFT_RIGHT), im.rotate(10)]
    pframes = [f.convert("P") for f in frames]  # web palette: fast, unlike GIF's quantize
    files["anim.gif"] = save(pframes[0], d / "anim.gif", save_all=True,
                             append_images=pframes[1:], duration=100, loop=0)
    files["anim.webp"] = save(frames[0], d / "anim.webp", save_all=True,
                              append_images=frames[1:], duration=100, quality=90)
    return d, files


# --------------------------------------------------------------------------------------
# decoding vs Pillow

def pil_reference(path):
    im = Image.open(path)
    im.seek(0)
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        return composite_white(np.array(im.convert("RGBA")))
    if im.mode in ("I;16", "I;16B", "I"):
        return np.repeat((np.array(im).astype(np.uint32) >> 8).astype(np.uint8)[..., None], 3, 2)
    return np.array(im.convert("RGB"))


@pytest.mark.parametrize("name,min_psnr", [
    ("chelsea.jpg", 45), ("progressive.jpg", 45), ("grey.jpg", 45), ("cmyk.jpg", 40),
    ("q444.jpg", 45), ("chelsea.png", None), ("palette.png", None), ("grey.png", None),
    ("interlaced.png", None), ("trns.png", None), ("rgba.png", None),
    ("lossless_alpha.webp", None), ("lossy.webp", 40), ("anim.gif", None),
    ("transparent.gif", None),
    ("anim.webp", 40),
])
def test_decode_matches_pillow(corpus, name, min_psnr):
    _, files = corpus
    ours = decode(files[name])
    ref = pil_reference(files[name])
    assert ours.shape == ref.shape
    if min_psnr is None:  # lossless formats: identical pixels
        assert np.abs(ours.astype(int) - ref.astype(int)).max() == 0
    else:
        assert psnr(ours, ref) >= min_psnr


def test_decode_16bit_png_keeps_high_byte(corpus):
    _, files = corpus
    ref = cv2.imread(str(files["rgb16.png"]), cv2.IMREAD_UNCHANGED)[..., ::-1]
    assert ref.dtype == np.uint16
    np.testing.assert_array_equal(decode(files["rgb16.png"]), (ref >> 8).astype(np.uint8))


def test_alpha_composited_on_white(corpus):
    _, files = corpus
    info = tool_json("info", files["rgba.png"])
    assert info["has_alpha"] is True
    rgba = rgba_photo()
    assert (rgba[..., 3] == 0).any() and ((rgba[..., 3] > 0) & (rgba[..., 3] < 255)).any()
    assert tool_json("info", files["transparent.gif"])["has_alpha"] is True
    gif = decode(files["transparent.gif"])
    idx = np.array(Image.open(files["transparent.gif"]))
    assert (gif[idx == Image.open(files["transparent.gif"]).info["transparency"]] == 255).all()
    for name in ("rgba.png", "lossless_alpha.webp"):
        out = decode(files[name])
        np.testing.assert_array_equal(out, composite_white(rgba))
        assert (out[rgba[..., 3] == 0] == 255).all()


def test_info(corpus):
    _, files = corpus
    assert tool_json("info", files["rocket.jpg"]) == {
        "format": "jpeg", "width": 640, "height": 427, "orientation": 1, "has_alpha": False}
    # format comes from the magic bytes, not the name
    renamed = files["chelsea.png"].with_suffix(".jpg.gif")
    renamed.write_bytes(files["chelsea.png"].read_bytes())
    assert tool_json("info", renamed)["format"] == "png"


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_upright(corpus, tmp_path, orientation):
    upright = Image.fromarray(skdata.chelsea())  # 451 x 300, clearly not square
    # store the pixels so that applying `orientation` gives the upright picture back
    inverse = {1: None, 2: Image.FLIP_LEFT_RIGHT, 3: Image.ROTATE_180,
               4: Image.FLIP_TOP_BOTTOM, 5: Image.TRANSPOSE, 6: Image.ROTATE_90,
               7: Image.TRANSVERSE, 8: Image.ROTATE_270}[orientation]
    stored = upright if inverse is None else upright.transpose(inverse)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = save(stored, tmp_path / f"o{orientation}.jpg", quality=95, exif=exif.tobytes())
    assert tool_json("info", path)["orientation"] == orientation
    ours = decode(path)
    assert ours.shape == (300, 451, 3)
    assert psnr(ours, np.array(upright)) >= 30
    # and it agrees with Pillow's exif_transpose
    assert psnr(ours, np.array(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))) >= 45
    # geometry uses the upright size
    # geometry uses the upright size, and the reduced (DCT-scaled) decode is rotated too
    r = tool_json("resize", path, tmp_path / "r.ppm", "--size", "100", "--mode", "keep_ratio",
                  "--format", "ppm")
    assert (r["width"], r["height"]) == (150, 100)
    assert (r["decoded_width"], r["decoded_height"]) == (226, 150)  # 1/2 scale, upright
    ref = cv2_reference(np.array(upright), "keep_ratio", 100)
    assert psnr(read_ppm(tmp_path / "r.ppm"), ref) >= 30


# --------------------------------------------------------------------------------------
# resize geometry and quality

SHAPES = [(1000, 800), (333, 517), (256, 256), (300, 256), (100, 50), (5, 2), (7, 2), (1, 40)]


def test_geometry_matches_img2dataset(tmp_path):
    rng = np.random.default_rng(1)
    cases = 0
    for w, h in SHAPES:
        src = tmp_path / f"{w}x{h}.ppm"
        write_ppm(src, rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        out = run([tool("pm_image_tool"), "grid", src, "--sizes", "256,64,3"]).stdout
        for line in out.splitlines():
            r = json.loads(line)
            mode, size, bigger = r["mode"], r["size"], r["only_if_bigger"]
            _, (ow, oh), (left, top) = ref_geometry(w, h, mode, size, bigger)
            assert (r["width"], r["height"]) == (ow, oh), (w, h, r)
            assert (r["pad_x"], r["pad_y"]) == (left, top), (w, h, r)
            cases += 1
    assert cases == len(SHAPES) * len(MODES) * 6


def test_border_and_crop_placement(corpus, tmp_path):
    _, files = corpus
    arr = photos()["chelsea"]  # 451 x 300
    out = tmp_path / "b.ppm"
    tool_json("resize", files["chelsea.ppm"], out, "--size", "256", "--mode", "border",
              "--format", "ppm")
    b = read_ppm(out)
    ref = cv2_reference(arr, "border", 256)
    (sw, sh), _, (left, top) = ref_geometry(451, 300, "border", 256, False)
    assert (sw, sh, left, top) == (256, 170, 0, 43)
    assert (b[:top] == 255).all() and (b[top + sh:] == 255).all()
    assert psnr(b[top:top + sh], ref[top:top + sh]) >= 35
    tool_json("resize", files["chelsea.ppm"], out, "--size", "128", "--mode", "center_crop",
              "--format", "ppm")
    assert psnr(read_ppm(out), cv2_reference(arr, "center_crop", 128)) >= 35


def quality_photos():
    """The photos for quality checks; two under the (unoptimised) sanitizer build."""
    ph = photos()
    return {k: ph[k] for k in ("chelsea", "rocket")} if SANITIZED else ph


def test_resize_quality_vs_opencv(corpus, tmp_path):
    """Our resize of PIL-decoded pixels vs cv2.resize(INTER_AREA) (LANCZOS4 upscaling)."""
    _, files = corpus
    worst = {}
    for name, arr in quality_photos().items():
        for mode, size in [("keep_ratio", 256), ("keep_ratio_largest", 200),
                           ("center_crop", 96), ("border", 256), ("keep_ratio", 137),
                           ("keep_ratio", 700)]:
            out = tmp_path / "o.ppm"
            tool_json("resize", files[name + ".ppm"], out, "--size", str(size), "--mode", mode,
                      "--format", "ppm")
            p = psnr(read_ppm(out), cv2_reference(arr, mode, size))
            key = "upscale" if size == 700 else "downscale"
            worst[key] = min(worst.get(key, 99), p)
    print("worst PSNR vs OpenCV:", worst)
    assert worst["downscale"] >= 30 and worst["upscale"] >= 30


def test_jpeg_pipeline_quality(corpus, tmp_path):
    """The download path: reduced (DCT-scaled) JPEG decode + resize, vs PIL decode + cv2."""
    _, files = corpus
    for name, arr in quality_photos().items():
        for mode, size in [("border", 256), ("center_crop", 128), ("keep_ratio", 100)]:
            out = tmp_path / "o.ppm"
            r = tool_json("resize", files[name + ".jpg"], out, "--size", str(size), "--mode",
                          mode, "--format", "ppm")
            ref = cv2_reference(np.array(Image.open(files[name + ".jpg"]).convert("RGB")),
                                mode, size)
            assert psnr(read_ppm(out), ref) >= 30, (name, mode, size, r)


def test_encode_formats(corpus, tmp_path):
    _, files = corpus
    src = np.array(Image.open(files["coffee.png"]))
    ref = cv2_reference(src, "keep_ratio", 256)
    out = tmp_path / "o.jpg"
    tool_json("resize", files["coffee.ppm"], out, "--size", "256", "--mode", "keep_ratio",
              "--format", "jpg", "--quality", "95")
    im = Image.open(out)
    from PIL import JpegImagePlugin
    assert im.format == "JPEG" and JpegImagePlugin.get_sampling(im) == 2  # 4:2:0
    assert psnr(np.array(im.convert("RGB")), ref) >= 30
    small = tmp_path / "q30.jpg"
    tool_json("resize", files["coffee.ppm"], small, "--size", "256", "--mode", "keep_ratio",
              "--quality", "30")
    assert small.stat().st_size < out.stat().st_size
    wl = tmp_path / "o.webp"
    tool_json("resize", files["coffee.ppm"], wl, "--size", "256", "--mode", "keep_ratio",
              "--format", "webp", "--lossless")
    direct = tmp_path / "o.ppm"
    tool_json("resize", files["coffee.ppm"], direct, "--size", "256", "--mode", "keep_ratio",
              "--format", "ppm")
    np.testing.assert_array_equal(np.array(Image.open(wl).convert("RGB")), read_ppm(direct))
    wq = tmp_path / "q.webp"
    tool_json("resize", files["coffee.ppm"], wq, "--size", "256", "--mode", "keep_ratio",
              "--format", "webp", "--quality", "80")
    assert psnr(np.array(Image.open(wq).convert("RGB")), read_ppm(direct)) >= 30


# --------------------------------------------------------------------------------------
# phash vs imagehash

def our_phash(*paths):
    out = run([tool("pm_image_tool"), "phash", *paths]).stdout.split()
    assert len(out) == len(paths)
    return [int(h, 16) for h in out]


def ref_phash(path):
    """imagehash on what Pillow decodes (alpha composited on white, as we hash it)."""
    return int(str(imagehash.phash(Image.fromarray(pil_reference(path)))), 16)


def hamming(a, b):
    return bin(a ^ b).count("1")


def test_phash_matches_imagehash(corpus):
    _, files = corpus
    diffs = []
    names = [n for n in files if not n.endswith(".ppm") and "anim" not in n and "16" not in n]
    ours = our_phash(*[files[n] for n in names])
    for n, h in zip(names, ours):
        diffs.append(hamming(h, ref_phash(files[n])))
        if diffs[-1]:
            print("phash differs:", n, diffs[-1])
    print(f"phash vs imagehash over {len(names)} images: mean {statistics.mean(diffs):.2f} "
          f"bits, max {max(diffs)}")
    assert statistics.mean(diffs) <= 1.0 and max(diffs) <= 4


def test_phash_same_in_one_process_as_alone(tmp_path):
    """The per-size coefficient cache must not change a hash: sizes whose width and height
    share a cache slot (w % 256 == h % 256), repeated and interleaved, hashed in one
    process equal each hashed alone (and stay as close to imagehash as the corpus test
    demands: these smooth synthetic images have DCT values near the median)."""
    rng = np.random.default_rng(7)
    sizes = [(300, 44), (44, 300), (600, 88), (320, 64), (1000, 232), (33, 33), (2100, 52)]
    paths = []
    for w, h in sizes:
        y, x = np.mgrid[0:h, 0:w]
        img = np.stack([(x * 255 // w), (y * 255 // h), (x * y) % 251], axis=2)
        img = (img + rng.integers(0, 40, img.shape)).clip(0, 255).astype(np.uint8)
        p = tmp_path / f"p{w}x{h}.png"
        Image.fromarray(img).save(p)
        paths.append(p)
    order = paths + paths[::-1] + paths
    together = our_phash(*order)
    alone = {p: our_phash(p)[0] for p in paths}
    assert together == [alone[p] for p in order]
    for p in paths:
        assert hamming(alone[p], ref_phash(p)) <= 4, p


def test_phash_robust_and_discriminative(corpus, tmp_path):
    _, files = corpus
    names = list(photos())
    base = dict(zip(names, our_phash(*[files[n + ".png"] for n in names])))
    variants = []  # (photo, path)
    for n in quality_photos():
        im = Image.open(files[n + ".png"])
        for q in (50, 75, 95):
            variants.append((n, save(im, tmp_path / f"{n}_q{q}.jpg", quality=q)))
        for s in (0.5, 0.75, 1.5, 2.0):
            r = im.resize((round(im.width * s), round(im.height * s)), Image.BICUBIC)
            p = tmp_path / f"{n}_s{s}.ppm"
            write_ppm(p, np.array(r))
            variants.append((n, p))
    hashes = our_phash(*[p for _, p in variants])
    near = [hamming(base[n], h) for (n, _), h in zip(variants, hashes)]
    names = list(base)
    far = [hamming(base[a], base[b]) for i, a in enumerate(names) for b in names[i + 1:]]
    print(f"phash: re-encode/rescale distances {sorted(near)}; distinct photos {sorted(far)}")
    assert statistics.median(near) <= 4 and max(near) <= 8
    assert min(far) > 20


# --------------------------------------------------------------------------------------
# errors through the tool

def test_tool_errors(tmp_path):
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"<html><body>not an image</body></html>")
    r = run([tool("pm_image_tool"), "info", junk], check=False)
    assert r.returncode == 1 and "unsupported format" in r.stderr
    # a PNG header claiming 60000 x 60000, refused from the header
    import struct
    import zlib

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 60000, 60000,
                     8, 2, 0, 0, 0)) + chunk(b"IDAT", zlib.compress(b"\0" * 100)) +
                     chunk(b"IEND", b""))
    r = run([tool("pm_image_tool"), "resize", bomb, tmp_path / "x.jpg", "--size", "256",
             "--mode", "border"], check=False)
    assert r.returncode == 1 and "too many pixels" in r.stderr
    trunc = tmp_path / "trunc.jpg"
    buf = io.BytesIO()
    Image.fromarray(skdata.coffee()).save(buf, "JPEG")
    trunc.write_bytes(buf.getvalue()[:300])
    r = run([tool("pm_image_tool"), "info", trunc], check=False)
    assert r.returncode in (0, 1)
    if r.returncode:
        assert "corrupt jpeg" in r.stderr
