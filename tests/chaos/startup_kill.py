#!/usr/bin/env python3
"""kill -9 of one rank while an `mpirun -np NP` job starts up, repeated: does mpirun end?

  python3 tests/chaos/startup_kill.py --attempts 100 [--program PATH]

Each attempt starts `mpirun -np NP pixelmill stats demo/laion-demo.parquet --json` (or
`mpirun -np NP PATH`: any MPI program, e.g. one that only calls MPI_Init, MPI_Barrier and
MPI_Finalize) as a chaos.Job, waits until every rank process exists, sleeps a random
0..--window seconds (the ranks are then starting: MPI_Init and the first collectives) and
SIGKILLs one rank. mpirun must then end (exit 137). Job.finish tells two failures apart,
each with the stacks of the job's processes in the attempt's log: mpirun stuck in its own
finalize after every rank ended (OpenMPI's, see below), and a hang (anything else still
there after --timeout seconds). Prints the counts; exit 1 if any attempt hung.

Found with the chaos script (docs/reliability.md): Debian's OpenMPI 4.1.4 mpirun (PMIx 3)
now and then deadlocks in its own finalize (orte_finalize -> PMIx_server_finalize ->
pmix_rte_finalize, waiting on a mutex) after it reported the killed rank, with every rank
already gone; a minimal MPI program does the same (5 of 100 attempts), and so does
PMIX_MCA_gds=hash.
"""
import argparse
import os
import random
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import chaos  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--attempts", type=int, default=50)
    ap.add_argument("--np", type=int, default=3)
    ap.add_argument("--window", type=float, default=0.3)
    ap.add_argument("--timeout", type=float, default=120)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--program", default=None, help="an MPI program to run instead of pixelmill")
    ap.add_argument("--logs", default=None, help="directory for the attempts' logs (kept)")
    a = ap.parse_args(argv)
    rng = random.Random(a.seed)
    prog = [a.program] if a.program else [chaos.pixelmill(), "stats",
                                          chaos.ROOT / "demo" / "laion-demo.parquet", "--json"]
    logs = Path(a.logs or tempfile.mkdtemp(prefix="pm-startup-kill-"))
    logs.mkdir(parents=True, exist_ok=True)
    counts = {"killed": 0, "stuck_in_finalize": 0, "hung": 0}
    for i in range(a.attempts):
        job = chaos.Job(a.np, prog, logs / f"{i}.log")
        if job.wait_ranks():
            time.sleep(rng.uniform(0, a.window))
            ranks = job.ranks()
            if job.p.poll() is None and len(ranks) == a.np:
                try:
                    os.kill(ranks[rng.randrange(a.np)], signal.SIGKILL)
                    counts["killed"] += 1
                except ProcessLookupError:
                    pass
        rc, hung, gone = job.finish(timeout=a.timeout)
        counts["stuck_in_finalize"] += job.stuck_in_finalize
        counts["hung"] += hung or not gone
        if hung or not gone or job.stuck_in_finalize:
            print(f"attempt {i}: exit {rc}, {'hung' if hung else 'mpirun stuck in finalize'}; "
                  f"stacks in {logs / f'{i}.log'}", flush=True)
    print(f"startup_kill: {' '.join(map(str, prog))[-60:]}: {a.attempts} attempts, "
          f"{counts['killed']} killed a rank, {counts['stuck_in_finalize']} left mpirun stuck "
          f"in its finalize, {counts['hung']} hung", flush=True)
    return 1 if counts["hung"] else 0


if __name__ == "__main__":
    sys.exit(main())
