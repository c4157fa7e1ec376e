"""`pixelmill run PIPELINE.ini` outside Slurm: a download -> dedupe -> filter -> pack
pipeline over the fake internet equals the same stages run one by one; a rerun skips
every complete stage (and runs only the one whose output was removed); SIGTERM stops it
with exit 75 and kill -9 leaves it resumable, and the resumed run equals the reference;
pipeline-file mistakes are reported with FILE:LINE. The Slurm side (preemption, requeue,
the submit-pipeline.sh chain) is in tests/test_slurm_pipeline.py."""
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import run, tool
from pipeline_fixture import (STAGES, diff, result, run_stages_one_by_one, stage_options,
                              write_ini)
from test_download import net  # noqa: F401  (the fake internet fixture)


@pytest.fixture(scope="module")
def reference(net, tmp_path_factory):  # noqa: F811
    d = tmp_path_factory.mktemp("ref")
    return run_stages_one_by_one(stage_options(net, d / "ds", d / "packed"))


def pm_run(ini, *extra, check=True):
    return run([tool("pixelmill"), "run", ini, *extra], check=check, timeout=300)


def test_run_equals_stages_one_by_one_and_rerun_skips(net, reference, tmp_path):  # noqa: F811
    ds, packed = tmp_path / "ds", tmp_path / "packed"
    ini = write_ini(tmp_path / "p.ini", stage_options(net, ds, packed))
    r = pm_run(ini)
    for s in STAGES:
        assert f"run: {s} (no " in r.stderr, r.stderr
    got = result(ds, packed)
    assert got == reference, diff(got, reference)
    success = sum(1 for r in got["dataset"] if r[1] == "success")
    assert 0 < len(got["packed"]) < success  # the filter kept some, not all
    assert len({r[1] for r in got["dataset"]}) >= 3  # several statuses

    markers = [ds / "dataset.json", ds / "_dedupe/summary.json",
               ds / "_views/safe/view.json", packed / "dataset.json"]
    before = [m.stat().st_mtime_ns for m in markers]
    again = pm_run(ini)
    for s in STAGES:
        assert re.search(rf"run: {s} complete \(.*\), skipping", again.stderr), again.stderr
    assert [m.stat().st_mtime_ns for m in markers] == before

    # a removed output is made again, and only that stage runs
    (packed / "dataset.json").unlink()
    (ds / "_views/safe/view.json").unlink()
    third = pm_run(ini)
    assert "run: filter (no " in third.stderr and "run: pack (no " in third.stderr
    assert "run: download complete" in third.stderr and "run: dedupe complete" in third.stderr
    got = result(ds, packed)
    assert got == reference, diff(got, reference)


def start(args):
    return subprocess.Popen([str(a) for a in args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True, text=True)


def wait_for_shards(p, ds, n=1, timeout=120):
    t0 = time.monotonic()
    while len(list(Path(ds).glob("*_stats.json"))) < n:
        assert p.poll() is None, "the run ended before it wrote a shard"
        assert time.monotonic() - t0 < timeout
        time.sleep(0.05)


@pytest.mark.parametrize("how", ["sigterm", "kill9"])
def test_interrupted_run_resumes_to_the_same_result(net, reference, tmp_path, how):  # noqa: F811
    ds, packed = tmp_path / "ds", tmp_path / "packed"
    # one rate-limited transfer at a time: the download lasts many seconds whatever the
    # machine's load, so the signal lands while it works
    slow = write_ini(tmp_path / "slow.ini",
                     stage_options(net, ds, packed, concurrency=1, threads=1))
    p = start([tool("pixelmill"), "run", slow])
    wait_for_shards(p, ds)
    os.killpg(p.pid, signal.SIGTERM if how == "sigterm" else signal.SIGKILL)
    _, err = p.communicate(timeout=60)
    if how == "sigterm":
        assert p.returncode == 75, err
        assert "run: download exited 75" in err, err
    else:
        assert p.returncode == -signal.SIGKILL
    assert not (ds / "dataset.json").exists() and not packed.exists()
    # the operator may retune what does not change the output (transfers at once)
    fast = write_ini(tmp_path / "fast.ini", stage_options(net, ds, packed))
    r = pm_run(fast)
    assert "run: download (no " in r.stderr
    got = result(ds, packed)
    assert got == reference, diff(got, reference)


def test_only_runs_one_stage_after_complete_ones(net, tmp_path):  # noqa: F811
    ds, packed = tmp_path / "ds", tmp_path / "packed"
    ini = write_ini(tmp_path / "p.ini", stage_options(net, ds, packed))
    r = pm_run(ini, "--only", "dedupe", check=False)
    assert r.returncode == 1
    assert "--only dedupe: the earlier stage download is not complete" in r.stderr
    assert not (ds / "_dedupe").exists()
    assert pm_run(ini, "--list").stdout.split() == STAGES
    dry = pm_run(ini, "--dry-run").stdout
    assert "# download: to run" in dry and "\npixelmill filter " in dry
    assert "--where 'punsafe < 0.5' --where 'WIDTH >= 8'" in dry
    assert not ds.exists()


BAD = [
    ("[pipeline]\ndataset = d\n[download]\ninput = a.csv\nbogus = 1\n", 5,
     "unknown key 'bogus' in [download]"),
    ("[pipeline]\ndataset = d\n\n[dedupe]\n[sort]\n", 5, "unknown section [sort]"),
    ("[pipeline]\ndataset = d\n[filter]\nview = v\nview = w\nwhere = a > 1\n", 5,
     "'view' given twice in [filter] (first at line 4)"),
    ("[pipeline]\ndataset = d\n[pack]\noutput = o\nshuffle = maybe\n", 5,
     "'shuffle' is a flag: true or false"),
    ("[pipeline]\ndataset = d\n[dedupe]\n[dedupe]\n", 4, "section [dedupe] given twice"),
    ("[pipeline]\ndataset = d\n[dedupe]\nby url\n", 4, "syntax error"),
    ("by = url\n[pipeline]\ndataset = d\n", 1, "'by' outside a section"),
    ("[pipeline]\n[dedupe]\nby = url\n", 2, "[dedupe] needs 'dataset' in [pipeline]"),
    ("[pipeline]\ndataset = d\n[download]\ninput = a.csv\noutput = x\n", 5,
     "[download] writes the [pipeline] dataset"),
    ("[pipeline]\ndataset = d\n[train]\nsteps = 3\nresume = auto\n", 5,
     "[train] always resumes"),
    ("[pipeline]\ndataset = d\n[train]\nsteps = 3\n", 3, "[train] needs 'checkpoint-dir'"),
    ("[pipeline]\ndataset = d\nroot = r\n", 3, "unknown key 'root' in [pipeline]"),
    ("[pipeline]\ndataset = d\n[filter]\nview = v\nwhere = " + "x" * 300 + "\n", 5,
     "line longer than"),
    ("[pipeline]\ndataset = d\n", 2, "no stage sections"),
]


@pytest.mark.parametrize("text,line,msg", BAD, ids=[b[2][:28] for b in BAD])
def test_pipeline_file_errors_name_file_and_line(tmp_path, text, line, msg):
    ini = tmp_path / "bad.ini"
    ini.write_text(text)
    r = pm_run(ini, check=False)
    assert r.returncode == 2, r.stderr
    assert f"{ini}:{line}: " in r.stderr, r.stderr
    assert msg in r.stderr, r.stderr
    assert not (tmp_path / "d").exists()


def test_usage_errors(tmp_path):
    ini = write_ini(tmp_path / "p.ini", {"pipeline": [("dataset", tmp_path / "d")],
                                          "dedupe": []})
    r = pm_run(ini, "--only", "pack", check=False)
    assert r.returncode == 2 and "has no [pack] section" in r.stderr
    assert pm_run(tmp_path / "missing.ini", check=False).returncode == 2
    assert pm_run(ini, "--frobnicate", check=False).returncode == 2
    assert pm_run(ini, "--list").stdout == "dedupe\n"


@pytest.mark.parametrize("stage", ["download", "dedupe", "filter", "pack", "train"])
def test_every_option_of_a_stage_is_a_key(tmp_path, stage):
    """Each long option in `pixelmill STAGE --help` is accepted as a key of [STAGE] (the
    ones run sets itself excepted), so the key table in stages/cmd_run.c follows the
    commands."""
    helptext = run([tool("pixelmill"), stage, "--help"]).stdout
    listed = re.findall(r"^\s*(?:-\w, )?--([a-z0-9][a-z0-9-]*)", helptext, re.M)
    usage = helptext.split("\n\n")[0]
    listed += re.findall(r"[\[ ]--([a-z0-9][a-z0-9-]*)", usage)
    # run sets download's --output and train's --resume; filter writes views only
    own = {"download": {"output"}, "train": {"resume"}, "filter": {"output"}}.get(stage, set())
    opts = sorted(set(listed) - {"help"} - own)
    assert len(opts) >= 4, helptext
    ini = tmp_path / "all.ini"
    ini.write_text(f"[pipeline]\ndataset = {tmp_path}/d\n[{stage}]\n" +
                   "".join(f"{o} = 1\n" for o in opts))
    r = pm_run(ini, "--list", check=False)
    assert "unknown key" not in r.stderr, r.stderr


def test_bom_comments_flags_and_continued_values(tmp_path):
    ini = tmp_path / "p.ini"
    ini.write_bytes(("\ufeff[pipeline]\n; a comment\n# another\ndataset = " + str(tmp_path / "d")
                     + "  ; inline comment\n[filter]\nview = v\nwhere = punsafe < 0.5\n"
                     "  [x] is not a section here\njson = false\n[pack]\noutput = o\n"
                     "shuffle = yes\n").encode())
    dry = pm_run(ini, "--dry-run").stdout.splitlines()
    assert dry[1] == (f"pixelmill filter {tmp_path}/d --view v --where 'punsafe < 0.5' "
                      "--where '[x] is not a section here'"), dry
    assert dry[3] == f"pixelmill pack {tmp_path}/d:v --output o --shuffle", dry
