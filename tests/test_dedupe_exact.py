"""Global exact dedupe under real mpirun: every record's keeper is the lowest id with the
same 128-bit hash, identical for 1, 2 and 4 ranks and with memory-limited rounds."""
import os
import random

import pytest

from conftest import mpirun, run, tool


def make_records(path, n=20000, seed=7, p_dup=0.4):
    rng = random.Random(seed)
    groups = [(rng.getrandbits(64), rng.getrandbits(64)) for _ in range(n // 10)]
    recs = []
    for i in rng.sample(range(10 * n), n):  # unique ids in random order
        if rng.random() < p_dup:
            h = rng.choice(groups)
        else:
            h = (rng.getrandbits(64), rng.getrandbits(64))
        recs.append((h, i))
    # two hashes that share the low 64 bits but differ in the high ones are distinct
    recs.append(((1, 99), 10 * n + 1))
    recs.append(((2, 99), 10 * n + 2))
    # hashes that share hash_lo and differ in hash_hi by the same bit in both 32-bit halves
    # fold to the same 32-bit fingerprint (filters/dedupe_exact.c): distinct groups that
    # meet in one table slot, each with 1..3 copies
    next_id = 10 * n + 3
    for _ in range(30):
        lo, base = rng.getrandbits(64), rng.getrandbits(64)
        for j in range(rng.randint(2, 5)):
            for _ in range(rng.randint(1, 3)):
                recs.append(((base ^ (j * 0x100000001), lo), next_id + rng.randint(0, 5)))
                next_id += 10
    rng.shuffle(recs)
    expected = write_records(path, recs)
    ndup = sum(1 for i, k in expected.items() if i != k)
    return expected, ndup


def write_records(path, recs):
    """Write ((hi, lo), id) records for pm_dedupe_exact_check; return id -> expected keeper."""
    with open(path, "w") as f:
        for (hi, lo), i in recs:
            f.write(f"{hi:x} {lo:x} {i}\n")
    best = {}
    for h, i in recs:
        best[h] = min(best.get(h, i), i)
    return {i: best[h] for h, i in recs}


def parse(out):
    keep, stats = {}, None
    for line in out.splitlines():
        parts = line.split()
        if parts[0] == "stats":
            stats = tuple(map(int, parts[1:]))
        else:
            keep[int(parts[0])] = int(parts[1])
    return keep, stats


# (1, 100000): rounds on one rank (a separate work array instead of keeper[]). n=200000 on
# one rank: 16 buckets whose records to compare fill keeper[]'s spare room several times
# (passes over bucket ranges).
@pytest.mark.parametrize(
    "np_,limit,n", [(1, 0, 20000), (2, 0, 20000), (4, 0, 20000), (3, 100000, 20000),
                    (1, 100000, 20000), (1, 0, 200000)])
def test_keepers_match_reference(tmp_path, np_, limit, n):
    path = tmp_path / "recs.txt"
    expected, ndup = make_records(path, n)
    args = [tool("pm_dedupe_exact_check"), path, limit]
    run(args) if np_ == 1 else mpirun(np_, args)
    keep, stats = parse("".join(open(f"{path}.out.{r}").read() for r in range(np_)))
    assert keep == expected
    assert stats[0] == len(expected) and stats[1] == ndup
    if limit:
        assert stats[3] > 1  # the memory limit forced several rounds


# PIXELMILL_DEDUPE_SCALE shrinks buckets and exchange steps (filters/dedupe_exact.c) so that
# 20000 records take many buckets, several phase-1 and phase-2 steps on several ranks and,
# with many marked records (p_dup 0.4 and 0.9), several passes over the spill; with few
# (p_dup 0.1), one pass filled from a bitmap of the marked positions; with a memory limit
# also rounds. The keepers must not change.
@pytest.mark.parametrize("np_,limit,p_dup", [(1, 0, 0.4), (2, 0, 0.4), (3, 0, 0.9),
                                            (4, 0, 0.4), (2, 100000, 0.9), (2, 0, 0.1),
                                            (4, 0, 0.1)])
def test_small_steps_match_reference(tmp_path, np_, limit, p_dup):
    path = tmp_path / "recs.txt"
    expected, ndup = make_records(path, 20000, seed=11, p_dup=p_dup)
    args = [tool("pm_dedupe_exact_check"), path, limit]
    env = dict(os.environ, PIXELMILL_DEDUPE_SCALE="2048")
    run(args, env=env) if np_ == 1 else mpirun(np_, args, env=env)
    keep, stats = parse("".join(open(f"{path}.out.{r}").read() for r in range(np_)))
    assert keep == expected
    assert stats[0] == len(expected) and stats[1] == ndup
    if limit:
        assert stats[3] > 1


@pytest.mark.parametrize("np_,parts", [(1, 1), (1, 7), (2, 5), (3, 16)])
def test_spill_matches_reference(tmp_path, np_, parts):
    """dedupe_spill (filters/dedupe_spill.h): in memory (1 part) and through part files on
    disk, the same keepers as the reference; the part files are gone afterwards."""
    path = tmp_path / "recs.txt"
    expected, ndup = make_records(path)
    spill = tmp_path / "spill"
    args = [tool("pm_dedupe_exact_check"), path, 0, parts, spill]
    run(args) if np_ == 1 else mpirun(np_, args)
    keep, stats = parse("".join(open(f"{path}.out.{r}").read() for r in range(np_)))
    assert keep == expected
    assert stats[0] == len(expected) and stats[1] == ndup
    assert stats[3] == parts  # one dedupe_exact round per part
    assert not spill.exists()


# Every record in a group of ~10 copies: on one rank every record is marked for comparison,
# so the comparison copies cannot share keeper[]'s memory and take their own (and, with a
# limit, several passes over bucket ranges). Also two groups that hold half the records.
@pytest.mark.parametrize("np_,limit,n_groups", [(1, 0, None), (1, 100000, None), (2, 0, None),
                                                (1, 0, 2)])
def test_all_duplicates(tmp_path, np_, limit, n_groups):
    path = tmp_path / "recs.txt"
    n = 20000
    rng = random.Random(11)
    k = n_groups or n // 10
    groups = [(rng.getrandbits(64), rng.getrandbits(64)) for _ in range(k)]
    recs = [(groups[j % k], i) for j, i in enumerate(rng.sample(range(10 * n), n))]
    expected = write_records(path, recs)
    args = [tool("pm_dedupe_exact_check"), path, limit]
    run(args) if np_ == 1 else mpirun(np_, args)
    keep, stats = parse("".join(open(f"{path}.out.{r}").read() for r in range(np_)))
    assert keep == expected
    assert stats[1] == n - k and stats[2] == k


# On several ranks the answers for a rank's records return into the spill's room in keeper[]
# itself (filters/dedupe_exact.c, keeper_finish): with 20000 records per rank, 1000 pairs,
# the 2000 marked records' positions take keeper words [0, 1000) and the answers [1000,
# 3000). The duplicates (the pair member with the higher id) sit at `dup_at` on each rank:
# all under the answers (1000: they are copied out), half of them (2500: a second pass), or
# none (0).
@pytest.mark.parametrize("dup_at", [1000, 2500, 0])
def test_answers_in_keeper_room(tmp_path, dup_at):
    path = tmp_path / "recs.txt"
    rng = random.Random(dup_at)
    per_rank, pairs = 20000, 1000
    keeper_at = 5000 if dup_at < 5000 else 0
    layout = []
    for rank in range(2):
        local = [None] * per_rank
        for j in range(pairs):
            h = (rng.getrandbits(64), rng.getrandbits(64))
            local[keeper_at + j] = (h, 2 * j + rank * 10 ** 6)  # the lower id keeps
            local[dup_at + j] = (h, 2 * j + 1 + rank * 10 ** 6)
        for p in range(per_rank):
            if local[p] is None:
                local[p] = ((rng.getrandbits(64), rng.getrandbits(64)), 3 * 10 ** 6 + 2 * p + rank)
        layout.append(local)
    recs = [layout[line % 2][line // 2] for line in range(2 * per_rank)]  # rank = line % 2
    expected = write_records(path, recs)
    mpirun(2, [tool("pm_dedupe_exact_check"), path, 0])
    keep, stats = parse("".join(open(f"{path}.out.{r}").read() for r in range(2)))
    assert keep == expected
    assert stats[1] == 2 * pairs


# Few records, every one of them a duplicate, an odd number on some ranks: the marks'
# positions (4 bytes each, rounded up to whole words) and the spill (24 bytes each) do not
# fit in keeper[]; the room left after the marks must not be computed below zero (it once
# was, on 157 records at np 2-4: the spill went past keeper[] and the run crashed or hung).
@pytest.mark.parametrize("np_", [2, 3, 4])
def test_all_duplicates_few_records(tmp_path, np_):
    path = tmp_path / "recs.txt"
    rng = random.Random(np_)
    groups = [(rng.getrandbits(64), rng.getrandbits(64)) for _ in range(50)]
    recs = [(groups[i % 50], 3 * i + 1) for i in range(157)]
    expected = write_records(path, recs)
    mpirun(np_, [tool("pm_dedupe_exact_check"), path, 0], timeout=120)
    keep, stats = parse("".join(open(f"{path}.out.{r}").read() for r in range(np_)))
    assert keep == expected
    assert stats[1] == 157 - 50 and stats[2] == 50


# A rank with no marked records, another that receives none (few records on 4 ranks, the
# duplicates all on ranks 0 and 1): each keeps its phase-2 buffers apart (they once
# coincided in keeper[], the same buffer sent and received, and `filter --dedupe` hung).
def test_ranks_without_duplicates(tmp_path):
    path = tmp_path / "recs.txt"
    rng = random.Random(5)
    recs = []
    for line in range(160):  # rank = line % 4
        if line % 4 < 2 and line < 40:
            h = (7, 1000 + line % 2)  # ranks 0 and 1 share two hashes
        else:
            h = (rng.getrandbits(64), rng.getrandbits(64))
        recs.append((h, line))
    expected = write_records(path, recs)
    mpirun(4, [tool("pm_dedupe_exact_check"), path, 0], timeout=120)
    keep, stats = parse("".join(open(f"{path}.out.{r}").read() for r in range(4)))
    assert keep == expected
    assert stats[1] == 20 - 2
