#!/usr/bin/env python3
"""Write a captioned synthetic dataset of coloured shapes that `pixelmill train` reads.

Each sample is one shape (circle, square or triangle) of one colour on a background of
another colour, captioned like "a red circle on a blue background". The dataset is a
directory of webdataset tars (KEY.png or KEY.npy, KEY.txt, KEY.json) and a dataset.json
(wids-style shardlist), as `pixelmill download` writes them. Seeded: the same arguments
give the same bytes.

    python3 demo/make_shapes.py OUT_DIR [--samples 512] [--per-shard 128] [--size 32]
                                [--seed 0] [--npy-every K] [--corrupt K]
"""
import argparse
import io
import json
import math
import random
import struct
import tarfile
from pathlib import Path

from PIL import Image, ImageDraw

COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 170, 40),
    "blue": (30, 60, 220),
    "yellow": (230, 210, 40),
    "white": (240, 240, 240),
    "black": (20, 20, 20),
}
SHAPES = ["circle", "square", "triangle"]


def draw_sample(rng, size):
    """(PIL image, caption, meta) of one random shape."""
    fg, bg = rng.sample(sorted(COLOURS), 2)
    shape = rng.choice(SHAPES)
    img = Image.new("RGB", (size, size), COLOURS[bg])
    d = ImageDraw.Draw(img)
    r = rng.uniform(0.22, 0.34) * size
    cx = rng.uniform(r, size - r)
    cy = rng.uniform(r, size - r)
    if shape == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=COLOURS[fg])
    elif shape == "square":
        d.rectangle([cx - r, cy - r, cx + r, cy + r], fill=COLOURS[fg])
    else:
        d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=COLOURS[fg])
    caption = f"a {fg} {shape} on a {bg} background"
    return img, caption, {"shape": shape, "colour": fg, "background": bg}


def npy_bytes(img):
    """A uint8 HxWx3 array in NPY v1 format (what numpy.save writes)."""
    w, h = img.size
    header = "{'descr': '|u1', 'fortran_order': False, 'shape': (%d, %d, 3), }" % (h, w)
    pad = 64 - (10 + len(header) + 1) % 64
    header = header + " " * (pad % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + img.tobytes()


def add(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def write_dataset(out, samples=512, per_shard=128, size=32, seed=0, npy_every=0, corrupt=0):
    """Write the dataset; returns the list of (key, caption, corrupt?). corrupt: that many samples
    (spread over the set) get an image field of garbage bytes."""
    import xxhash

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    bad = set(random.Random(seed + 1).sample(range(samples), corrupt)) if corrupt else set()
    shards, listing = [], []
    # img2dataset's keys (shards/shard.h): shard id, then the row in ceil(log10(per_shard))
    sdig = math.ceil(math.log10(per_shard)) if per_shard > 1 else 0
    for s0 in range(0, samples, per_shard):
        sid = s0 // per_shard
        url = f"{sid:05d}.tar"
        buf = io.BytesIO()
        n = 0
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for i in range(s0, min(samples, s0 + per_shard)):
                img, caption, meta = draw_sample(rng, size)
                key = f"{sid:05d}{i - s0:0{sdig}d}" if sdig else f"{sid:05d}"
                if i in bad:
                    add(tar, key + ".jpg", b"\xff\xd8\xff\xe0 not really a jpeg")
                elif npy_every and i % npy_every == 0:
                    add(tar, key + ".npy", npy_bytes(img))
                else:
                    png = io.BytesIO()
                    img.save(png, format="PNG")
                    add(tar, key + ".png", png.getvalue())
                add(tar, key + ".txt", caption.encode())
                add(tar, key + ".json", json.dumps({"key": key, "caption": caption,
                                                    **meta}).encode())
                listing.append((f"{sid:05d}/{key}", caption, i in bad))
                n += 1
        data = buf.getvalue()
        (out / url).write_bytes(data)
        shards.append({"url": url, "nsamples": n, "filesize": len(data),
                       "xxh3": xxhash.xxh3_128_hexdigest(data), "rows": n})
    index = {
        "wids_version": 1, "name": out.name, "stage": "demo", "tool_version": "make_shapes.py",
        "checksum_algorithm": "xxh3_128", "shardlist": shards,
        "counts": {"shards": len(shards), "rows": samples, "nsamples": samples,
                   "status": {"success": samples}},
        "config": {"generator": "demo/make_shapes.py", "seed": seed, "size": size},
    }
    (out / "dataset.json").write_text(json.dumps(index, indent=1) + "\n")
    return listing


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out")
    ap.add_argument("--samples", type=int, default=512)
    ap.add_argument("--per-shard", type=int, default=128)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--npy-every", type=int, default=0)
    ap.add_argument("--corrupt", type=int, default=0)
    a = ap.parse_args()
    write_dataset(a.out, a.samples, a.per_shard, a.size, a.seed, a.npy_every, a.corrupt)


if __name__ == "__main__":
    main()
