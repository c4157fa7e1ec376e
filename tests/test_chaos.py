"""The chaos script (tests/chaos/chaos.py) in its short form: per stage (download on the
fake internet, dedupe, filter, pack, train) one round with one random kill -9 / stop-signal
interruption of an `mpirun -np 3` job, then a resume that must equal the uninterrupted
run (docs/reliability.md, "Chaos runs"). PIXELMILL_CHAOS_ROUNDS=N runs N rounds per stage
of 3 interruptions each (PIXELMILL_CHAOS_KILLS); the record in docs/reliability.md was
made with the script directly."""
import json
import os
import sys

from conftest import ROOT, SANITIZED

sys.path.insert(0, str(ROOT / "tests" / "chaos"))
import chaos  # noqa: E402


def test_chaos_rounds_every_stage(tmp_path):
    rounds = int(os.environ.get("PIXELMILL_CHAOS_ROUNDS", "1"))
    kills = os.environ.get("PIXELMILL_CHAOS_KILLS", "1" if rounds == 1 or SANITIZED else "3")
    report = tmp_path / "chaos.json"
    rc = chaos.main(["--rounds", str(rounds), "--kills", kills, "--work", str(tmp_path / "w"),
                     "--report", str(report)])
    rec = json.loads(report.read_text())
    assert rc == 0, rec["failures"]
    assert set(rec["stages"]) == {"download", "dedupe", "filter", "pack", "train"}
    for name, s in rec["stages"].items():
        assert len(s["rounds"]) == rounds and all(r["ok"] for r in s["rounds"]), name
    # the interruptions landed: most attempts hit a running job (each stage waits for
    # its milestones, so a miss means the job finished first)
    hits = sum(s["hits"] for s in rec["stages"].values())
    attempts = sum(s["attempts"] for s in rec["stages"].values())
    assert hits >= attempts // 2, rec["stages"]
