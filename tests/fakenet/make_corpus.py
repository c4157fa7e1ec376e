#!/usr/bin/env python3
"""Generate the fake internet's image corpus and its LAION-like URL lists.

Real photographs shipped inside the scikit-image wheel (astronaut, chelsea, coffee,
rocket, hubble_deep_field, retina, ...; read as files, nothing is fetched) are cut,
tiled, flipped, tinted, rescaled and re-encoded with Pillow into COUNT rows of a
LAION-like table. Every step draws from a seeded RNG, so the same parameters give the
same bytes (for the same Pillow version, which is part of the cache key).

Output directory (see docs/internals/fakenet.md):
  img/               images that are served (nginx /img/, /robots/..., /slow/..., raw helper)
  fault/             fault bodies (HTML as JPEG, corrupt files, bombs, unsupported formats,
                     sparse too-large file)
  urls.csv, urls.jsonl, urls.parquet
                     URL, TEXT, WIDTH, HEIGHT, similarity, punsafe, pwatermark,
                     AESTHETIC_SCORE, LANGUAGE  (URLs hold placeholders, see BASES)
  manifest.json      one entry per row: expected outcome, case, format, sizes, orientation
  duplicates.json    ground truth: exact and near-duplicate groups of URLs
  corpus.json        parameters, cache key, counts, size limits the outcomes assume

URLs use the placeholders @HTTP@, @HTTPS@, @HTTPS_BADCERT@, @RAW@, @CLOSED@ (scheme, host
and port of each fake server) unless --base-url KEY=URL fills them in; server.py fills
them in for a running fake internet.

  python3 tests/fakenet/make_corpus.py --out DIR [--count 3000] [--seed 0] [--jobs N]
  python3 tests/fakenet/make_corpus.py [--count 200]   # into the cache; prints its dir
  ... --base-url http://127.0.0.1:8080 --base-url RAW=http://127.0.0.1:9090 --lists DIR
"""
import argparse
import csv
import hashlib
import importlib.util
import io
import json
import math
import multiprocessing
import os
import random
import shutil
import struct
import sys
import time
import urllib.parse
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageOps, features

GENERATOR_VERSION = 3
BASES = ("HTTP", "HTTPS", "HTTPS_BADCERT", "RAW", "CLOSED")
DEFAULT_COUNT = 3000

# Limits the expected outcomes assume (recorded in corpus.json): a downloader run whose
# maximum body size lies in [MAX_SUCCESS_BYTES, TOO_LARGE_BYTES) and whose per-transfer
# deadline is at most TIMEOUT_ASSUMED_S sees exactly the manifest's outcomes.
TOO_LARGE_BYTES = 48 << 20          # Content-Length of the too-large responses
MAX_PIXELS_ASSUMED = 178956970      # Pillow's bomb limit; bombs claim 3.6e9 pixels
TIMEOUT_ASSUMED_S = 60
DRIP_RATE = 512                     # bytes/s of nginx /slow/drip/ (limit_rate)
SLOW_OK_RATE = 256 * 1024           # bytes/s of nginx /slow/ok/
USER_AGENT_TOKEN = "pixelmill"      # X-Robots-Tag "pixelmill: noai" applies to us

# Photographs (and a few textures) from scikit-image's bundled data. motorcycle_right
# is left out: it is a near-duplicate of motorcycle_left.
SOURCES = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg",
           "hubble_deep_field.jpg", "motorcycle_left.png", "retina.jpg", "ihc.png",
           "camera.png", "moon.png", "coins.png", "brick.png", "grass.png", "gravel.png",
           "cell.png", "clock_motion.png", "color.png")

# Format variants of a unique image and their weights (LAION is mostly JPEG).
VARIANTS = (
    ("jpeg", "baseline", 50), ("jpeg", "progressive", 10), ("jpeg", "grey", 4),
    ("jpeg", "cmyk", 2), ("jpeg", "exif", 7),
    ("png", "rgb", 8), ("png", "rgba", 4), ("png", "palette", 3), ("png", "16bit", 1.5),
    ("webp", "lossy", 5), ("webp", "lossless_alpha", 2.5),
    ("gif", "animated", 2.5), ("gif", "static", 0.5),
)
EXT = {"jpeg": "jpg", "png": "png", "webp": "webp", "gif": "gif"}

# Fault and special-path cases: (case, weight per row, expected outcome, server).
# Each case gets max(1, round(count * weight)) rows. "image" cases serve a dedicated
# generated image (never a duplicate of another row).
CASES = (
    # case                    weight   outcome               server
    ("http_404",              0.020,  "http 404",           "nginx"),
    ("http_403",              0.005,  "http 403",           "nginx"),
    ("http_410",              0.002,  "http 410",           "nginx"),
    ("http_500",              0.003,  "http 500",           "nginx"),
    ("http_429",              0.002,  "http 429",           "nginx"),
    ("http_503",              0.002,  "http 503",           "nginx"),
    ("slow_drip",             0.001,  "timeout",            "nginx"),
    ("slow_ok",               0.004,  "success",            "nginx"),
    ("redirect_chain",        0.004,  "success",            "nginx"),
    ("redirect_loop",         0.001,  "too many redirects", "nginx"),
    ("redirect_loopback",     0.001,  "success",            "nginx"),
    ("redirect_metadata",     0.001,  "blocked",            "nginx"),
    ("redirect_file_scheme",  0.0005, "blocked",            "nginx"),
    ("html_as_jpeg",          0.003,  "unsupported format", "nginx"),
    ("corrupt_truncated_jpeg", 0.002, "decode error",       "nginx"),
    ("corrupt_garbled_jpeg",  0.001,  "decode error",       "nginx"),
    ("corrupt_png",           0.001,  "decode error",       "nginx"),
    ("empty_body",            0.001,  "decode error",       "nginx"),
    ("bomb_png",              0.0005, "too many pixels",    "nginx"),
    ("bomb_jpeg",             0.0005, "too many pixels",    "nginx"),
    ("bomb_gif",              0.0005, "too many pixels",    "nginx"),
    ("unsupported_tiff",      0.001,  "unsupported format", "nginx"),
    ("unsupported_bmp",       0.001,  "unsupported format", "nginx"),
    ("unsupported_svg",       0.001,  "unsupported format", "nginx"),
    ("robots_noai",           0.002,  "disallowed",         "nginx"),
    ("robots_noimageai",      0.002,  "disallowed",         "nginx"),
    ("robots_noindex_noimageai", 0.001, "disallowed",       "nginx"),
    ("robots_ua_noai",        0.0005, "disallowed",         "nginx"),
    ("robots_otherbot",       0.0005, "success",            "nginx"),
    ("ctype_html",            0.002,  "success",            "nginx"),
    ("ctype_octet_stream",    0.002,  "success",            "nginx"),
    ("too_large",             0.001,  "too large",          "nginx"),
    ("tls_bad_cert",          0.001,  "tls error",          "nginx-badcert"),
    ("connection_refused",    0.001,  "connection error",   "closed"),
    ("invalid_url",           0.001,  "invalid url",        "none"),
    ("scheme_not_http",       0.001,  "blocked",            "none"),
    ("raw_truncated",         0.002,  "truncated",          "raw"),
    ("raw_neverending",       0.001,  "too large",          "raw"),
    ("raw_stall",             0.001,  "timeout",            "raw"),
    ("raw_drip",              0.001,  "timeout",            "raw"),
    ("raw_flaky_429",         0.002,  "success",            "raw"),
    ("raw_flaky_503",         0.002,  "success",            "raw"),
    ("raw_reset",             0.001,  "connection error",   "raw"),
    ("raw_garbage",           0.001,  "connection error",   "raw"),
)
# Cases whose URL serves a generated image file (kept out of the duplicate groups).
IMAGE_CASES = {"slow_drip", "slow_ok", "redirect_chain", "redirect_loopback",
               "robots_noai", "robots_noimageai", "robots_noindex_noimageai",
               "robots_ua_noai", "robots_otherbot", "ctype_html", "ctype_octet_stream",
               "tls_bad_cert", "raw_truncated", "raw_drip", "raw_flaky_429",
               "raw_flaky_503"}
# Image cases that need a body of at least this many bytes (so that trickling it
# out really takes longer than TIMEOUT_ASSUMED_S, or a truncation is visible).
MIN_BYTES = {"slow_drip": DRIP_RATE * TIMEOUT_ASSUMED_S * 2, "raw_drip": 4096,
             "raw_truncated": 2048}

EXACT_DUP_FRACTION = 0.03
NEAR_DUP_FRACTION = 0.03
SAME_URL_FRACTION = 0.005
HTTPS_FRACTION = 0.3

WORDS = {
    "adj": "red blue green golden vintage modern rustic tiny huge cozy bright dark misty "
           "sunny snowy wooden metal glass ancient futuristic elegant colorful minimalist "
           "abstract handmade organic shiny soft old new beautiful quiet busy".split(),
    "noun": "cat dog astronaut rocket coffee cup motorcycle galaxy moon coin brick wall "
            "field garden kitchen beach mountain city street house chair table lamp "
            "flower tree river bridge car bicycle portrait landscape poster logo shirt "
            "dress shoe ring necklace painting sculpture cake pizza salad book".split(),
    "place": "in Paris|on the beach|at night|in the snow|in a forest|on a table|"
             "in the city|at sunset|in space|on white background|in a studio".split("|"),
    "style": "photo|stock photo|oil painting|watercolor|illustration|3d render|"
             "digital art|close-up|aerial view|vector art|macro shot".split("|"),
    "shop": "Buy now|Free shipping|Sale|Size M|Item #|Pack of 3|New arrival".split("|"),
}
FOREIGN = {
    "de": "Eine rote Katze auf dem Tisch|Schönes Haus am See|Kaffeetasse aus Keramik|"
          "Motorrad im Regen|Frau mit Hut".split("|"),
    "fr": "Un chat roux sur la table|Belle maison au bord du lac|Tasse à café en "
          "céramique|Moto sous la pluie".split("|"),
    "es": "Un gato rojo en la mesa|Casa bonita junto al lago|Taza de café de "
          "cerámica".split("|"),
    "ja": "テーブルの上の赤い猫|湖のそばの美しい家|陶器のコーヒーカップ|雨の中のバイク".split("|"),
    "zh": "桌子上的红猫|湖边的漂亮房子|陶瓷咖啡杯".split("|"),
}


def params_of(count, seed):
    """The parameters that determine the corpus bytes (the cache key hashes these)."""
    src = Path(__file__).read_bytes()
    return {"generator_version": GENERATOR_VERSION, "count": count, "seed": seed,
            "pillow": Image.__version__, "numpy": np.__version__,
            "script_sha256": hashlib.sha256(src).hexdigest()}


def cache_key(params):
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]


def default_cache_root():
    env = os.environ.get("PIXELMILL_FAKENET_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "pixelmill" / "fakenet"


def source_dir():
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("make_corpus: scikit-image is not installed (scripts/install-deps.sh)")
    d = Path(list(spec.submodule_search_locations)[0]) / "data"
    missing = [s for s in SOURCES if not (d / s).exists()]
    if missing:
        sys.exit(f"make_corpus: {d} lacks {missing}")
    return d


# ---------------------------------------------------------------------------- pixels

_SRC = None


def _sources():
    global _SRC
    if _SRC is None:
        d = source_dir()
        _SRC = []
        for name in SOURCES:
            im = Image.open(d / name)
            im = im.convert("RGB") if im.mode not in ("RGB", "L") else im
            im.load()
            _SRC.append(im)
    return _SRC


def _tile(rng, w, h):
    """One tile: a random crop of a random photo, flipped/rotated/tinted, sized w x h."""
    src = rng.choice(_sources())
    ar = w / h
    sw, sh = src.size
    frac = rng.uniform(0.35, 1.0)
    cw = min(sw, sh * ar) * frac
    ch = cw / ar
    cw, ch = max(4, int(cw)), max(4, int(ch))
    x0 = rng.randint(0, max(0, sw - cw))
    y0 = rng.randint(0, max(0, sh - ch))
    t = src.crop((x0, y0, x0 + cw, y0 + ch))
    if t.mode == "L":
        # tint a greyscale source with two random colours
        c0 = tuple(rng.randint(0, 120) for _ in range(3))
        c1 = tuple(rng.randint(135, 255) for _ in range(3))
        t = ImageOps.colorize(t, c0, c1)
    op = rng.randrange(8)
    if op:
        t = t.transpose((None, Image.Transpose.FLIP_LEFT_RIGHT, Image.Transpose.ROTATE_180,
                         Image.Transpose.FLIP_TOP_BOTTOM, Image.Transpose.TRANSPOSE,
                         Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_270,
                         Image.Transpose.TRANSVERSE)[op])
    return t.resize((max(1, w), max(1, h)), Image.Resampling.BILINEAR)


def make_pixels(rng, w, h):
    """A unique RGB picture of w x h: 1, 2 or 4 photo tiles plus random shapes."""
    # compose at the target size (large targets at <= 1024 px, then upscaled)
    s = 1.0 if max(w, h) <= 1600 else 1024 / max(w, h)
    ww, wh = max(8, round(w * s)), max(8, round(h * s))
    layout = rng.random()
    if layout < 0.55:
        im = _tile(rng, ww, wh)
    else:
        im = Image.new("RGB", (ww, wh))
        if layout < 0.8:
            cut = rng.randint(ww // 4, 3 * ww // 4) if ww > 8 else ww // 2
            im.paste(_tile(rng, cut, wh), (0, 0))
            im.paste(_tile(rng, ww - cut, wh), (cut, 0))
        else:
            cx = rng.randint(ww // 4, 3 * ww // 4)
            cy = rng.randint(wh // 4, 3 * wh // 4)
            for (x0, y0, x1, y1) in ((0, 0, cx, cy), (cx, 0, ww, cy), (0, cy, cx, wh),
                                     (cx, cy, ww, wh)):
                if x1 > x0 and y1 > y0:
                    im.paste(_tile(rng, x1 - x0, y1 - y0), (x0, y0))
    # a few large random shapes make each picture structurally different
    d = ImageDraw.Draw(im)
    for _ in range(rng.randint(1, 4)):
        sw, sh = ww * rng.uniform(0.1, 0.45), wh * rng.uniform(0.1, 0.45)
        x0, y0 = rng.uniform(-sw / 2, ww - sw / 2), rng.uniform(-sh / 2, wh - sh / 2)
        x1, y1 = x0 + sw, y0 + sh
        col = tuple(rng.randint(0, 255) for _ in range(3))
        (d.ellipse if rng.random() < 0.5 else d.rectangle)((x0, y0, x1, y1), fill=col)
    if (ww, wh) != (w, h):
        im = im.resize((w, h), Image.Resampling.BILINEAR)
    return im


def phash(im):
    """64-bit DCT perceptual hash (the imagehash.phash algorithm), as 16 hex digits."""
    if im.mode in ("RGBA", "LA", "P"):
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(bg, im)
    small = im.resize((32, 32), Image.Resampling.LANCZOS, reducing_gap=2.0)
    g = np.asarray(small.convert("L"), dtype=np.float64)
    n = 32
    k = np.arange(n)
    dct = np.cos(np.pi * (2 * k[None, :] + 1) * k[:, None] / (2 * n))
    low = (dct @ g @ dct.T)[:8, :8]
    bits = (low > np.median(low)).flatten()
    v = 0
    for b in bits:
        v = (v << 1) | int(b)
    return f"{v:016x}"


def _png16_rgb(im):
    """Encode RGB as a 16-bit-per-channel PNG (Pillow cannot write one)."""
    a = np.asarray(im.convert("RGB"), dtype=np.uint16)
    a = (a << 8) | a                                  # 8 -> 16 bit, full range
    h, w, _ = a.shape
    rows = np.empty((h, 1 + w * 6), dtype=np.uint8)
    rows[:, 0] = 0
    rows[:, 1:] = a.astype(">u2").view(np.uint8).reshape(h, w * 6)

    def chunk(t, data):
        return struct.pack(">I", len(data)) + t + data + struct.pack(
            ">I", zlib.crc32(t + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(rows.tobytes(), 3)) + chunk(b"IEND", b""))


_INVERSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
            4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
            6: Image.Transpose.ROTATE_90, 7: Image.Transpose.TRANSVERSE,
            8: Image.Transpose.ROTATE_270}


def _alpha(rng, w, h):
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cx, cy = rng.uniform(0.3, 0.7) * w, rng.uniform(0.3, 0.7) * h
    r = np.hypot((xx - cx) / max(w, 1), (yy - cy) / max(h, 1))
    a = np.clip(255 * (1.2 - 2.2 * r), 0, 255).astype(np.uint8)
    return Image.fromarray(a, "L")


def encode(im, fmt, variant, rng, quality=None):
    """Encode picture im (RGB, the *displayed* orientation). Returns (bytes, info)."""
    out = io.BytesIO()
    info = {"orientation": None, "frames": 1, "mode": None}
    w, h = im.size
    q = quality or rng.randint(70, 95)
    if fmt == "jpeg":
        kw = {"quality": q}
        if variant == "progressive":
            kw["progressive"] = True
        if variant == "grey":
            im = im.convert("L")
        elif variant == "cmyk":
            im = im.convert("CMYK")
        elif variant == "exif":
            o = rng.randint(2, 8)
            im = im.transpose(_INVERSE[o])
            ex = Image.Exif()
            ex[0x0112] = o
            kw["exif"] = ex.tobytes()
            info["orientation"] = o
        im.save(out, "JPEG", **kw)
    elif fmt == "png":
        if variant == "rgba":
            im = im.copy()
            im.putalpha(_alpha(rng, w, h))
            im.save(out, "PNG", compress_level=1, compress_type=zlib.Z_RLE)
        elif variant == "palette":
            p = im.quantize(colors=rng.choice((16, 64, 256)), method=Image.Quantize.FASTOCTREE)
            p.save(out, "PNG", compress_level=1, compress_type=zlib.Z_RLE)
            im = p
        elif variant == "16bit":
            if rng.random() < 0.5:
                out.write(_png16_rgb(im))
            else:
                a = np.asarray(im.convert("L"), dtype=np.uint16) * 257
                im = Image.fromarray(a)            # mode I;16
                im.save(out, "PNG", compress_level=1, compress_type=zlib.Z_RLE)
        else:
            im.save(out, "PNG", compress_level=1, compress_type=zlib.Z_RLE)
    elif fmt == "webp":
        if variant == "lossless_alpha":
            im = im.copy()
            im.putalpha(_alpha(rng, w, h))
            im.save(out, "WEBP", lossless=True, quality=0, method=0)
        else:
            im.save(out, "WEBP", quality=q, method=2)
    elif fmt == "gif":
        if variant == "animated":
            n = rng.randint(2, 5)
            frames = []
            for i in range(n):
                dx = (i * max(1, w // 10)) % max(1, w)
                f = ImageOps.mirror(im) if i % 2 else im
                f = Image.fromarray(np.roll(np.asarray(f), dx, axis=1))
                frames.append(f.quantize(colors=64, method=Image.Quantize.FASTOCTREE))
            frames[0].save(out, "GIF", save_all=True, append_images=frames[1:],
                           duration=rng.choice((50, 100, 200)), loop=0)
            info["frames"] = n
        else:
            im.quantize(colors=128, method=Image.Quantize.FASTOCTREE).save(out, "GIF")
    else:
        raise ValueError(fmt)
    info["mode"] = im.mode
    return out.getvalue(), info


# ----------------------------------------------------------------------------- plan

def _pick_size(rng, tiny_ok=True):
    r = rng.random()
    if tiny_ok and r < 0.04:
        long_side = rng.randint(16, 63)
    else:
        long_side = int(min(3999, max(64, rng.lognormvariate(math.log(550), 0.5))))
    ar = rng.choice((1, 1, 4 / 3, 4 / 3, 3 / 2, 3 / 2, 16 / 9, 2, 3, 5))
    short = max(1, round(long_side / ar))
    return (long_side, short) if rng.random() < 0.65 else (short, long_side)


def _cap(size, fmt, var):
    """Keep the slow encoders (GIF, lossless WebP, PNG) on moderate sizes."""
    cap = {"gif": 600, "png": 1200}.get(fmt, 800 if var == "lossless_alpha" else None)
    if cap is None or max(size) <= cap:
        return size
    f = cap / max(size)
    return (max(1, round(size[0] * f)), max(1, round(size[1] * f)))


def _pick_variant(rng):
    total = sum(v[2] for v in VARIANTS)
    x = rng.uniform(0, total)
    for fmt, var, wt in VARIANTS:
        x -= wt
        if x <= 0:
            return fmt, var
    return VARIANTS[0][:2]


def _gen_task(task):
    """Worker: generate one unique picture and its near-duplicate variants.

    task: dict(idx, seed, size, fmt, variant, near (list of kinds), min_bytes, out, name)
    Returns a list of dicts (the base first, then each near-duplicate)."""
    rng = random.Random(f"{task['seed']}/img/{task['idx']}")
    w, h = task["size"]
    im = make_pixels(rng, w, h)
    data, info = encode(im, task["fmt"], task["variant"], rng)
    while len(data) < task["min_bytes"]:
        # body too small for a drip/truncation case: grow the picture
        w, h = w * 2, h * 2
        im = make_pixels(rng, w, h)
        data, info = encode(im, task["fmt"], task["variant"], rng, quality=95)
    out = Path(task["out"])
    results = []

    def emit(name, data, info, disp, fmt, variant):
        """disp: the picture as displayed (EXIF orientation applied)."""
        (out / "img" / name).write_bytes(data)
        o = info["orientation"]
        w, h = disp.size
        sw, sh = (h, w) if o in (5, 6, 7, 8) else (w, h)
        results.append({
            "file": f"img/{name}", "format": fmt, "variant": variant,
            "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
            "width": w, "height": h, "stored_width": sw, "stored_height": sh,
            "orientation": o, "frames": info["frames"], "mode": info["mode"],
            "phash": phash(disp),
        })

    emit(task["name"], data, info, im, task["fmt"], task["variant"])
    for j, kind in enumerate(task["near"]):
        if kind == "requality":
            fmt, var = ("jpeg", "baseline") if task["fmt"] != "jpeg" else ("jpeg", "progressive")
            q = rng.choice((40, 55, 98))
            nim = im
        else:  # rescale to 40-80 %
            f = rng.uniform(0.4, 0.8)
            nim = im.resize((max(8, round(w * f)), max(8, round(h * f))),
                            Image.Resampling.LANCZOS)
            fmt, var, q = task["fmt"], task["variant"], None
            if fmt == "jpeg" and var == "exif":
                var = "baseline"
        nd, ninfo = encode(nim, fmt, var, rng, quality=q)
        base = task["name"].rsplit(".", 1)[0]
        emit(f"{base}-near{j}.{EXT[fmt]}", nd, ninfo, nim, fmt, var)
        results[-1]["near_kind"] = kind
    return results


# ------------------------------------------------------------------ fault bodies

def _sparse(path, size, head=b""):
    with open(path, "wb") as f:
        f.write(head)
        f.truncate(size)


def _png_chunk(t, data):
    return struct.pack(">I", len(data)) + t + data + struct.pack(
        ">I", zlib.crc32(t + data) & 0xFFFFFFFF)


def bomb_png(side=60000):
    """A fully valid 1-bit greyscale PNG of side x side zero pixels (~0.4 MB).

    The pixel stream is all zero bytes, so the zlib stream is one raw-deflate piece
    for 64 rows (byte-aligned by a full flush, hence repeatable) repeated, a tail, and
    the Adler-32 of n zero bytes, which is (n mod 65521) << 16 | 1."""
    rowlen = 1 + (side + 7) // 8
    c = zlib.compressobj(9, zlib.DEFLATED, -15, 9, zlib.Z_RLE)
    piece = c.compress(b"\x00" * rowlen * 64) + c.flush(zlib.Z_FULL_FLUSH)
    c = zlib.compressobj(9, zlib.DEFLATED, -15, 9, zlib.Z_RLE)
    tail = c.compress(b"\x00" * rowlen * (side % 64)) + c.flush(zlib.Z_FINISH)
    n = rowlen * side
    idat = (b"\x78\xda" + piece * (side // 64) + tail
            + struct.pack(">I", ((n % 65521) << 16) | 1))
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat)
            + _png_chunk(b"IEND", b""))


def bomb_jpeg(small_jpeg, side=60000):
    """A small JPEG whose SOF header is patched to claim side x side pixels."""
    b = bytearray(small_jpeg)
    i = 2
    while i + 9 < len(b):
        if b[i] != 0xFF:
            raise ValueError("bad marker")
        m = b[i + 1]
        ln = struct.unpack(">H", b[i + 2:i + 4])[0]
        if m in (0xC0, 0xC1, 0xC2):
            b[i + 5:i + 9] = struct.pack(">HH", side, side)
            return bytes(b)
        i += 2 + ln
    raise ValueError("no SOF")


def bomb_gif(side=65535):
    """A valid 1x1-pixel-frame GIF whose logical screen claims side x side."""
    out = io.BytesIO()
    Image.new("P", (1, 1)).save(out, "GIF")
    b = bytearray(out.getvalue())
    b[6:10] = struct.pack("<HH", side, side)
    return bytes(b)


def make_fault_files(out, rng, small_jpeg, big_jpeg, small_png):
    """Write the shared fault bodies into out/fault/. Returns {case: relative file}."""
    f = out / "fault"
    f.mkdir(parents=True, exist_ok=True)
    files = {}

    def put(name, data, case):
        (f / name).write_bytes(data)
        files[case] = f"fault/{name}"
    put("page.jpg", b"<!DOCTYPE html>\n<html><head><title>Not Found</title></head>"
        b"<body><h1>Oops</h1><p>This page is HTML although it is named .jpg and served "
        b"as image/jpeg.</p></body></html>\n", "html_as_jpeg")
    put("truncated.jpg", big_jpeg[:len(big_jpeg) // 2], "corrupt_truncated_jpeg")
    g = bytearray(big_jpeg)
    for i in range(4, min(len(g), 600)):      # SOI + first marker kept, headers garbled
        g[i] = rng.randrange(256) if g[i] != 0xFF else 0x00
    put("garbled.jpg", bytes(g), "corrupt_garbled_jpeg")
    p = bytearray(small_png)
    p[29:33] = b"\x00\x00\x00\x00"            # IHDR CRC broken
    put("corrupt.png", bytes(p[:len(p) * 2 // 3]), "corrupt_png")
    put("empty.jpg", b"", "empty_body")
    put("bomb.png", bomb_png(), "bomb_png")
    put("bomb.jpg", bomb_jpeg(small_jpeg), "bomb_jpeg")
    put("bomb.gif", bomb_gif(), "bomb_gif")
    im = Image.open(io.BytesIO(small_jpeg)).convert("RGB")
    b = io.BytesIO()
    im.save(b, "TIFF")
    put("image.tif", b.getvalue(), "unsupported_tiff")
    b = io.BytesIO()
    im.save(b, "BMP")
    put("image.bmp", b.getvalue(), "unsupported_bmp")
    put("image.svg", b'<svg xmlns="http://www.w3.org/2000/svg" width="640" height="480">'
        b'<rect width="640" height="480" fill="#3a7"/><circle cx="320" cy="240" r="150" '
        b'fill="#fd3"/></svg>\n', "unsupported_svg")
    _sparse(f / "huge.jpg", TOO_LARGE_BYTES, small_jpeg[:20])
    files["too_large"] = "fault/huge.jpg"
    return files


# ------------------------------------------------------------------------- rows

def _caption(rng):
    r = rng.random()
    if r < 0.02:
        return ""
    if r < 0.12:
        lang = rng.choice(list(FOREIGN))
        return rng.choice(FOREIGN[lang]), lang
    a, n = rng.choice(WORDS["adj"]), rng.choice(WORDS["noun"])
    t = rng.random()
    if t < 0.35:
        s = f"{a} {n} {rng.choice(WORDS['place'])}"
    elif t < 0.6:
        s = f"{rng.choice(WORDS['style'])} of a {a} {n}"
    elif t < 0.75:
        s = f"{a.capitalize()} {n} - {rng.choice(WORDS['shop'])} {rng.randint(1, 999)}"
    elif t < 0.9:
        s = f"{a} {n} {rng.choice(WORDS['place'])}, {rng.choice(WORDS['style'])}, " \
            f"{rng.choice(WORDS['adj'])} {rng.choice(WORDS['noun'])}"
    else:
        s = " ".join(rng.choice(WORDS["adj"] + WORDS["noun"]) for _ in range(rng.randint(20, 60)))
    if rng.random() < 0.03:
        s = s + ' "quoted", with; separators\tand\nnewline'
    return s, "en"


def _columns(rng, width, height):
    cap = _caption(rng)
    text, lang = (cap, None) if isinstance(cap, str) else cap
    missing = rng.random() < 0.05
    pu = float(np.float32(min(1.0, rng.betavariate(0.6, 8))))
    pw = float(np.float32(rng.betavariate(1.2, 4)))
    return {
        "TEXT": text,
        "WIDTH": None if missing or width is None else width,
        "HEIGHT": None if missing or height is None else height,
        "similarity": round(rng.uniform(0.26, 0.45), 6),
        "punsafe": None if rng.random() < 0.03 else pu,
        "pwatermark": None if rng.random() < 0.03 else pw,
        "AESTHETIC_SCORE": round(min(9.5, max(1.0, rng.gauss(5.2, 0.8))), 6),
        "LANGUAGE": None if rng.random() < 0.02 else lang,
    }


def _quote(name):
    return urllib.parse.quote(name)


def _fancy_name(rng, idx, ext):
    r = rng.random()
    if r < 0.02:
        return f"photo {idx:06d} (1).{ext}"                   # space and parentheses
    if r < 0.03:
        return f"caf\u00e9-\u65e5\u672c-{idx:06d}.{ext}"       # non-ASCII, UTF-8 encoded
    return f"{idx:06d}.{ext}"


def build(out, count=DEFAULT_COUNT, seed=0, jobs=None, bases=None):
    """Generate the corpus into out (created). Returns the corpus.json dict."""
    t0 = time.time()
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    (out / "img").mkdir(parents=True)
    rng = random.Random(f"{seed}/plan")
    params = params_of(count, seed)

    # 1. fault/special cases
    case_rows = []
    for case, wt, outcome, server in CASES:
        for _ in range(max(1, round(count * wt))):
            case_rows.append((case, outcome, server))
    n_special = len(case_rows)
    n_plain = max(0, count - n_special)
    n_same_url = max(1, int(n_plain * SAME_URL_FRACTION))
    n_exact = max(1, int(n_plain * EXACT_DUP_FRACTION))
    n_near = max(1, int(n_plain * NEAR_DUP_FRACTION))
    n_unique = max(1, n_plain - n_same_url - n_exact - n_near)

    # 2. unique pictures: plain rows first, then one per image case
    tasks = []
    for i in range(n_unique):
        fmt, var = _pick_variant(rng)
        size = _pick_size(rng)
        n_huge = max(1 if count >= 100 else 0, round(count * 0.003))
        if i < n_huge:                              # a few > 4000 px, plain JPEG
            size = (rng.randint(4001, 5000), rng.randint(2500, 3400))
            if rng.random() < 0.3:
                size = size[::-1]
            fmt, var = "jpeg", "baseline"
        elif i < n_huge + len(VARIANTS):            # every variant at least once
            fmt, var = VARIANTS[i - n_huge][:2]
        elif i < n_huge + len(VARIANTS) + 3:        # and a few tiny ones
            size = (rng.randint(8, 63), rng.randint(8, 63))
        size = _cap(size, fmt, var)
        name = _fancy_name(rng, i, EXT[fmt])
        tasks.append({"idx": i, "seed": seed, "size": size, "fmt": fmt, "variant": var,
                      "near": [], "min_bytes": 0, "out": str(out), "name": name,
                      "case": "plain"})
    for k, (case, outcome, server) in enumerate(case_rows):
        if case in IMAGE_CASES:
            i = len(tasks)
            mb = MIN_BYTES.get(case, 0)
            size = (1000, 750) if mb > 20000 else _pick_size(rng, tiny_ok=mb == 0)
            fmt, var = ("jpeg", "baseline") if mb else _pick_variant(rng)
            size = _cap(size, fmt, var)
            ext = "" if case == "ctype_octet_stream" else "." + EXT[fmt]
            tasks.append({"idx": i, "seed": seed, "size": size, "fmt": fmt,
                          "variant": var, "near": [], "min_bytes": mb, "out": str(out),
                          "name": f"{case}-{k:04d}{ext}", "case": case, "case_row": k})
    plain = [t for t in tasks if t["case"] == "plain"]
    # near-duplicates: extra re-encodings of some plain pictures
    for _ in range(n_near):
        t = rng.choice(plain[round(count * 0.003) + 1:] or plain)
        t["near"].append("requality" if rng.random() < 0.5 else "rescale")

    jobs = jobs or min(os.cpu_count() or 1, 8)
    order = sorted(range(len(tasks)), key=lambda i: -tasks[i]["size"][0] * tasks[i]["size"][1])
    if jobs > 1:
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(jobs) as pool:
            res = pool.map(_gen_task, [tasks[i] for i in order], chunksize=4)
    else:
        res = [_gen_task(tasks[i]) for i in order]
    results = [None] * len(tasks)
    for i, r in zip(order, res):
        results[i] = r

    # 3. fault bodies (from the first small and a large generated JPEG)
    jpgs = [r[0] for r in results if r[0]["format"] == "jpeg" and r[0]["variant"] == "baseline"]
    small = min(jpgs, key=lambda r: abs(r["bytes"] - 20000))
    big = max(jpgs[:50], key=lambda r: r["bytes"])
    pngs = [r[0] for r in results if r[0]["format"] == "png"] or [small]
    fault_files = make_fault_files(out, random.Random(f"{seed}/fault"),
                                   (out / small["file"]).read_bytes(),
                                   (out / big["file"]).read_bytes(),
                                   (out / pngs[0]["file"]).read_bytes())

    # 4. rows
    rows = []          # (url_template, manifest entry)
    dup_exact, dup_near, same_url = [], [], []

    def img_url(file, https=None):
        base = "@HTTPS@" if (rng.random() < HTTPS_FRACTION if https is None else https) \
            else "@HTTP@"
        url = f"{base}/{_quote(file)}"
        if rng.random() < 0.05:
            url += f"?w={rng.randint(100, 2000)}&sig={rng.getrandbits(40):010x}"
        return url

    def entry(case, outcome, server, url, img=None, **extra):
        e = {"url": url, "outcome": outcome, "case": case, "server": server,
             "format": None, "variant": None, "width": None, "height": None,
             "stored_width": None, "stored_height": None, "orientation": None,
             "frames": None, "bytes": None, "sha256": None, "phash": None, "file": None,
             "dup_group": None}
        if img:
            for k in ("format", "variant", "width", "height", "stored_width",
                      "stored_height", "orientation", "frames", "bytes", "sha256",
                      "phash", "file"):
                e[k] = img.get(k)
        e.update(extra)
        return e

    plain_results = [results[i] for i, t in enumerate(tasks) if t["case"] == "plain"]
    for r in plain_results:
        base = r[0]
        ent = entry("plain", "success", "nginx", img_url(base["file"]), base)
        rows.append(ent)
        if len(r) > 1:
            group = [ent]
            for near in r[1:]:
                ne = entry("near_duplicate", "success", "nginx", img_url(near["file"]), near,
                           near_kind=near["near_kind"])
                rows.append(ne)
                group.append(ne)
            dup_near.append(group)
    # exact duplicates: same bytes under another file name (hard link) and URL
    for j in range(n_exact):
        src_ent = rng.choice([e for e in rows if e["case"] == "plain"])
        src = out / src_ent["file"]
        stem, ext = src_ent["file"].rsplit(".", 1)
        dst_rel = f"{stem}-copy{j}.{ext}"
        try:
            os.link(src, out / dst_rel)
        except OSError:
            shutil.copyfile(src, out / dst_rel)
        de = entry("exact_duplicate", "success", "nginx", img_url(dst_rel), src_ent)
        de["file"] = dst_rel
        rows.append(de)
        dup_exact.append([src_ent, de])
    for _ in range(n_same_url):
        src_ent = rng.choice([e for e in rows if e["case"] == "plain"])
        se = dict(src_ent)
        se["case"] = "same_url"
        rows.append(se)
        same_url.append(src_ent["url"])

    # merge exact groups that share a source (an image copied twice)
    merged = {}
    for g in dup_exact:
        merged.setdefault(id(g[0]), [g[0]]).append(g[1])
    dup_exact = list(merged.values())
    # an exact copy of a picture that also has near-duplicates joins its near group
    near_of = {id(g[0]): g for g in dup_near}
    for g in dup_exact:
        if id(g[0]) in near_of:
            near_of[id(g[0])].extend(g[1:])

    by_case = {}
    for i, t in enumerate(tasks):
        if t["case"] != "plain":
            by_case[t["case_row"]] = results[i][0]
    for k, (case, outcome, server) in enumerate(case_rows):
        img = by_case.get(k)
        rid = f"{k:04d}"
        q = _quote(img["file"].split("/", 1)[1]) if img else None
        if case.startswith("http_"):
            url = f"{'@HTTPS@' if rng.random() < HTTPS_FRACTION else '@HTTP@'}" \
                  f"/status/{case[5:]}/{rid}.jpg"
        elif case == "slow_drip":
            url = f"@HTTP@/slow/drip/{q}"
        elif case == "slow_ok":
            url = f"@HTTP@/slow/ok/{q}"
        elif case == "redirect_chain":
            url = f"{'@HTTPS@' if rng.random() < 0.5 else '@HTTP@'}/redirect/chain/3/{q}"
        elif case == "redirect_loop":
            url = f"@HTTP@/redirect/loop/a/{rid}.jpg"
        elif case == "redirect_loopback":
            url = f"@HTTP@/redirect/loopback/{q}"
        elif case == "redirect_metadata":
            url = f"@HTTP@/redirect/metadata/{rid}.jpg"
        elif case == "redirect_file_scheme":
            url = f"@HTTP@/redirect/file/{rid}.jpg"
        elif case in fault_files:
            url = f"@HTTP@/{fault_files[case]}?id={rid}"
        elif case.startswith("robots_"):
            url = f"@HTTP@/robots/{case[7:]}/{q}"
        elif case == "ctype_html":
            url = f"@HTTP@/ctype/html/{q}"
        elif case == "ctype_octet_stream":
            url = f"@HTTP@/{_quote(img['file'])}"
        elif case == "tls_bad_cert":
            url = f"@HTTPS_BADCERT@/{_quote(img['file'])}"
        elif case == "connection_refused":
            url = f"@CLOSED@/img/{rid}.jpg"
        elif case == "invalid_url":
            # malformed, but never naming a host other than loopback, so that even a
            # lenient parser cannot turn one into a DNS look-up or a remote connection
            url = rng.choice(("htp:/broken/url.jpg", "http://", "", "http://[::1/x.jpg",
                              "http://127.0.0.1:99999/x.jpg", "http://127.0.0.1:abc/x.jpg"))
        elif case == "scheme_not_http":
            url = rng.choice(("ftp://127.0.0.1/pub/image.jpg", "file:///etc/passwd",
                              "data:image/gif;base64,R0lGODlhAQABAAAAACw=",
                              "gopher://127.0.0.1/1"))
        elif case == "raw_truncated":
            url = f"@RAW@/truncated/{q}"
        elif case == "raw_drip":
            url = f"@RAW@/drip/{q}"
        elif case == "raw_flaky_429":
            url = f"@RAW@/flaky/429/2/{q}"
        elif case == "raw_flaky_503":
            url = f"@RAW@/flaky/503/1/{q}"
        elif case.startswith("raw_"):
            url = f"@RAW@/{case[4:]}/{rid}.jpg"
        else:
            raise AssertionError(case)
        extra = {}
        if case in ("redirect_metadata", "redirect_file_scheme", "redirect_loopback"):
            extra["note"] = {"redirect_metadata": "302 to http://169.254.169.254/latest/"
                             "meta-data/...: must be refused before connecting, even with "
                             "--allow-private-network",
                             "redirect_file_scheme": "302 to file:///etc/passwd",
                             "redirect_loopback": "302 to http://127.0.0.1:PORT/img/...: "
                             "success only with --allow-private-network"}[case]
        if case.startswith("raw_flaky"):
            extra["note"] = "first %s requests per URL answer %s with Retry-After: 1" % (
                url.split("/")[-2], case[-3:])
        e = entry(case, outcome, server, url, img, **extra)
        if case in fault_files:
            e["file"] = fault_files[case]
            e["bytes"] = os.path.getsize(out / fault_files[case])
        rows.append(e)

    # 5. shuffle into input order; per-row LAION columns
    rng.shuffle(rows)
    manifest = []
    table = []
    for i, e in enumerate(rows):
        e = dict(e)
        e["row"] = i
        cols = _columns(random.Random(f"{seed}/cols/{i}"), e["width"], e["height"])
        table.append({"URL": e["url"], **cols})
        manifest.append(e)
    # dup groups by url
    groups = {"exact": [[x["url"] for x in g] for g in dup_exact],
              "near": [[x["url"] for x in g] for g in dup_near],
              "same_url": sorted(set(same_url))}
    # dup_group: the near group if any (it holds the exact copies too), else the exact
    # group; exact_group: the group of byte-identical files
    gid, xid = {}, {}
    for n, g in enumerate(groups["near"]):
        for u in g:
            gid[u] = f"near-{n}"
    for n, g in enumerate(groups["exact"]):
        for u in g:
            gid.setdefault(u, f"exact-{n}")
            xid[u] = f"exact-{n}"
    for e in manifest:
        e["dup_group"] = gid.get(e["url"])
        e["exact_group"] = xid.get(e["url"])

    success_bytes = [e["bytes"] for e in manifest if e["outcome"] == "success" and e["bytes"]]
    info = {
        "params": params, "cache_key": cache_key(params), "rows": len(manifest),
        "placeholders": {k: f"@{k}@" for k in BASES},
        "outcomes": _count(e["outcome"] for e in manifest),
        "cases": _count(e["case"] for e in manifest),
        "formats": _count(f"{e['format']}/{e['variant']}" for e in manifest if e["format"]),
        "limits": {"max_success_bytes": max(success_bytes), "too_large_bytes": TOO_LARGE_BYTES,
                   "max_pixels_assumed": MAX_PIXELS_ASSUMED,
                   "timeout_assumed_s": TIMEOUT_ASSUMED_S, "drip_rate": DRIP_RATE,
                   "slow_ok_rate": SLOW_OK_RATE, "user_agent_token": USER_AGENT_TOKEN},
        "skimage_sources": list(SOURCES),
        "generated_in_s": None,
    }
    _write_lists(out, table, manifest, groups, bases)
    info["generated_in_s"] = round(time.time() - t0, 2)
    (out / "corpus.json").write_text(json.dumps(info, indent=1, sort_keys=True) + "\n")
    return info


def _count(it):
    d = {}
    for x in it:
        d[x] = d.get(x, 0) + 1
    return dict(sorted(d.items()))


def substitute(s, bases):
    """Replace the @KEY@ placeholders in s with bases[KEY] (left alone if absent)."""
    if not bases or s is None:
        return s
    for k, v in bases.items():
        s = s.replace(f"@{k}@", v.rstrip("/"))
    return s


def _write_lists(out, table, manifest, groups, bases=None):
    """Write urls.{csv,jsonl,parquet}, manifest.json and duplicates.json into out."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    out = Path(out)
    sub = lambda u: substitute(u, bases)  # noqa: E731
    table = [dict(r, URL=sub(r["URL"])) for r in table]
    cols = ["URL", "TEXT", "WIDTH", "HEIGHT", "similarity", "punsafe", "pwatermark",
            "AESTHETIC_SCORE", "LANGUAGE"]
    with open(out / "urls.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for r in table:
            w.writerow(["" if r[c] is None else r[c] for c in cols])
    with open(out / "urls.jsonl", "w", encoding="utf-8") as f:
        for r in table:
            f.write(json.dumps({c: r[c] for c in cols}, ensure_ascii=False) + "\n")
    schema = pa.schema([("URL", pa.string()), ("TEXT", pa.string()), ("WIDTH", pa.int64()),
                        ("HEIGHT", pa.int64()), ("similarity", pa.float64()),
                        ("punsafe", pa.float32()), ("pwatermark", pa.float32()),
                        ("AESTHETIC_SCORE", pa.float64()), ("LANGUAGE", pa.string())])
    pq.write_table(pa.Table.from_pylist(table, schema=schema), out / "urls.parquet")
    man = [dict(e, url=sub(e["url"])) for e in manifest]
    (out / "manifest.json").write_text(json.dumps(man, indent=0, ensure_ascii=False) + "\n")
    g = {"exact": [[sub(u) for u in x] for x in groups["exact"]],
         "near": [[sub(u) for u in x] for x in groups["near"]],
         "same_url": [sub(u) for u in groups["same_url"]],
         "note": "exact: same bytes under different URLs; near: the same picture "
                 "re-encoded at another quality/format or rescaled (exact copies of a "
                 "member are in its near group too); same_url: URLs listed more than once"}
    (out / "duplicates.json").write_text(json.dumps(g, indent=1, ensure_ascii=False) + "\n")


def write_substituted(corpus, dest, bases):
    """Write corpus's URL lists, manifest and duplicates with real bases into dest."""
    corpus, dest = Path(corpus), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    manifest = json.loads((corpus / "manifest.json").read_text())
    groups = json.loads((corpus / "duplicates.json").read_text())
    import pyarrow.parquet as pq
    table = pq.read_table(corpus / "urls.parquet").to_pylist()
    _write_lists(dest, table, manifest, groups, bases)


def ensure_corpus(count=DEFAULT_COUNT, seed=0, root=None, jobs=None, quiet=True):
    """Return the directory of a finished corpus for (count, seed), generating it into the
    cache (root, default $PIXELMILL_FAKENET_CACHE or ~/.cache/pixelmill/fakenet) if
    absent. Safe against concurrent callers (build in a temp dir, then rename)."""
    root = Path(root) if root else default_cache_root()
    params = params_of(count, seed)
    d = root / f"n{count}-s{seed}-{cache_key(params)}"
    if (d / "corpus.json").exists():
        return d
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{os.getpid()}-{d.name}"
    info = build(tmp, count, seed, jobs)
    try:
        os.rename(tmp, d)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)   # someone else finished first
    for old in root.glob(f"n{count}-s{seed}-*"):  # made by older generator versions
        if old != d:
            shutil.rmtree(old, ignore_errors=True)
    if not quiet:
        print(f"make_corpus: {info['rows']} rows in {info['generated_in_s']} s -> {d}",
              file=sys.stderr)
    return d


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", help="output directory (replaced); default: the cache")
    ap.add_argument("--count", type=int, default=DEFAULT_COUNT, help="rows (default 3000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=None, help="worker processes (default: cores)")
    ap.add_argument("--base-url", action="append", default=[], metavar="[KEY=]URL",
                    help="fill placeholder @KEY@ (HTTP, HTTPS, HTTPS_BADCERT, RAW, CLOSED) "
                         "with URL, e.g. http://127.0.0.1:8080; KEY defaults to HTTP")
    ap.add_argument("--lists", metavar="DIR",
                    help="with --base-url: where the filled-in urls.*, manifest.json and "
                         "duplicates.json go (default: OUT/lists); the corpus itself "
                         "always keeps the placeholders")
    a = ap.parse_args(argv)
    if not features.check("webp"):
        sys.exit("make_corpus: this Pillow lacks WebP support")
    bases = {}
    for b in a.base_url:
        k, v = b.split("=", 1) if "=" in b.split("://")[0] else ("HTTP", b)
        if k not in BASES:
            sys.exit(f"make_corpus: unknown placeholder {k}")
        bases[k] = v
    if a.out:
        out = Path(a.out)
        marker = out / "corpus.json"
        params = params_of(a.count, a.seed)
        if marker.exists() and \
                json.loads(marker.read_text()).get("cache_key") == cache_key(params):
            print(f"make_corpus: {out} is up to date", file=sys.stderr)
        else:
            info = build(out, a.count, a.seed, a.jobs)
            print(f"make_corpus: {info['rows']} rows in {info['generated_in_s']} s -> {out}",
                  file=sys.stderr)
    else:
        out = ensure_corpus(a.count, a.seed, jobs=a.jobs, quiet=False)
    if bases:
        write_substituted(out, a.lists or out / "lists", bases)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
