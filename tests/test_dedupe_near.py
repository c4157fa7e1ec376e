"""Global near-duplicate dedupe under real mpirun: clusters are the connected components
of "Hamming distance <= K" over 64-bit hashes; every record's keeper is its cluster's
highest-priority record, ties to the lowest id. Compared against a brute-force O(n^2)
reference, identical for 1, 2 and 4 ranks and with memory-limited rounds."""
import random

import numpy as np
import pytest

from conftest import mpirun, run, tool

M64 = (1 << 64) - 1


def flip(rng, h, nbits, positions=range(64)):
    for b in rng.sample(list(positions), nbits):
        h ^= 1 << b
    return h


def make_hashes(k, seed):
    """Planted structure, returned as a list of hashes (duplicates allowed) plus the
    pairs at distance exactly k+1 that the reference must keep apart."""
    rng = random.Random(seed)
    hs = []
    # clusters: a base and members within <= k flips of it
    for _ in range(250):
        base = rng.getrandbits(64)
        hs.append(base)
        for _ in range(rng.randint(1, 5)):
            hs.append(flip(rng, base, rng.randint(0, k)))
    # chains: each link exactly k flips from the previous one, so the ends are far apart
    for _ in range(30):
        h = rng.getrandbits(64)
        for _ in range(rng.randint(2, 12)):
            hs.append(h)
            h = flip(rng, h, k)
    # pairs at distance k+1: must stay apart
    apart = []
    for _ in range(100):
        a = rng.getrandbits(64)
        b = flip(rng, a, k + 1)
        hs += [a, b]
        apart.append((a, b))
    # dense clouds: many distinct hashes differing only inside a narrow window, so band
    # groups are large and the recursive split and the clique path are exercised
    for width, count in ((14, 400), (6, 150), (24, 300)):
        base = rng.getrandbits(64)
        lo = rng.randint(0, 64 - width)
        for _ in range(count):
            hs.append(base ^ (rng.getrandbits(width) << lo))
    # exact duplicates of existing hashes
    for _ in range(300):
        hs.append(rng.choice(hs))
    # random singletons
    hs += [rng.getrandbits(64) for _ in range(1500)]
    return hs, apart


def reference(hashes, ids, prio, k):
    """Connected components by brute force over all pairs, keeper by (-priority, id)."""
    n = len(hashes)
    arr = np.array(hashes, dtype=np.uint64)
    parent = list(range(n))

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i in range(n - 1):
        d = np.bitwise_count(arr[i + 1:] ^ arr[i])
        for j in np.nonzero(d <= k)[0]:
            a, b = find(i), find(i + 1 + int(j))
            if a != b:
                parent[a] = b
    best = {}
    for i in range(n):
        r = find(i)
        key = (-prio[i], ids[i])
        if r not in best or key < best[r]:
            best[r] = key
    return {ids[i]: best[find(i)][1] for i in range(n)}, find


def write_input(path, hashes, ids, prio):
    with open(path, "w") as f:
        for n, (h, i) in enumerate(zip(hashes, ids)):
            f.write(f"{h:x} {i} {prio[n]}\n" if prio is not None else f"{h:x} {i}\n")


def run_tool(path, k, np_, limit=0):
    args = [tool("pm_dedupe_near_check"), path, k, limit]
    run(args) if np_ == 1 else mpirun(np_, args)
    keep, stats, lines = {}, None, []
    for r in range(np_):
        for line in open(f"{path}.out.{r}").read().splitlines():
            parts = line.split()
            if parts[0] == "stats":
                stats = tuple(map(int, parts[1:]))
            else:
                keep[int(parts[0])] = int(parts[1])
                lines.append(line)
    return keep, stats, "\n".join(sorted(lines))


@pytest.mark.parametrize("k", [0, 2, 4, 8, 10])
def test_clusters_match_reference(tmp_path, k):
    hashes, apart = make_hashes(k, seed=100 + k)
    rng = random.Random(k)
    ids = rng.sample(range(10 * len(hashes)), len(hashes))  # unique, random order
    prio = None
    if k == 4:  # caller-supplied priority: keeper = highest priority, then lowest id
        prio = [rng.choice([0, 0, 1, 5, 1000]) for _ in hashes]
    path = tmp_path / "recs.txt"
    write_input(path, hashes, ids, prio)
    expected, find = reference(hashes, ids, prio or [0] * len(hashes), k)
    ndup = sum(1 for i, kk in expected.items() if i != kk)
    assert ndup > 200  # the planted structure is really there

    index = {h: n for n, h in enumerate(hashes)}
    separate = sum(1 for a, b in apart if find(index[a]) != find(index[b]))
    assert separate > 90  # distance k+1 pairs stay apart (unless joined through others)

    outputs = []
    for np_, limit in ((1, 0), (2, 0), (4, 0), (3, 20000), (1, 20000)):
        keep, stats, text = run_tool(path, k, np_, limit)
        assert keep == expected, f"np={np_} limit={limit}"
        assert stats[0] == len(hashes) and stats[1] == ndup
        assert stats[2] == len(set(hashes))
        if limit:
            assert stats[3] > 1  # the memory limit forced several rounds
        outputs.append(text)
    assert all(t == outputs[0] for t in outputs)


def test_radius_too_large_is_refused(tmp_path):
    path = tmp_path / "recs.txt"
    write_input(path, [1, 2], [1, 2], None)
    r = run([tool("pm_dedupe_near_check"), path, 40], check=False)
    assert r.returncode != 0 and "radius" in r.stderr
