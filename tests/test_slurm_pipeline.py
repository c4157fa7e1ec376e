"""Pipelines on a real single-machine Slurm (cluster/slurm/local/start.sh, the fixture of
tests/test_slurm_cluster.py): `pixelmill run` in one job on the preemptible `low`
partition, preempted by a job on `high`, requeued (cluster/slurm/lib/preempt.sh on exit
75) and resumed, ends with the dataset an uninterrupted run makes; the same pipeline as a
chain of dependent jobs (cluster/slurm/submit-pipeline.sh) too; and a `train` job on `low`
preempted mid-run resumes from its checkpoint to the same weights, bit for bit."""
import os
import subprocess
import sys

import pytest

from conftest import ROOT, SANITIZED, run, tool
from pipeline_fixture import (STAGES, diff, result, run_stages_one_by_one, stage_options,
                              write_ini)
from test_download import net  # noqa: F401  (the fake internet fixture)
from test_slurm_cluster import job_field, sl, slurm, wait_for  # noqa: F401

sys.path.insert(0, str(ROOT / "demo"))
import make_shapes  # noqa: E402

pytestmark = pytest.mark.skipif(
    not os.path.exists("/usr/sbin/slurmctld") or os.geteuid() != 0,
    reason="needs slurm-wlm and munge (scripts/install-deps.sh) and root")


@pytest.fixture(scope="module")
def reference(net, tmp_path_factory):  # noqa: F811
    d = tmp_path_factory.mktemp("ref")
    return run_stages_one_by_one(stage_options(net, d / "ds", d / "packed"))


def job_env(env):
    return dict(env, PIXELMILL=tool("pixelmill"), PIXELMILL_HOME=str(ROOT),
                OMP_NUM_THREADS="1", OMP_WAIT_POLICY="passive")


def preempt(env, job, tmp_path):
    """A job on `high` that needs the whole node; returns its id once `job` is requeued."""
    high = sl(env, "sbatch", "--parsable", "-p", "high", "--exclusive", "-o",
              tmp_path / "high.out", "--wrap", "echo high")
    wait_for("the low job to be requeued", lambda: job_field(env, job, "JobState") ==
             "PENDING" and job_field(env, job, "Restarts") == "1", timeout=120)
    return high


def release(env, job, high):
    wait_for("the high job", lambda: job_field(env, high, "JobState") == "COMPLETED",
             timeout=120)
    # the requeued job starts again by itself after cred_expire (10 s in the test Slurm);
    # releasing it earlier with StartTime=now races the old run's credential revocation
    wait_for("the low job to finish", lambda: job_field(env, job, "JobState") in
             ("COMPLETED", "FAILED", "CANCELLED"), timeout=300)


def test_pipeline_preempted_requeued_resumed_equals_uninterrupted(slurm, net, reference,  # noqa: F811
                                                                  tmp_path):
    _, env = slurm
    env = job_env(env)
    ds, packed, log = tmp_path / "ds", tmp_path / "packed", tmp_path / "job.log"
    ini = tmp_path / "p.ini"
    # one rate-limited transfer at a time: the download lasts many seconds whatever the
    # machine's load, so the preemption lands while it works
    write_ini(ini, stage_options(net, ds, packed, concurrency=1, threads=1))
    job = sl(env, "sbatch", "--parsable", "-o", log, ROOT / "cluster/slurm/run.sbatch", ini)
    assert job_field(env, job, "Partition") == "low"
    assert job_field(env, job, "Requeue") == "1"
    wait_for("the first shard", lambda: list(ds.glob("*_stats.json")), timeout=120)
    high = preempt(env, job, tmp_path)
    text = log.read_text()
    assert "run: download exited 75" in text, text
    assert "requeueing job" in text, text
    assert not (ds / "dataset.json").exists()
    # the file is read again at the restart: transfers at once do not change the output
    write_ini(ini, stage_options(net, ds, packed))
    release(env, job, high)
    text = log.read_text()
    assert job_field(env, job, "JobState") == "COMPLETED", text
    assert job_field(env, job, "ExitCode") == "0:0"
    assert "start: restart 1" in text and "pipeline done" in text, text
    got = result(ds, packed)
    assert got == reference, diff(got, reference)


def test_submit_pipeline_chain_equals_uninterrupted(slurm, net, reference, tmp_path):  # noqa: F811
    _, env = slurm
    env = job_env(env)
    ds, packed = tmp_path / "ds", tmp_path / "packed"
    ini = write_ini(tmp_path / "p.ini", stage_options(net, ds, packed))
    r = run([ROOT / "cluster/slurm/submit-pipeline.sh", ini, "-o", tmp_path / "%x-%j.log"],
            env=env, cwd=tmp_path)
    lines = [l.split() for l in r.stdout.splitlines()]
    assert [l[0] for l in lines] == STAGES, r.stdout
    jobs = [l[1] for l in lines]
    for j in jobs:
        assert job_field(env, j, "Partition") == "low" and job_field(env, j, "Requeue") == "1"
    wait_for("the chain", lambda: all(job_field(env, j, "JobState") in
                                      ("COMPLETED", "FAILED", "CANCELLED") for j in jobs),
             timeout=300)
    assert [job_field(env, j, "JobState") for j in jobs] == ["COMPLETED"] * 4
    # each stage started only after the one before it ended
    ends = [job_field(env, j, "EndTime") for j in jobs]
    starts = [job_field(env, j, "StartTime") for j in jobs]
    assert all(starts[i + 1] >= ends[i] for i in range(3)), (starts, ends)
    for s, j in zip(STAGES, jobs):
        text = (tmp_path / f"pm-{s}-{j}.log").read_text()
        assert f"run: {s} (no " in text, text
        assert not any(f"run: {o} (" in text for o in STAGES if o != s), text
    got = result(ds, packed)
    assert got == reference, diff(got, reference)


def test_submit_pipeline_refuses_a_bad_file_before_submitting(slurm, tmp_path):
    _, env = slurm
    env = job_env(env)
    ini = tmp_path / "bad.ini"
    ini.write_text("[pipeline]\ndataset = d\n[dedup]\n")
    before = sl(env, "squeue", "-h", "-o", "%i")
    r = run([ROOT / "cluster/slurm/submit-pipeline.sh", ini], env=env, check=False)
    assert r.returncode == 2 and f"{ini}:3: unknown section [dedup]" in r.stderr
    assert sl(env, "squeue", "-h", "-o", "%i") == before


# enough steps that the preemption lands mid-run on an idle machine; the sanitizer build
# is several times slower per step
TRAIN_STEPS = 16 if SANITIZED else 60


def train_keys(data, ck):
    return [("data", data), ("model", "test-16"), ("steps", TRAIN_STEPS), ("batch-size", 4),
            ("lr", "1e-3"), ("seed", 7), ("ema-decay", 0.9), ("checkpoint-dir", ck),
            ("loader-threads", 1), ("threads", 1)]


def test_train_on_low_preempted_resumes_bit_for_bit(slurm, tmp_path):
    _, env = slurm
    env = job_env(env)
    data = tmp_path / "shapes"
    make_shapes.write_dataset(data, samples=40, per_shard=12, size=24, seed=3, npy_every=5)
    ck, log = tmp_path / "ck", tmp_path / "train.log"
    ini = write_ini(tmp_path / "train.ini", {"train": train_keys(data, ck)})
    # the uninterrupted reference, outside Slurm, meanwhile (the machine has 2 cores)
    ref_ck = tmp_path / "ref"
    ref = subprocess.Popen(
        [tool("pixelmill"), "run",
         write_ini(tmp_path / "ref.ini", {"train": train_keys(data, ref_ck)})],
        env=job_env(os.environ), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    job = sl(env, "sbatch", "--parsable", "-o", log, "--job-name=pm-train",
             ROOT / "cluster/slurm/run.sbatch", ini)
    assert job_field(env, job, "Partition") == "low"
    wait_for("training to start", lambda: log.exists() and "step 2/" in log.read_text(),
             timeout=120)
    high = preempt(env, job, tmp_path)
    text = log.read_text()
    assert "run: train exited 75" in text, text
    stopped = int((ck / "latest").read_text().strip().split("-")[1])
    assert 2 <= stopped < TRAIN_STEPS, text
    release(env, job, high)
    text = log.read_text()
    assert job_field(env, job, "JobState") == "COMPLETED", text
    assert "resumed from" in text, text
    _, err = ref.communicate(timeout=300)
    assert ref.returncode == 0, err
    name = f"step-{TRAIN_STEPS:08d}/model.safetensors"
    assert (ck / name).read_bytes() == (ref_ck / name).read_bytes()
