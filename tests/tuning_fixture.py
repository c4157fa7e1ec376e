"""Build small datasets in pixelmill's on-disk layout (DESIGN §1) for the tuning tests.

make_dataset(dir, ...) writes, per shard NNNNN: NNNNN.tar (plain ustar: KEY.jpg, KEY.txt,
KEY.json per successful row, real JPEGs from PIL), NNNNN.parquet (one row per input row:
key, url, caption, status, error_message, width, height, original_width,
original_height, content_hash, phash, and LAION-like carried columns with nulls),
NNNNN_stats.json, then dataset.json (xxh3-128 of each tar). Seeded: same args, same
bytes. Returns the concatenated sidecar table (pyarrow) for reference computations.
"""
import io
import json
import os
import tarfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import xxhash
from PIL import Image

from dataset_fixture import add_member, dataset_index

STATUSES = ["success", "failed_to_download", "failed_to_decode"]


def _jpeg(rng, w, h, score):
    # A gradient whose colour follows the score, plus noise: visibly different images.
    x = np.linspace(0, 1, w)[None, :, None]
    y = np.linspace(0, 1, h)[:, None, None]
    base = np.array([255 * score / 10, 128 * (1 - x.mean()), 255 * (1 - score / 10)])
    img = (base[None, None, :] * (0.5 + 0.5 * x) * (0.6 + 0.4 * y)
           + rng.integers(0, 40, (h, w, 3)))
    buf = io.BytesIO()
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=80)
    return buf.getvalue()


def make_dataset(out, nshards=3, rows=200, seed=1, image_size=48, dup_every=7):
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(seed)
    sdigits = max(1, int(np.ceil(np.log10(rows))))
    shardlist, tables = [], []
    totals = {}
    for s in range(nshards):
        n = rows
        keys = [f"{s:05d}{j:0{sdigits}d}" for j in range(n)]
        status = rng.choice(STATUSES, n, p=[0.85, 0.1, 0.05])
        ok = status == "success"
        punsafe = rng.beta(0.3, 2.85, n).astype(np.float32)
        pwm = rng.beta(0.4, 1.2, n).astype(np.float32)
        aes = rng.normal(5.0, 0.8, n).astype(np.float32)
        sim = rng.normal(0.32, 0.03, n)
        W = rng.integers(64, 1500, n).astype(np.int32)
        H = rng.integers(64, 1500, n).astype(np.int32)
        # exact threshold values appear (float32 0.1 vs double 0.1, 4.5, 256)
        punsafe[rng.random(n) < 0.05] = np.float32(0.1)
        aes[rng.random(n) < 0.05] = np.float32(4.5)
        W[rng.random(n) < 0.05] = 256
        urls = [f"https://img{j % 5}.example.com/{s}/{j}.jpg" for j in range(n)]
        caps = [f"photo {s}-{j} of a {'red' if j % 2 else 'blue'} thing ünïcode" for j in range(n)]
        for j in range(n):  # exact duplicates across and within shards
            if j % dup_every == 3:
                urls[j] = f"https://img0.example.com/0/{j // 2}.jpg"
        lang = rng.choice(["en", "de", "fr", "ja"], n)
        chash, phash, width, height, err = [], [], [], [], []
        tarbuf = io.BytesIO()
        with tarfile.open(fileobj=tarbuf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for j in range(n):
                if not ok[j]:
                    chash.append(None)
                    phash.append(None)
                    width.append(None)
                    height.append(None)
                    err.append("HTTP 404" if status[j] == "failed_to_download" else "bad image")
                    continue
                score = float(aes[j])
                jpg = _jpeg(rng, image_size, image_size, max(0.0, min(10.0, score)))
                # content duplicates: every 11th sample repeats the bytes of sample j-1
                if j % 11 == 5 and j > 0 and ok[j - 1]:
                    jpg = prev
                prev = jpg
                chash.append(xxhash.xxh3_128_hexdigest(jpg))
                phash.append(int(rng.integers(-2**62, 2**62)))
                width.append(image_size)
                height.append(image_size)
                err.append(None)
                add_member(tar, keys[j] + ".jpg", jpg)
                add_member(tar, keys[j] + ".txt", caps[j].encode())
                add_member(tar, keys[j] + ".json", json.dumps(
                    {"key": keys[j], "url": urls[j], "caption": caps[j],
                     "AESTHETIC_SCORE": score, "punsafe": float(punsafe[j])}).encode())
        tbytes = tarbuf.getvalue()
        # nulls in carried columns
        def nulls(a, frac):
            m = rng.random(n) < frac
            return pa.array(a, mask=m)
        t = pa.table({
            "key": pa.array(keys), "url": pa.array(urls), "caption": pa.array(caps),
            "status": pa.array(status.tolist()), "error_message": pa.array(err, pa.string()),
            "width": pa.array(width, pa.int32()), "height": pa.array(height, pa.int32()),
            "original_width": pa.array([int(w) if o else None for w, o in zip(W, ok)], pa.int32()),
            "original_height": pa.array([int(h) if o else None for h, o in zip(H, ok)], pa.int32()),
            "content_hash": pa.array(chash, pa.string()),
            "phash": pa.array(phash, pa.int64()),
            "punsafe": nulls(punsafe, 0.03), "pwatermark": nulls(pwm, 0.02),
            "AESTHETIC_SCORE": nulls(aes, 0.02), "similarity": nulls(sim, 0.02),
            "WIDTH": nulls(W, 0.01), "HEIGHT": nulls(H.astype(np.float64), 0.02),
            "LANGUAGE": nulls(np.array(lang, dtype=object), 0.02),
        })
        name = f"{s:05d}"
        with open(os.path.join(out, name + ".tar"), "wb") as f:
            f.write(tbytes)
        pq.write_table(t, os.path.join(out, name + ".parquet"), row_group_size=max(1, n // 2))
        counts = {}
        for st in status:
            counts[st] = counts.get(st, 0) + 1
            totals[st] = totals.get(st, 0) + 1
        stats = {"shard": s, "name": name, "url": name + ".tar", "count": n,
                 "successes": int(ok.sum()), "filesize": len(tbytes),
                 "xxh3": xxhash.xxh3_128_hexdigest(tbytes), "status": counts}
        with open(os.path.join(out, name + "_stats.json"), "w") as f:
            json.dump(stats, f)
        shardlist.append({"url": name + ".tar", "nsamples": int(ok.sum()),
                          "filesize": len(tbytes), "xxh3": stats["xxh3"], "rows": n})
        tables.append(t)
    index = dataset_index("fixture", shardlist, {
        "shards": nshards, "rows": nshards * rows,
        "nsamples": sum(x["nsamples"] for x in shardlist), "status": totals})
    with open(os.path.join(out, "dataset.json"), "w") as f:
        json.dump(index, f, indent=2)
    return pa.concat_tables(tables)
