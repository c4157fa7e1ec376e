"""A dataset (DESIGN §1 layout) with a known duplicate structure, for tests/test_dedupe.py.

make_dup_dataset(dir, phash_tool) writes shards NNNNN.{tar,parquet,_stats.json} and
dataset.json. Rows (all `success` except a few failures):
  - base pictures: distinct synthetic photos-like images (gradient + shapes + noise);
  - exact copies: the same bytes under another URL;
  - re-encodes: the same pixels as JPEG at other qualities;
  - rescales: the picture resized (0.5x, 1.6x) and re-encoded;
  - look-alikes: distinct pictures sharing a base's background and palette (NOT duplicates);
  - URL duplicates: rows whose URL differs from another row's only by what the URL
    normalisation removes (scheme/host case, default port, fragment); a different query
    is NOT a duplicate.
phash is computed by the project's own image_phash (pm_image_tool phash), as the download
stage does. Returns (table, truth) where truth holds per row: group (near-duplicate
ground truth: base index or a unique id), kind, url_group, content bytes hash.
"""
import io
import json
import os
import subprocess
import tarfile
import tempfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import xxhash
from PIL import Image, ImageDraw

from dataset_fixture import add_member, dataset_index, sidecar_table


def _picture(rng, w=192, h=144, bg=None, palette=None):
    if bg is None:
        bg = rng.integers(0, 256, (2, 3))
    if palette is None:
        palette = rng.integers(0, 256, (6, 3))
    x = np.linspace(0, 1, w)[None, :, None]
    y = np.linspace(0, 1, h)[:, None, None]
    img = bg[0][None, None, :] * (1 - x) + bg[1][None, None, :] * x * (0.7 + 0.3 * y)
    im = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    d = ImageDraw.Draw(im)
    for k in range(7):
        sw, sh = w * rng.uniform(0.15, 0.5), h * rng.uniform(0.15, 0.5)
        x0, y0 = rng.uniform(-sw / 3, w - sw / 2), rng.uniform(-sh / 3, h - sh / 2)
        col = tuple(int(c) for c in palette[k % len(palette)])
        (d.ellipse if rng.random() < 0.5 else d.rectangle)((x0, y0, x0 + sw, y0 + sh), fill=col)
    a = np.asarray(im).astype(np.int16) + rng.integers(-12, 13, (h, w, 3))
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)), bg, palette


def _jpeg(im, q):
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=q)
    return buf.getvalue()


def _phashes(tool, blobs):
    with tempfile.TemporaryDirectory() as d:
        paths = []
        for i, b in enumerate(blobs):
            p = os.path.join(d, f"{i}.jpg")
            with open(p, "wb") as f:
                f.write(b)
            paths.append(p)
        out = subprocess.run([tool, "phash", *paths], check=True, capture_output=True,
                             text=True).stdout.split()
    assert len(out) == len(blobs)
    return [int(h, 16) - (1 << 64) if int(h, 16) >= 1 << 63 else int(h, 16) for h in out]


def make_dup_dataset(out, phash_tool, nbase=50, nlook=25, nshards=4, seed=7):
    rng = np.random.default_rng(seed)
    rows = []  # dicts: url, blob, group, kind, url_group, w, h, ow, oh

    def add(url, blob, group, kind, url_group, size, orig):
        rows.append(dict(url=url, blob=blob, group=group, kind=kind, url_group=url_group,
                         w=size[0], h=size[1], ow=orig[0], oh=orig[1]))

    bases = []
    for b in range(nbase):
        im, bg, pal = _picture(rng)
        bases.append((im, bg, pal))
        orig = (int(rng.integers(200, 3000)), int(rng.integers(200, 3000)))
        blob = _jpeg(im, 85)
        add(f"https://img{b % 3}.example.com/p/{b}.jpg", blob, b, "base", f"u{b}", im.size, orig)
        if b % 2 == 0:
            add(f"https://mirror.example.org/copy/{b}.jpg", blob, b, "exact", f"c{b}", im.size,
                orig)
        if b % 5 == 1:  # URL duplicates by normalisation only
            add(f"HTTPS://IMG{b % 3}.Example.COM:443/p/{b}.jpg#top", _jpeg(im, 84), b, "reencode",
                f"u{b}", im.size, orig)
            add(f"https://img{b % 3}.example.com/p/{b}.jpg?size=large", _jpeg(im, 83), b,
                "reencode", f"q{b}", im.size, orig)
        for q in (40, 95):
            add(f"https://cdn.example.net/{b}/q{q}.jpg", _jpeg(im, q), b, "reencode", f"r{b}{q}",
                im.size, orig)
        for f in (0.5, 1.6):
            sz = (int(im.size[0] * f), int(im.size[1] * f))
            add(f"https://cdn.example.net/{b}/s{f}.jpg",
                _jpeg(im.resize(sz, Image.Resampling.LANCZOS), 88), b, "rescale", f"s{b}{f}", sz,
                (int(orig[0] * f), int(orig[1] * f)))
    for k in range(nlook):
        _, bg, pal = bases[k % nbase]
        im, _, _ = _picture(rng, bg=bg, palette=pal)
        add(f"https://look.example.com/{k}.jpg", _jpeg(im, 85), nbase + k, "lookalike",
            f"l{k}", im.size, im.size)
    order = rng.permutation(len(rows))
    rows = [rows[i] for i in order]
    phs = _phashes(phash_tool, [r["blob"] for r in rows])
    for r, p in zip(rows, phs):
        r["phash"] = p
    # failures sprinkled in (never take part)
    per = (len(rows) + nshards - 1) // nshards
    os.makedirs(out, exist_ok=True)
    shardlist, tables, truth = [], [], []
    for s in range(nshards):
        part = rows[s * per:(s + 1) * per]
        part = part[:3] + [None] + part[3:]  # one failed row per shard
        n = len(part)
        name = f"{s:05d}"
        keys = [f"{name}{j:04d}" for j in range(n)]
        cols = {k: [] for k in ("key", "url", "caption", "status", "width", "height",
                                "original_width", "original_height", "content_hash", "phash")}
        tarbuf = io.BytesIO()
        with tarfile.open(fileobj=tarbuf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for j, r in enumerate(part):
                cols["key"].append(keys[j])
                if r is None:
                    cols["url"].append(f"https://dead.example.com/{s}.jpg")
                    cols["caption"].append("gone")
                    cols["status"].append("failed_to_download")
                    for c in ("width", "height", "original_width", "original_height",
                              "content_hash", "phash"):
                        cols[c].append(None)
                    truth.append(None)
                    continue
                cols["url"].append(r["url"])
                cols["caption"].append(f"{r['kind']} of {r['group']}")
                cols["status"].append("success")
                cols["width"].append(r["w"])
                cols["height"].append(r["h"])
                cols["original_width"].append(r["ow"])
                cols["original_height"].append(r["oh"])
                cols["content_hash"].append(xxhash.xxh3_128_hexdigest(r["blob"]))
                cols["phash"].append(r["phash"])
                add_member(tar, keys[j] + ".jpg", r["blob"])
                add_member(tar, keys[j] + ".txt", cols["caption"][-1].encode())
                truth.append(r)
        tbytes = tarbuf.getvalue()
        t = sidecar_table(cols)
        with open(os.path.join(out, name + ".tar"), "wb") as f:
            f.write(tbytes)
        pq.write_table(t, os.path.join(out, name + ".parquet"))
        ok = sum(1 for r in part if r is not None)
        xx = xxhash.xxh3_128_hexdigest(tbytes)
        with open(os.path.join(out, name + "_stats.json"), "w") as f:
            json.dump({"shard": s, "name": name, "url": name + ".tar", "count": n,
                       "successes": ok, "filesize": len(tbytes), "xxh3": xx,
                       "status": {"success": ok, "failed_to_download": n - ok}}, f)
        shardlist.append({"url": name + ".tar", "nsamples": ok, "filesize": len(tbytes),
                          "xxh3": xx, "rows": n})
        tables.append(t)
    index = dataset_index("dupfixture", shardlist, {
        "shards": nshards, "rows": sum(x["rows"] for x in shardlist),
        "nsamples": sum(x["nsamples"] for x in shardlist)})
    with open(os.path.join(out, "dataset.json"), "w") as f:
        json.dump(index, f, indent=2)
    return pa.concat_tables(tables), truth
