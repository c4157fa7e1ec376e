"""A small source dataset in the layout `pixelmill download` writes (DESIGN §1), made in
Python so the pack/verify tests do not depend on the download stage: per shard NNNNN.tar
(ustar; KEY.jpg, KEY.txt, KEY.json, samples in row order), NNNNN.parquet (one row per
input row: key, url, caption, status, error_message, width, height, original_width,
original_height, content_hash, phash, plus a carried column), NNNNN_stats.json and
dataset.json (wids index with xxh3)."""
import io
import json
import random
import tarfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import xxhash
from PIL import Image

from dataset_fixture import add_member, dataset_index, sidecar_table  # noqa: F401

STATUSES = ["failed_to_download", "failed_to_decode", "filtered"]


def jpeg(rng, w, h):
    # smooth random image: decodes to something non-trivial, compresses a little
    base = rng.integers(0, 255, size=(max(1, h // 8), max(1, w // 8), 3), dtype=np.uint8)
    img = Image.fromarray(base).resize((w, h), Image.BILINEAR)
    b = io.BytesIO()
    img.save(b, format="JPEG", quality=90)
    return b.getvalue()


def key_of(shard, row, rows_per_shard, digits=5):
    s = 0
    while 10 ** s < rows_per_shard:
        s += 1
    return "%0*d" % (digits + s, shard * 10 ** s + row)


def make_dataset(out, nshards=3, rows=12, seed=1, fail_every=5, sizes=((40, 30), (24, 36))):
    """Write the dataset to directory `out`; returns {key: dict(row info, jpg bytes)} of
    the successful samples in global order."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    prng = random.Random(seed)
    samples = {}
    shardlist = []
    totals = {}
    for sh in range(nshards):
        name = "%05d" % sh
        cols = {k: [] for k in ["key", "url", "caption", "status", "error_message", "width",
                                "height", "original_width", "original_height", "content_hash",
                                "phash", "aesthetic"]}
        buf = io.BytesIO()
        status_counts = {}
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tf:
            for r in range(rows):
                key = key_of(sh, r, rows)
                url = f"http://example.com/{sh}/{r}.jpg"
                caption = f"caption {sh}-{r} \u00e9t\u00e9"
                ok = fail_every == 0 or (r % fail_every) != fail_every - 1
                status = "success" if ok else STATUSES[r % len(STATUSES)]
                status_counts[status] = status_counts.get(status, 0) + 1
                w, h = sizes[(sh + r) % len(sizes)]
                cols["key"].append(key)
                cols["url"].append(url)
                cols["caption"].append(caption)
                cols["status"].append(status)
                cols["aesthetic"].append(round(prng.random() * 10, 3))
                if ok:
                    data = jpeg(rng, w, h)
                    meta = {"key": key, "url": url, "caption": caption, "status": "success",
                            "width": w, "height": h, "original_width": w * 2,
                            "original_height": h * 2}
                    add_member(tf, key + ".jpg", data)
                    add_member(tf, key + ".txt", caption.encode())
                    add_member(tf, key + ".json", json.dumps(meta).encode())
                    cols["error_message"].append(None)
                    for k, v in (("width", w), ("height", h), ("original_width", w * 2),
                                 ("original_height", h * 2)):
                        cols[k].append(v)
                    cols["content_hash"].append(xxhash.xxh3_128_hexdigest(data))
                    cols["phash"].append(prng.getrandbits(63))
                    samples[key] = dict(shard=sh, row=r, caption=caption, url=url, jpg=data,
                                        width=w, height=h)
                else:
                    cols["error_message"].append("boom")
                    for k in ("width", "height", "original_width", "original_height",
                              "content_hash", "phash"):
                        cols[k].append(None)
        tar = buf.getvalue()
        (out / f"{name}.tar").write_bytes(tar)
        table = sidecar_table(cols)  # aesthetic: float64
        pq.write_table(table, out / f"{name}.parquet")
        nsamples = status_counts.get("success", 0)
        h = xxhash.xxh3_128_hexdigest(tar)
        stats = {"shard": sh, "name": name, "url": f"{name}.tar", "count": rows,
                 "successes": nsamples, "filesize": len(tar), "xxh3": h,
                 "status": status_counts, "errors": {}, "bytes": {}, "durations": {},
                 "start_time": 0.0, "end_time": 0.0, "tool_version": "fixture"}
        (out / f"{name}_stats.json").write_text(json.dumps(stats, indent=2) + "\n")
        shardlist.append({"url": f"{name}.tar", "nsamples": nsamples, "filesize": len(tar),
                          "xxh3": h, "rows": rows})
        for k, v in status_counts.items():
            totals[k] = totals.get(k, 0) + v
    index = dataset_index("fixture", shardlist, {
        "shards": nshards, "rows": nshards * rows,
        "nsamples": sum(s["nsamples"] for s in shardlist), "status": totals})
    (out / "dataset.json").write_text(json.dumps(index, indent=2) + "\n")
    return samples


def upload_dir(client, bucket, prefix, directory):
    """Copy a directory tree to s3://bucket/prefix/ (recursively)."""
    directory = Path(directory)
    for p in sorted(directory.rglob("*")):
        if p.is_file():
            rel = p.relative_to(directory).as_posix()
            client.put_object(Bucket=bucket, Key=f"{prefix}/{rel}", Body=p.read_bytes())
