"""Cluster operations on a real single-machine Slurm (cluster/slurm/local/start.sh):
the doctor prolog drains a node with its reason, and the stage scripts' signal and
requeue pattern (cluster/slurm/lib/preempt.sh) survives preemption, the time-limit
warning and scancel. The stand-in step (tests/slurm/standin_step.sh) counts units of
work into a progress file and stops cleanly on a signal with exit 75, as the stages do.
"""
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import ROOT, free_port, tool

pytestmark = pytest.mark.skipif(
    shutil.which("slurmctld") is None or os.geteuid() != 0,
    reason="needs slurm-wlm and munge (scripts/install-deps.sh) and root")


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    state = tmp_path_factory.mktemp("slurm")
    wrapper = state / "prolog-wrapper.sh"
    # Slurm's Prolog takes no arguments and a bare environment: the wrapper points the
    # real prolog at this build, at a per-test doctor.conf and at this Slurm.
    wrapper.write_text(
        "#!/bin/sh\n"
        f"export PIXELMILL={tool('pixelmill')} PIXELMILL_DOCTOR_CONF={state}/doctor.conf"
        f" SLURM_CONF={state}/slurm.conf PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin\n"
        f"exec {ROOT}/cluster/slurm/prolog.sh\n")
    wrapper.chmod(0o755)
    (state / "doctor.conf").write_text(
        f'PIXELMILL_DOCTOR_ARGS="--storage {state} --storage-mib 4"\n')
    env = dict(os.environ, PIXELMILL_SLURM_PROLOG=str(wrapper),
               PIXELMILL_SLURMCTLD_PORT=str(free_port()),
               PIXELMILL_SLURMD_PORT=str(free_port()), PIXELMILL_SLURM_GRACE="15")
    subprocess.run([ROOT / "cluster/slurm/local/start.sh", state], env=env, check=True,
                   capture_output=True, text=True, timeout=60)
    env = dict(os.environ, SLURM_CONF=str(state / "slurm.conf"), PIXELMILL_HOME=str(ROOT))
    yield state, env
    subprocess.run(["scancel", "--full", "-u", "root"], env=env, capture_output=True)
    subprocess.run([ROOT / "cluster/slurm/local/stop.sh", state, "--keep-munge"],
                   capture_output=True, timeout=60)


def sl(env, *args):
    r = subprocess.run([str(a) for a in args], env=env, capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, f"{args}: {r.stderr}"
    return r.stdout.strip()


def job_field(env, job, field):
    out = sl(env, "scontrol", "show", "job", "-o", job)
    m = re.search(rf"\b{field}=(\S+)", out)
    return m.group(1) if m else None


def wait_for(what, pred, timeout=60):
    t0 = time.time()
    while time.time() - t0 < timeout:
        v = pred()
        if v:
            return v
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def events(d):
    p = Path(d) / "events"
    return p.read_text().splitlines() if p.exists() else []


def submit_standin(env, d, units, *extra):
    d.mkdir()
    e = dict(env, STANDIN_DIR=str(d), STANDIN_UNITS=str(units))
    job = sl(e, "sbatch", "--parsable", "-o", d / "log", *extra,
             ROOT / "tests/slurm/standin.sbatch")
    wait_for("the step to start working", lambda: (d / "progress").exists())
    return job


def node_name(env):
    return sl(env, "sinfo", "-h", "-o", "%N")


def test_prolog_drains_node_with_doctor_reason(slurm):
    state, env = slurm
    node = node_name(env)
    (state / "doctor.conf").write_text(
        'PIXELMILL_DOCTOR_ARGS="--force-fail \'ECC errors on GPU 3\'"\n')
    try:
        job = sl(env, "sbatch", "--parsable", "-o", state / "drain.out", "--wrap",
                 "echo ran-on-bad-node")
        reason = wait_for("the node to drain", lambda: sl(
            env, "sinfo", "-R", "-h", "-o", "%E|%T|%N"))
        assert reason.split("|")[0] == "pixelmill doctor: forced: ECC errors on GPU 3"
        assert reason.split("|")[2] == node
        state_now = sl(env, "sinfo", "-h", "-o", "%T")
        assert state_now.startswith("drain"), state_now
        # the job did not run on the bad node: Slurm requeued it (held)
        wait_for("the job to be requeued", lambda: job_field(env, job, "Reason") ==
                 "launch_failed_requeued_held")
        assert job_field(env, job, "JobState") == "PENDING"
        out = (state / "drain.out").read_text() if (state / "drain.out").exists() else ""
        assert "ran-on-bad-node" not in out
        sl(env, "scancel", job)
    finally:
        (state / "doctor.conf").write_text(
            f'PIXELMILL_DOCTOR_ARGS="--storage {state} --storage-mib 4"\n')
        sl(env, "scontrol", "update", f"nodename={node}", "state=resume")
    wait_for("the node to come back", lambda: sl(env, "sinfo", "-h", "-o", "%T") in
             ("idle", "mixed", "allocated"))
    assert sl(env, "sinfo", "-R", "-h") == ""
    # a healthy prolog lets jobs run
    job = sl(env, "sbatch", "--parsable", "-o", state / "ok.out", "--wrap", "echo ran")
    wait_for("the job to complete", lambda: job_field(env, job, "JobState") == "COMPLETED")
    assert (state / "ok.out").read_text().strip() == "ran"


def test_preempted_job_requeues_itself_and_resumes(slurm, tmp_path):
    _, env = slurm
    d = tmp_path / "low"
    job = submit_standin(env, d, 60)
    high = sl(env, "sbatch", "--parsable", "-p", "high", "--exclusive", "-o",
              tmp_path / "high.out", "--wrap", "sleep 1; echo high")
    wait_for("the low job to be requeued",
             lambda: job_field(env, job, "JobState") == "PENDING")
    ev = events(d)
    stop = [e for e in ev if e.startswith("step stop")]
    assert len(stop) == 1, ev
    stopped_at = int(stop[0].split("at=")[1])
    assert 0 < stopped_at < 60
    assert job_field(env, job, "Restarts") == "1"
    log = (d / "log").read_text()
    assert "requeueing job" in log, log
    wait_for("the high job", lambda: job_field(env, high, "JobState") == "COMPLETED")
    assert (tmp_path / "high.out").read_text().strip() == "high"
    # the requeued job starts again by itself after cred_expire (10 s in the test Slurm)
    wait_for("the low job to finish", lambda: job_field(env, job, "JobState") == "COMPLETED",
             timeout=60)
    ev = events(d)
    assert f"step start restart=1 from={stopped_at}" in ev, ev
    assert "step done restart=1 at=60" in ev, ev
    assert int((d / "progress").read_text()) == 60
    assert job_field(env, job, "ExitCode") == "0:0"


def test_batch_warning_signal_is_forwarded_to_the_step(slurm, tmp_path):
    """--signal=B:USR1@120 signals only the batch shell; its trap must forward the stop
    request (as SIGUSR2) to the step. `scancel --batch --signal=USR1` delivers exactly
    that signal at once, instead of waiting for a time limit."""
    _, env = slurm
    d = tmp_path / "warn"
    job = submit_standin(env, d, 100000)
    sl(env, "scancel", "--batch", "--signal=USR1", job)
    wait_for("the requeue", lambda: job_field(env, job, "JobState") == "PENDING")
    ev = events(d)
    assert any(e.startswith("step stop signal=USR2") for e in ev), ev
    assert any(e.startswith("batch end rc=75 signal=USR1") for e in ev), ev
    assert "forwarding SIGUSR2 to the step" in (d / "log").read_text()
    assert job_field(env, job, "Restarts") == "1"
    sl(env, "scancel", job)


def test_scancel_is_not_undone_by_the_requeue(slurm, tmp_path):
    _, env = slurm
    d = tmp_path / "cancel"
    job = submit_standin(env, d, 100000)
    sl(env, "scancel", job)
    wait_for("the cancel", lambda: job_field(env, job, "JobState") == "CANCELLED")
    time.sleep(1)
    assert job_field(env, job, "JobState") == "CANCELLED"
    assert job_field(env, job, "Restarts") == "0"
    assert "not requeueing" in (d / "log").read_text()


def test_step_that_never_launches_fails_the_job(slurm, tmp_path):
    """srun exits 0 when a task fails to launch; the job must still fail (not COMPLETED,
    which would let an afterok chain run the next stage). The launch failure is the real
    one seen in CI: PMIx refuses a step whose directory already exists."""
    state, env = slurm
    d = tmp_path / "nolaunch"
    d.mkdir()
    e = dict(env, STANDIN_DIR=str(d), STANDIN_UNITS="5")
    job = sl(e, "sbatch", "--parsable", "--hold", "-o", d / "log",
             ROOT / "tests/slurm/standin.sbatch")
    (state / "tmp" / f"spmix_appdir_{os.getuid()}_{job}.0").mkdir(parents=True)
    sl(env, "scontrol", "release", job)
    wait_for("the job to end", lambda: job_field(env, job, "JobState") in
             ("COMPLETED", "FAILED", "CANCELLED"), timeout=60)
    log = (d / "log").read_text()
    assert "launch failed" in log, log    # the failure really happened
    assert job_field(env, job, "JobState") == "FAILED", log
    assert "the step never started" in log, log
    assert not (d / "progress").exists()


@pytest.mark.parametrize("stage,partition", [("download", "low"), ("dedupe", "low"),
                                             ("filter", "low"), ("pack", "low"),
                                             ("train", "high")])
def test_stage_scripts_run_their_command_on_their_partition(slurm, tmp_path, stage, partition):
    """The real job scripts are accepted by Slurm and run `$PIXELMILL STAGE ARGS` as a
    step (PIXELMILL=echo stands in for the stages that do not exist yet)."""
    _, env = slurm
    out = tmp_path / "out.log"
    e = dict(env, PIXELMILL="/bin/echo")
    job = sl(e, "sbatch", "--parsable", "-c", "1", "-o", out,
             ROOT / f"cluster/slurm/{stage}.sbatch", "in.parquet", "--output", "x y")
    assert job_field(env, job, "Partition") == partition
    assert job_field(env, job, "Requeue") == "1"
    wait_for("the job", lambda: job_field(env, job, "JobState") == "COMPLETED")
    text = out.read_text()
    assert f"\n{stage} in.parquet --output x y\n" in "\n" + text, text
    assert "step exited 0" in text
