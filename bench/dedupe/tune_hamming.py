"""Precision and recall of `dedupe --by phash` for Hamming radius K = 2..10 on a labelled
set of real photographs, and pair decisions compared with imagededup's PHash.

The set (built in a temporary directory, seeded):
- *bases*: non-overlapping square tiles cut from the real photographs that ship with
  scikit-image (the fake internet's sources, tests/fakenet/make_corpus.py), each scaled to
  256x256 and saved as PNG. Tiles of one photo are distinct images that often look alike
  (sky, skin, texture photos such as grass, gravel, brick): the hard negatives.
- *near-duplicates* of each base: JPEG re-encodes at q30 and q90, rescales to 0.5x and
  1.5x, a crop of 4% per side, and a watermark-like overlay (a translucent bar with text
  across the lower part).
Ground truth: two images are duplicates iff they come from the same base.

For every K, hashes come from `pm_image_tool phash` (the downloader's pHash) and the
clusters from `pm_dedupe_near_check` (the real dedupe_near module: transitive clusters).
Printed per K: pair precision/recall of the clusters, recall per edit kind, and the
direct pair decisions (distance <= K) of ours and of imagededup's PHash (its own hash
and its find_duplicates at the same threshold): precision, recall, agreement.

  python3 bench/dedupe/tune_hamming.py --build build [--tiles 24] [--json out.json]
"""
import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fakenet"))
import make_corpus  # noqa: E402  (source photos)
sys.path.insert(0, os.path.dirname(__file__))
from compare_imagededup import load_phash  # noqa: E402

EDITS = ("q30", "q90", "half", "up", "crop", "mark")


def edit(im, kind, rng):
    w, h = im.size
    if kind == "half":
        return im.resize((w // 2, h // 2), Image.LANCZOS)
    if kind == "up":
        return im.resize((w * 3 // 2, h * 3 // 2), Image.BICUBIC)
    if kind == "crop":
        d = w * 4 // 100
        return im.crop((d, d, w - d, h - d))
    if kind == "mark":
        over = Image.new("RGBA", im.size, (0, 0, 0, 0))
        dr = ImageDraw.Draw(over)
        y = int(h * rng.uniform(0.72, 0.82))
        dr.rectangle((0, y, w, y + h // 8), fill=(255, 255, 255, 110))
        dr.text((w // 10, y + 4), "(c) stock-photos.example", fill=(0, 0, 0, 200))
        return Image.alpha_composite(im.convert("RGBA"), over).convert("RGB")
    return im


def build_set(out, tiles_per_photo, seed):
    rng = np.random.default_rng(seed)
    src = make_corpus.source_dir()
    files, group, kinds = [], [], []
    g = 0
    for name in make_corpus.SOURCES:
        im = Image.open(src / name).convert("RGB")
        w, h = im.size
        t = max(96, min(w, h) // 4)
        cells = [(x, y) for y in range(0, h - t + 1, t) for x in range(0, w - t + 1, t)]
        rng.shuffle(cells)
        for x, y in cells[:tiles_per_photo]:
            base = im.crop((x, y, x + t, y + t)).resize((256, 256), Image.LANCZOS)
            p = os.path.join(out, f"g{g}_base.png")
            base.save(p)
            files.append(p), group.append(g), kinds.append("base")
            for kind in EDITS:
                q = 30 if kind == "q30" else 90
                p = os.path.join(out, f"g{g}_{kind}.jpg")
                edit(base, kind, rng).save(p, quality=q)
                files.append(p), group.append(g), kinds.append(kind)
            g += 1
    return files, np.array(group), kinds


def popcount64(x):
    x = x.view(np.uint8).reshape(x.shape + (8,))
    return np.unpackbits(x, axis=-1).sum(axis=-1)


def pair_matrix(hashes):
    h = np.array(hashes, dtype=np.uint64)
    return popcount64(h[:, None] ^ h[None, :])


def clusters(build, hashes, k, tmp):
    path = os.path.join(tmp, "hashes.txt")
    with open(path, "w") as f:
        for i, h in enumerate(hashes):
            f.write(f"{h:x} {i}\n")
    subprocess.run([os.path.join(build, "pm_dedupe_near_check"), path, str(k)],
                   capture_output=True, check=True)
    keep = np.zeros(len(hashes), dtype=np.int64)
    for line in open(path + ".out.0"):
        p = line.split()
        if p[0] != "stats":
            keep[int(p[0])] = int(p[1])
    return keep


def pr(pred, truth, iu):
    tp = int((pred & truth)[iu].sum())
    npred, ntrue = int(pred[iu].sum()), int(truth[iu].sum())
    return (tp / npred if npred else 1.0), tp / ntrue


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--tiles", type=int, default=24, help="tiles per source photo")
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--json")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        files, group, kinds = build_set(tmp, a.tiles, a.seed)
        ours = []
        for i in range(0, len(files), 400):
            r = subprocess.run([os.path.join(a.build, "pm_image_tool"), "phash",
                                *files[i:i + 400]], capture_output=True, text=True, check=True)
            ours += [int(x, 16) for x in r.stdout.split()]
        PHash = load_phash()
        logging.disable(logging.INFO)  # imagededup logs every search
        ph = PHash(verbose=False)
        theirs_hex = {os.path.basename(f): ph.encode_image(image_file=f) for f in files}
        theirs = [int(theirs_hex[os.path.basename(f)], 16) for f in files]
        n = len(files)
        truth = group[:, None] == group[None, :]
        iu = np.triu_indices(n, 1)
        d_ours, d_theirs = pair_matrix(ours), pair_matrix(theirs)
        is_base = np.array([k == "base" for k in kinds])
        print(f"set: {n} images, {group.max() + 1} bases x (base + {len(EDITS)} edits), "
              f"{int(truth[iu].sum())} duplicate pairs of {len(iu[0])}")
        same = d_ours[iu][truth[iu]]
        diff = d_ours[iu][~truth[iu]]
        print("ours: duplicate-pair distance percentiles 50/90/99/max "
              f"{np.percentile(same, [50, 90, 99]).tolist()} {same.max()}; distinct-pair "
              f"min/0.01%/0.1%/1% {diff.min()} {np.percentile(diff, [0.01, 0.1, 1]).tolist()}")
        rows = []
        for k in range(2, 11):
            keep = clusters(a.build, ours, k, tmp)
            cl = keep[:, None] == keep[None, :]
            cp, cr = pr(cl, truth, iu)
            per_edit = {}
            for kind in EDITS:
                sel = np.array([kk == kind for kk in kinds])
                base_of = {group[i]: i for i in np.nonzero(is_base)[0]}
                hit = [keep[i] == keep[base_of[group[i]]] for i in np.nonzero(sel)[0]]
                per_edit[kind] = float(np.mean(hit))
            dp, dr = pr(d_ours <= k, truth, iu)
            tp_, tr_ = pr(d_theirs <= k, truth, iu)
            # imagededup's own search at the same threshold (its pair decisions)
            enc = {str(i): f"{h:016x}" for i, h in enumerate(theirs)}
            found = ph.find_duplicates(encoding_map=enc, max_distance_threshold=k,
                                       scores=False, num_dist_workers=0)
            tm = np.zeros((n, n), dtype=bool)
            for x, lst in found.items():
                for y in lst:
                    tm[int(x), int(y)] = tm[int(y), int(x)] = True
            assert (tm[iu] == (d_theirs <= k)[iu]).all(), "imagededup search != distance <= K"
            ours_d, theirs_d = (d_ours <= k)[iu], tm[iu]
            agree = float((ours_d == theirs_d).mean())
            jacc = float((ours_d & theirs_d).sum() / max(1, (ours_d | theirs_d).sum()))
            row = dict(K=k, cluster_precision=cp, cluster_recall=cr, recall_by_edit=per_edit,
                       pair_precision=dp, pair_recall=dr, imagededup_precision=tp_,
                       imagededup_recall=tr_, pair_agreement=agree, pair_jaccard=jacc,
                       clusters_with_distinct_bases=int(sum(
                           len(set(group[keep == c])) > 1 for c in np.unique(keep))))
            rows.append(row)
            edits = " ".join(f"{e} {v:.3f}" for e, v in per_edit.items())
            print(f"K {k:2d} | clusters P {cp:.4f} R {cr:.4f} (mixed clusters "
                  f"{row['clusters_with_distinct_bases']}) | recall by edit: {edits} | "
                  f"pairs d<=K: ours P {dp:.4f} R {dr:.4f}, imagededup P {tp_:.4f} "
                  f"R {tr_:.4f}, same decision {agree:.5f}, Jaccard {jacc:.3f}")
        if a.json:
            with open(a.json, "w") as f:
                json.dump(dict(images=n, bases=int(group.max() + 1), edits=EDITS, rows=rows),
                          f, indent=1)


if __name__ == "__main__":
    main()
