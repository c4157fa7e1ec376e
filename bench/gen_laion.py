#!/usr/bin/env python3
"""Generate LAION-like image-text metadata as Parquet (seeded, bounded memory).

Columns (LAION-5B naming):
  SAMPLE_ID        int64    unique, shuffled
  URL              string   60-200 chars: https://HOST/PATH/ID.EXT from a set of hosts
  TEXT             string   captions of 5-300 characters, multi-byte UTF-8 now and then;
                            ~0.2% null
  WIDTH, HEIGHT    int32    heavy-tailed (log-normal) around 200-1500, ~0.3% null
  LANGUAGE         string   low cardinality: 'en' most, then de fr es ja zh ...; ~1% null
  NSFW             string   UNLIKELY / UNSURE / NSFW
  similarity       double   ~ N(0.32, 0.03)
  punsafe          float    Beta(0.3, 2.85): > 0.5 for ~3% of rows
  pwatermark       float    Beta(0.4, 1.2): > 0.8 for ~6%; ~1% null
  AESTHETIC_SCORE  float    ~ N(5.0, 0.78): >= 6 for ~10%

Rows are generated and written one row group at a time (default 1,048,576 rows,
snappy), so memory is bounded by one row group whatever --rows is. The output depends
only on (--rows, --seed, --row-group-rows).

  python3 bench/gen_laion.py --rows 20000 --row-group-rows 5000 --seed 1 demo/laion-demo.parquet
"""
import argparse
import os
import sys

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

HOSTS = [
    "i.pinimg.com", "images.squarespace-cdn.com", "cdn.shopify.com", "i.ebayimg.com",
    "img.alicdn.com", "images-na.ssl-images-amazon.com", "upload.wikimedia.org",
    "live.staticflickr.com", "media.istockphoto.com", "www.dhresource.com",
    "static.wixstatic.com", "res.cloudinary.com", "images.unsplash.com",
    "cdn.pixabay.com", "ae01.alicdn.com", "i0.wp.com", "photos.zillowstatic.com",
    "assets.catawiki.nl", "img.freepik.com", "thumbs.dreamstime.com",
]
PATHS = [
    "originals", "736x", "236x/3a/9f", "s-l1600", "content/v1/5a1b2c3d4e5f6a7b8c9d0e1f",
    "files/1/0062/4852/products", "wikipedia/commons/thumb/a/a4", "65535/51234567890",
    "photos/stock-photo", "albu/g/ABCD", "media/8f2e1c_4b7a9d", "image/upload/v1589",
    "photo-1500000000000", "photo/2019/07/25", "kf/HTB1", "wp-content/uploads/2020/05",
    "fp/3f2a9b8c7d", "images/thumb", "premium-photo", "z/stock-image-of",
]
EXTS = [".jpg", ".jpeg", ".png", ".webp", ".jpg?w=1200&ssl=1", "_1280.jpg"]

WORDS = (
    "the a of and with in on for photo image stock vector illustration background white "
    "black red blue green vintage modern set design logo icon woman man girl boy dog cat "
    "flower tree house room kitchen wedding dress shoes bag watch car beach sunset city "
    "portrait abstract pattern seamless texture watercolor art print poster cartoon "
    "isolated close up view of old new beautiful small large wooden metal glass gold "
    "silver table chair lamp garden mountain lake river sky cloud night light dark "
    "christmas summer winter spring autumn cake food coffee cup pizza salad fruit"
).split()
# multi-byte words: Latin-1 supplement, CJK, Cyrillic, emoji (2, 3 and 4-byte UTF-8)
WORDS_MB = ["café", "naïve", "Übersicht", "東京", "猫", "夏の空", "Москва", "фото",
            "résumé", "🐱", "🌸", "niño", "Ελλάδα", "한국어", "ação"]

LANGS = ["en", "de", "fr", "es", "ja", "zh", "ru", "it", "pt", "nl", "pl", "ko", "sv",
         "tr", "ar", "vi", "cs", "id", "fi", "da"]
LANG_P = np.array([0.55, 0.07, 0.06, 0.05, 0.04, 0.04, 0.04, 0.03, 0.03, 0.02, 0.02,
                   0.015, 0.01, 0.01, 0.01, 0.005, 0.005, 0.005, 0.005, 0.005])
LANG_P = LANG_P / LANG_P.sum()

SCHEMA = pa.schema([
    ("SAMPLE_ID", pa.int64()),
    ("URL", pa.string()),
    ("TEXT", pa.string()),
    ("WIDTH", pa.int32()),
    ("HEIGHT", pa.int32()),
    ("LANGUAGE", pa.string()),
    ("NSFW", pa.string()),
    ("similarity", pa.float64()),
    ("punsafe", pa.float32()),
    ("pwatermark", pa.float32()),
    ("AESTHETIC_SCORE", pa.float32()),
])


def _corpus(rng):
    """A long text of random words; captions are word-aligned slices of it."""
    n = 400_000
    words = np.array(WORDS + WORDS_MB, dtype=object)
    p = np.full(len(words), 1.0)
    p[len(WORDS):] = 0.02 * len(WORDS) / len(WORDS_MB)  # ~2% multi-byte words
    p /= p.sum()
    pick = words[rng.choice(len(words), size=n, p=p)]
    data = (" ".join(pick) + " ").encode("utf-8")
    buf = np.frombuffer(data, dtype=np.uint8)
    spaces = np.flatnonzero(buf == 0x20)  # byte index of every separator
    return buf, spaces


def _captions(rng, n, buf, spaces):
    """n captions of ~5-300 characters: slices of the corpus between separators."""
    nwords = np.clip(np.round(rng.lognormal(2.3, 0.75, n)), 1, 55).astype(np.int64)
    start_w = rng.integers(1, len(spaces) - 60, n)
    starts = spaces[start_w - 1] + 1
    ends = spaces[start_w - 1 + nwords]
    lens = ends - starts
    # clamp to 300 bytes, backing off to a separator so UTF-8 stays valid
    over = lens > 300
    if over.any():
        idx = np.searchsorted(spaces, starts[over] + 300, side="right") - 1
        ends[over] = np.maximum(spaces[idx], starts[over] + 5)
        lens = ends - starts
    # short ones (< 6 bytes) take the next word too
    short = lens < 6
    if short.any():
        idx = np.searchsorted(spaces, starts[short] + 6, side="left")
        ends[short] = spaces[idx]
        lens = ends - starts
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lens, out=offsets[1:])
    gather = np.repeat(starts - offsets[:-1], lens) + np.arange(offsets[-1])
    values = buf[gather]
    arr = pa.LargeStringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(values))
    return arr.cast(pa.string())


def _urls(rng, n, ids):
    h = rng.integers(0, len(HOSTS), n)
    p = rng.integers(0, len(PATHS), n)
    e = rng.integers(0, len(EXTS), n)
    # a slug of 14-114 characters makes lengths spread over ~60-200
    slug_len = 14 + np.clip(rng.gamma(2.0, 18.0, n), 0, 100).astype(np.int64)
    slug_src = "-".join(["beautiful", "vintage", "photo", "of", "a", "modern", "house",
                         "with", "garden", "and", "blue", "sky", "in", "summer"] * 4)
    # vectorised "https://%s/%s/%s%016x%s" (same bytes as the per-row format, ~8x faster)
    prefixes = pa.array(["https://%s/%s/" % (hh, pp) for hh in HOSTS for pp in PATHS])
    slugs = pa.array([slug_src[:k] for k in range(115)])
    digits = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
    shifts = np.arange(60, -4, -4, dtype=np.uint64)
    nib = (ids.astype(np.uint64)[:, None] >> shifts[None, :]) & np.uint64(15)
    hexa = pa.StringArray.from_buffers(
        n, pa.py_buffer(np.arange(0, 16 * n + 1, 16, dtype=np.int32)),
        pa.py_buffer(digits[nib.astype(np.int64)].reshape(-1)))
    return pc.binary_join_element_wise(prefixes.take(pa.array(h * len(PATHS) + p)),
                                       slugs.take(pa.array(slug_len)), hexa,
                                       pa.array(EXTS).take(pa.array(e)), "")


def _with_nulls(rng, arr, frac):
    mask = rng.random(len(arr)) < frac
    if isinstance(arr, pa.Array):
        return pc.if_else(pa.array(mask), pa.nulls(len(arr), arr.type), arr)
    return pa.array(arr, mask=mask)


def generate_chunk(rng, first_id, n, ids_perm, corpus):
    buf, spaces = corpus
    ids = ids_perm(first_id, n)
    dims = []
    for _ in range(2):
        d = np.clip(np.round(rng.lognormal(np.log(560.0), 0.5, n)), 32, 12000).astype(np.int32)
        dims.append(_with_nulls(rng, d, 0.003))
    lang = np.array(LANGS, dtype=object)[rng.choice(len(LANGS), n, p=LANG_P)]
    nsfw = np.array(["UNLIKELY", "UNSURE", "NSFW"], dtype=object)[
        rng.choice(3, n, p=[0.93, 0.05, 0.02])]
    cols = [
        pa.array(ids, type=pa.int64()),
        _urls(rng, n, ids),
        _with_nulls(rng, _captions(rng, n, buf, spaces), 0.002),
        dims[0],
        dims[1],
        _with_nulls(rng, pa.array(lang, type=pa.string()), 0.01),
        pa.array(nsfw, type=pa.string()),
        pa.array(rng.normal(0.32, 0.03, n), type=pa.float64()),
        pa.array(rng.beta(0.3, 2.85, n).astype(np.float32), type=pa.float32()),
        _with_nulls(rng, rng.beta(0.4, 1.2, n).astype(np.float32), 0.01),
        pa.array(rng.normal(5.0, 0.78, n).astype(np.float32), type=pa.float32()),
    ]
    return pa.Table.from_arrays(cols, schema=SCHEMA)


def write(path, rows, seed=1, row_group_rows=1 << 20, progress=False):
    """Write `rows` LAION-like rows to `path` (atomically: temp name + rename)."""
    rng = np.random.default_rng(seed)
    corpus = _corpus(rng)
    # SAMPLE_ID: a bijective scramble of the row index (unique, not sorted)
    mult = 0x9E3779B97F4A7C15 & ((1 << 63) - 1) | 1

    def ids_perm(first, n):
        idx = np.arange(first, first + n, dtype=np.uint64)
        return ((idx * np.uint64(mult)) & np.uint64((1 << 63) - 1)).astype(np.int64)

    tmp = path + ".tmp"
    with pq.ParquetWriter(tmp, SCHEMA, compression="snappy") as w:
        done = 0
        while done < rows:
            n = min(row_group_rows, rows - done)
            w.write_table(generate_chunk(rng, done, n, ids_perm, corpus),
                          row_group_size=row_group_rows)
            done += n
            if progress:
                print(f"gen_laion: {done}/{rows} rows", file=sys.stderr)
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", help="output .parquet path")
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--row-group-rows", type=int, default=1 << 20)
    ap.add_argument("--progress", action="store_true")
    a = ap.parse_args()
    if a.rows < 0 or a.row_group_rows < 1:
        ap.error("--rows must be >= 0 and --row-group-rows >= 1")
    write(a.out, a.rows, a.seed, a.row_group_rows, a.progress)


if __name__ == "__main__":
    main()
