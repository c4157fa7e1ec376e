"""work_counter under real mpirun: each unit is claimed exactly once, and ranks that
are faster claim more units (dynamic balancing, not a static split)."""
import collections

from conftest import mpirun, run, tool


def claims(out):
    return [tuple(map(int, line.split())) for line in out.splitlines() if line.strip()]


def test_single_process_claims_all():
    r = run([tool("pm_work_counter_check"), "50"])
    assert sorted(u for _, u in claims(r.stdout)) == list(range(50))


def test_four_ranks_claim_each_unit_once_and_balance():
    r = mpirun(4, [tool("pm_work_counter_check"), "200"])
    c = claims(r.stdout)
    assert sorted(u for _, u in c) == list(range(200))
    per_rank = collections.Counter(rank for rank, _ in c)
    slow = per_rank[0] + per_rank[2]
    fast = per_rank[1] + per_rank[3]
    assert fast > 2 * slow, per_rank
