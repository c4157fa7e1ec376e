"""Near-duplicate search: pixelmill dedupe_near vs imagededup's PHash.find_duplicates on
the same synthetic 64-bit hashes (fed as an encoding_map of 16-digit hex strings), at the
same Hamming radius K, in the same run. Prints times, ratios and recall on the planted
near-duplicate pairs.

  python3 bench/dedupe/compare_imagededup.py --build build --n 200000 --k 4

imagededup is imported without its CNN module (which needs torch): only the hashing
search code runs. Its search is single-process here (num_dist_workers=0), and our tool
runs on one rank, so both use one core."""
import argparse
import importlib.util
import os
import resource
import subprocess
import sys
import tempfile
import time
import types

import numpy as np


def load_phash():
    spec = importlib.util.find_spec("imagededup")
    for sub in ("methods", "utils"):  # skip their __init__ files (they import torch)
        mod = types.ModuleType("imagededup." + sub)
        mod.__path__ = [os.path.join(spec.submodule_search_locations[0], sub)]
        sys.modules["imagededup." + sub] = mod
    from imagededup.methods.hashing import PHash
    return PHash


def make_hashes(n, k, seed=1):
    """Groups of 5: a random base; each other member is, with probability 0.2, the base
    with 1..k distinct bits flipped, else a fresh random hash. Returns hashes and the
    planted (member, base) index pairs."""
    rng = np.random.default_rng(seed)
    h = rng.integers(0, 2**64, size=n, dtype=np.uint64)
    planted = []
    for i in range(n):
        if i % 5 == 0 or rng.random() >= 0.2:
            continue
        base = i - i % 5
        flips = rng.choice(64, size=int(rng.integers(1, k + 1)), replace=False)
        x = int(h[base])
        for b in flips:
            x ^= 1 << int(b)
        h[i] = x
        planted.append((i, base))
    return h, planted


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--method", default="brute_force_cython",
                    help="imagededup search_method: brute_force_cython (its Unix default) "
                         "or bktree")
    a = ap.parse_args()
    hashes, planted = make_hashes(a.n, a.k)
    names = [f"img{i}" for i in range(a.n)]

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "hashes.txt")
        with open(path, "w") as f:
            for i, h in enumerate(hashes):
                f.write(f"{int(h):x} {i}\n")
        t0 = time.perf_counter()
        c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        r = subprocess.run([os.path.join(a.build, "pm_dedupe_near_check"), path, str(a.k)],
                           capture_output=True, text=True, check=True)
        ours_wall = time.perf_counter() - t0
        c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        ours_cpu = (c1.ru_utime - c0.ru_utime) + (c1.ru_stime - c0.ru_stime)
        ours_run = float(r.stderr.split("seconds")[1].split()[0])
        keeper = {}
        for line in open(path + ".out.0"):
            p = line.split()
            if p[0] != "stats":
                keeper[int(p[0])] = int(p[1])

    PHash = load_phash()
    enc = {names[i]: f"{int(h):016x}" for i, h in enumerate(hashes)}
    t0, p0 = time.perf_counter(), time.process_time()
    k0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    dups = PHash(verbose=False).find_duplicates(encoding_map=enc, max_distance_threshold=a.k,
                                                scores=False, search_method=a.method,
                                                num_dist_workers=0)
    theirs = time.perf_counter() - t0
    k1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    # its search runs in a worker process even with num_dist_workers=0: count it too
    theirs_cpu = (time.process_time() - p0 + (k1.ru_utime - k0.ru_utime)
                  + (k1.ru_stime - k0.ru_stime))

    idx = {nm: i for i, nm in enumerate(names)}
    their_pairs = {(i, idx[o]) for nm, lst in dups.items() for o in lst
                   for i in [idx[nm]] if i < idx[o]}
    found_theirs = sum(1 for m, b in planted if (min(m, b), max(m, b)) in their_pairs)
    found_ours = sum(1 for m, b in planted if keeper[m] == keeper[b])
    ours_cover = sum(1 for x, y in their_pairs if keeper[x] == keeper[y])
    print(f"compare n {a.n} K {a.k} imagededup({a.method}) {theirs:.2f} s wall "
          f"{theirs_cpu:.2f} s CPU | dedupe_near run {ours_run:.3f} s wall (whole tool process "
          f"incl. file parsing and MPI start: {ours_wall:.2f} s wall, {ours_cpu:.2f} s CPU) | "
          f"speedup wall {theirs / ours_run:.0f}x, CPU vs whole tool "
          f"{theirs_cpu / max(ours_cpu, 1e-3):.0f}x | "
          f"planted pairs {len(planted)}: recall imagededup {found_theirs / len(planted):.4f} "
          f"ours {found_ours / len(planted):.4f} | imagededup pairs {len(their_pairs)}, "
          f"same cluster in ours {ours_cover}")


if __name__ == "__main__":
    main()
