#!/usr/bin/env python3
"""Chaos runs over the pipeline: kill -9 and stop signals at random moments, resume, check.

For each stage — download (against the fake internet, tests/fakenet), dedupe, filter,
pack — and for train, every ROUND starts from a fresh output and does up to --kills
interrupted attempts, each one a real `mpirun -np NP` job (default 3) hit by one random
action at a random moment:

  kill9-rank      SIGKILL to ONE rank process of the job (mpirun then aborts the others)
  kill9-job       SIGKILL to mpirun and every rank at once (a node lost)
  sigterm-rank    SIGTERM to one rank (exit 75 expected, or 0 if it had finished)
  sigusr1-mpirun  SIGUSR1 to mpirun, which forwards it to every rank (Slurm's B:USR1)
  sigterm-mpirun  SIGTERM to mpirun (mpirun then stops the ranks itself)

The moment is chosen on observable state, never on an assumed speed: wait until every
rank process exists, then until the stage has written k of its milestone files (k drawn
from 0..M-1, M = how many the uninterrupted reference run wrote), then a random extra
delay of up to the reference's mean time per milestone. After each interruption, with no
process of the job left, the files under final names are checked (nothing partial is
visible); after the last attempt, one uninterrupted resume must finish (exit 0) and the
result must equal the reference run's byte for byte, `pixelmill verify` must pass, every
input row must be accounted for exactly once, and no temporary file may be left.

  python3 tests/chaos/chaos.py                       # 1 round per stage, 3 kills each
  python3 tests/chaos/chaos.py --rounds 20 --kills 5 --report chaos.json
  PIXELMILL_CHAOS_ROUNDS=10 pytest tests/test_chaos.py

Exit status 0 if every invariant held, 1 otherwise; --report writes every round's
actions, exit codes and findings as JSON. Needs a built tree (PIXELMILL_BUILD, default
build/), nginx and openssl (the fake internet), mpirun.
"""
import argparse
import collections
import hashlib
import json
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("PIXELMILL_BUILD", ROOT / "build"))
sys.path.insert(0, str(ROOT / "tests" / "fakenet"))
sys.path.insert(0, str(ROOT / "demo"))

MPI = ["mpirun", "--allow-run-as-root", "--oversubscribe"]
ACTIONS = ["kill9-rank", "kill9-job", "sigterm-rank", "sigusr1-mpirun", "sigterm-mpirun"]
# the fake internet's deliberately slow cases (deadlines, Retry-After): left out
SLOW_CASES = {"slow_drip", "raw_stall", "raw_drip", "slow_ok", "http_429", "http_503",
              "raw_flaky_429", "raw_flaky_503"}
ENV = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="passive")
ATTEMPT_TIMEOUT = int(os.environ.get("PIXELMILL_CHAOS_TIMEOUT", 180))  # seconds one attempt may take before it counts as a hang
FINALIZE_GRACE = 30  # seconds mpirun may outlive its last rank (it normally ends at once)


def pixelmill():
    return str(BUILD / "pixelmill")


def run(args, check=True, timeout=600, **kw):
    r = subprocess.run([str(a) for a in args], capture_output=True, text=True,
                       timeout=timeout, env=kw.pop("env", ENV), **kw)
    if check and r.returncode != 0:
        raise Failure(f"{' '.join(map(str, args))} exited {r.returncode}\n{r.stderr[-3000:]}")
    return r


class Failure(AssertionError):
    pass


def check(cond, msg):
    if not cond:
        raise Failure(msg)


# ---- processes --------------------------------------------------------------------------

def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def rank_of(pid):
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            for e in f.read().split(b"\0"):
                if e.startswith(b"OMPI_COMM_WORLD_RANK="):
                    return int(e.split(b"=", 1)[1])
    except OSError:
        pass
    return None


def processes():
    """(pid, state, pgid, sid) of every process now."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                st = f.read()
        except OSError:
            continue
        fields = st[st.rindex(")") + 2:].split()
        out.append((int(d), fields[0], int(fields[2]), int(fields[3])))
    return out


def group_alive(pgid):
    """True while any process (not a zombie) of the process group exists."""
    return any(g == pgid and state != "Z" for _, state, g, _ in processes())


def wait_group_gone(pgid, timeout=60):
    """Wait until the job has no process left (mpirun's survivors die after it); kill -9
    what is left after `timeout` and say so."""
    t0 = time.monotonic()
    while group_alive(pgid):
        if time.monotonic() - t0 > timeout:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            time.sleep(0.5)
            return False
        time.sleep(0.02)
    return True


def session_pids(sid):
    """Every process of session sid (mpirun, its ranks and anything they started)."""
    return sorted(pid for pid, _, _, s in processes() if s == sid)


def dump_stacks(sid):
    """A hung job's state, for its log: per process its command line, state and wait
    channel, the ranks' environment rank, and every thread's stack (gdb, if installed)."""
    lines = [f"\n==== chaos: the job did not end within its timeout; its processes "
             f"({time.strftime('%H:%M:%S')}) ====\n"]
    for pid in session_pids(sid):
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode(
                errors="replace")[:300]
            st = open(f"/proc/{pid}/stat").read()
            wchan = open(f"/proc/{pid}/wchan").read()
        except OSError:
            continue
        state = st[st.rindex(")") + 2:].split()[0]
        lines.append(f"-- pid {pid} rank {rank_of(pid)} state {state} wchan {wchan}: {cmd}\n")
        if shutil.which("gdb"):
            try:
                r = subprocess.run(["gdb", "-p", str(pid), "-batch", "-nx", "-ex",
                                    "thread apply all bt"], capture_output=True, text=True,
                                   timeout=60)
                lines.append("\n".join(x for x in r.stdout.splitlines()
                                       if x.startswith(("#", "Thread"))) + "\n")
            except (subprocess.TimeoutExpired, OSError) as e:
                lines.append(f"gdb: {e}\n")
    return "".join(lines)


def catches(pid, sigs):
    """True if process pid has handlers installed for every signal in sigs (SigCgt)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("SigCgt:"):
                    mask = int(line.split()[1], 16)
                    return all(mask >> (s - 1) & 1 for s in sigs)
    except OSError:
        pass
    return False


class Job:
    """One mpirun job in its own process group."""

    def __init__(self, np_, args, log):
        self.np = np_
        self.log = open(log, "ab")
        self.p = subprocess.Popen(MPI + ["-np", str(np_)] + [str(a) for a in args],
                                  stdout=self.log, stderr=self.log, env=ENV,
                                  start_new_session=True)
        self.t0 = time.monotonic()
        self.seen_ranks = False
        self.stuck_in_finalize = False

    def ranks(self):
        """{rank: pid} of the rank processes that exist now (not zombies)."""
        out = {}
        for c in children(self.p.pid):
            r = rank_of(c)
            if r is not None:
                out[r] = c
        if out:
            self.seen_ranks = True
        return out

    def wait_ranks(self, timeout=120):
        """Block until every rank process exists; False if the job ended first."""
        while len(self.ranks()) < self.np:
            if self.p.poll() is not None:
                return False
            if time.monotonic() - self.t0 > timeout:
                raise Failure("the ranks never appeared")
            time.sleep(0.005)
        return True

    def finish(self, timeout=ATTEMPT_TIMEOUT):
        """Wait for mpirun: (exit status, hung, no process left). A job still there after
        `timeout` is a hang: the stacks of its processes go to its log, then it is killed.
        One case is mpirun's, not ours: every rank gone, mpirun still there FINALIZE_GRACE
        seconds later with its main thread in orte_finalize (OpenMPI 4.1.4 now and then
        deadlocks there after reporting a killed rank; docs/reliability.md). It is killed,
        counted in self.stuck_in_finalize, and not a hang."""
        deadline = time.monotonic() + timeout
        ranks_gone_at, dumped, hung = None, False, False
        while True:
            try:
                rc = self.p.wait(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                pass
            now = time.monotonic()
            if self.ranks() or not self.seen_ranks:
                ranks_gone_at = None
            elif ranks_gone_at is None:
                ranks_gone_at = now
            stuck = ranks_gone_at is not None and now - ranks_gone_at > FINALIZE_GRACE
            if (stuck and not dumped) or now > deadline:
                dump = dump_stacks(self.p.pid)
                self.log.write(dump.encode())
                self.log.flush()
                dumped = True
                self.stuck_in_finalize = stuck and "orte_finalize" in dump
                if self.stuck_in_finalize or now > deadline:
                    hung = not self.stuck_in_finalize
                    os.killpg(self.p.pid, signal.SIGKILL)
                    rc = self.p.wait()
                    break
        gone = wait_group_gone(self.p.pid)
        self.log.close()
        return rc, hung, gone


# ---- stages -----------------------------------------------------------------------------

def count_files(root, pattern):
    root = Path(root)
    return sum(1 for p in root.glob(pattern) if p.is_file()) if root.exists() else 0


def temporaries(root):
    root = Path(root)
    return sorted(str(p.relative_to(root)) for p in root.rglob(".*")
                  if ".tmp" in p.name) if root.exists() else []


def snapshot(root, skip=()):
    """{relative path: bytes} of every file under root, except names matching skip."""
    out = {}
    root = Path(root)
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_file() and not any(rel.startswith(s) or rel.endswith(s) for s in skip):
            out[rel] = p.read_bytes()
    return out


def diff(a, b):
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def tar_sound(path):
    with tarfile.open(path) as t:
        for m in t.getmembers():
            t.extractfile(m).read()


def shards_sound(out):
    """Every shard file under a final name is complete and agrees with its stats."""
    out = Path(out)
    for p in out.glob("[0-9]*.tar"):
        tar_sound(p)
    for p in out.glob("[0-9]*.parquet"):
        pq.read_table(p)
    for p in out.glob("[0-9]*_stats.json"):
        s = json.loads(p.read_text())
        name = p.name[: -len("_stats.json")]
        check((out / f"{name}.tar").stat().st_size == s["filesize"],
              f"{p}: stats filesize differs from the tar")
        if (out / f"{name}.parquet").exists():
            check(pq.read_metadata(out / f"{name}.parquet").num_rows == s["count"],
                  f"{p}: stats count differs from the sidecar")
    if (out / "dataset.json").exists():
        ds = json.loads((out / "dataset.json").read_text())
        for s in ds["shardlist"]:
            check((out / s["url"]).stat().st_size == s["filesize"], f"{s['url']}: size")


def verify(out, deep=False):
    r = run([pixelmill(), "verify", out, "--json"] + (["--deep"] if deep else []), check=False)
    check(r.returncode == 0, f"verify {out} failed ({r.returncode}): {r.stdout[-2000:]}")
    check(json.loads(r.stdout)["ok"] is True, f"verify {out}: not ok")


def sidecar_rows(ds):
    return [r for f in sorted(Path(ds).glob("[0-9]*.parquet")) for r in pq.read_table(f).to_pylist()]


class Stage:
    """A stage under chaos: how to prepare a fresh round, the command, its milestones and
    its invariants."""
    name = ""
    milestone = ""  # glob under the round's output, counted as progress
    resumable = True  # catches stop signals: exit 75 (pixelmill.c RESUMABLE)

    def prepare(self, d):
        """Make a fresh round in directory d; return its output path."""
        raise NotImplementedError

    def args(self, out):
        """The command of the interrupted attempts."""
        raise NotImplementedError

    def final_args(self, out):
        """The command of the reference run and of the last resume (same result)."""
        return self.args(out)

    def check_partial(self, out):
        """After an interruption: nothing partial under a final name."""

    def result(self, out):
        """What must equal the reference run (a snapshot)."""
        raise NotImplementedError

    def check_final(self, out):
        """Invariants of a finished run beyond equality with the reference."""


class Download(Stage):
    name = "download"
    milestone = "*_stats.json"

    def __init__(self, net, lists, ref_np):
        self.net = net
        self.lists = lists
        self.inp = lists / "paced.parquet"
        self.src_urls = pq.read_table(self.inp).column("URL").to_pylist()

    def prepare(self, d):
        return d / "ds"

    def args(self, out, concurrency=1):
        # one rate-limited transfer per rank: the run's length comes from the server
        return [pixelmill(), "download", "--input", self.inp, "--output", out,
                "--url-col", "URL", "--caption-col", "TEXT", "--keep-cols", "punsafe,WIDTH,HEIGHT",
                "--samples-per-shard", 4, "--timeout", 6, "--retries", 2,
                "--ca-file", self.net.ca_file, "--user-agent-token", "pixelmill",
                "--max-bytes", self.net.max_bytes, "--concurrency", concurrency, "--threads", 1,
                "--allow-address", "127.0.0.1", "--quiet"]

    def final_args(self, out):
        return self.args(out, concurrency=32)  # not part of the output's identity: faster

    def check_partial(self, out):
        shards_sound(out)
        for p in (Path(out) / "_work").rglob("*") if (Path(out) / "_work").exists() else []:
            if p.is_file() and not p.name.startswith("."):
                if p.suffix == ".parquet":
                    pq.read_table(p)
                elif p.suffix == ".json":
                    json.loads(p.read_text())

    def result(self, out):
        # tar headers carry the plan's creation time and the stats files timings: compare
        # the rows and every member's bytes, as tests/test_download.py does
        res = {}
        for r in sidecar_rows(out):
            res["row " + r["key"]] = json.dumps(r, sort_keys=True, default=str).encode()
        for p in sorted(Path(out).glob("[0-9]*.tar")):
            with tarfile.open(p) as t:
                for m in t.getmembers():
                    res[f"{p.name}/{m.name}"] = t.extractfile(m).read()
        return res

    def check_final(self, out):
        shards_sound(out)
        verify(out)
        rows = sidecar_rows(out)
        # every input row exactly once, in input order, with a status and a reason
        check([r["url"] for r in rows] == self.src_urls, "sidecar rows != input rows")
        keys = [r["key"] for r in rows]
        check(len(set(keys)) == len(keys), "a key twice")
        for r in rows:
            check(r["status"] is not None, f"{r['key']}: no status")
            if r["status"] != "success":
                check(bool(r["error_message"]), f"{r['key']}: {r['status']} without a reason")
        ok = sorted(r["key"] for r in rows if r["status"] == "success")
        samples = []
        for p in sorted(Path(out).glob("[0-9]*.tar")):
            with tarfile.open(p) as t:
                samples += [m.name.split(".")[0] for m in t.getmembers() if m.name.endswith(".json")]
        check(sorted(samples) == ok, "tar samples != success rows")
        ds = json.loads((Path(out) / "dataset.json").read_text())
        check(ds["counts"]["rows"] == len(self.src_urls), "dataset.json row count")


def copy_dataset(src, dst, keep=()):
    """A fresh copy of a dataset's shards (and the named extra directories)."""
    dst.mkdir(parents=True)
    for p in Path(src).iterdir():
        if p.is_file():
            shutil.copy2(p, dst / p.name)
        elif p.name in keep:
            shutil.copytree(p, dst / p.name)
    return dst


class Dedupe(Stage):
    name = "dedupe"
    milestone = "_dedupe/**/*"
    resumable = False  # a stop signal kills it; a rerun redoes what is missing

    def __init__(self, src):
        self.src = src

    def prepare(self, d):
        return copy_dataset(self.src, d / "ds")

    def args(self, out):
        return [pixelmill(), "dedupe", out, "--by", "url", "--by", "content", "--by", "phash",
                "--memory-limit", "64K", "--json"]

    def check_partial(self, out):
        # every method whose marks.json exists is complete: equal to the reference's
        got = snapshot(Path(out) / "_dedupe")
        for m in ("url", "content", "phash"):
            if f"{m}/marks.json" in got:
                bad = [k for k, v in self.ref.items() if k.startswith(m + "/") and got.get(k) != v]
                check(not bad, f"dedupe {m}: marks.json present but {bad} differ")

    def result(self, out):
        return snapshot(Path(out) / "_dedupe", skip=("report.html",))

    def check_final(self, out):
        verify(out)


class Filter(Stage):
    name = "filter"
    milestone = "_views/chaos/*"
    resumable = False

    def __init__(self, src):
        self.src = src

    def prepare(self, d):
        return copy_dataset(self.src, d / "ds", keep=("_dedupe",))

    def args(self, out):
        return [pixelmill(), "filter", out, "--where", "punsafe < 0.5", "--where",
                "len(caption) > 3", "--dedupe", "url,content,phash", "--view", "chaos", "--json"]

    def check_partial(self, out):
        v = Path(out) / "_views" / "chaos"
        if (v / "view.json").exists():  # a view is visible only complete
            check(not diff(snapshot(v), self.ref), "view.json present but the view differs")

    def result(self, out):
        return snapshot(Path(out) / "_views" / "chaos")

    def check_final(self, out):
        verify(out)


class Pack(Stage):
    name = "pack"
    milestone = "*_stats.json"

    def __init__(self, src, view_keys):
        self.src = src
        self.view_keys = view_keys

    def prepare(self, d):
        return d / "packed"

    def args(self, out):
        return [pixelmill(), "pack", f"{self.src}:safe", "--output", out,
                "--samples-per-shard", 5, "--encode-format", "raw", "--image-size", 16,
                "--resize-mode", "fixed", "--shuffle", "--seed", 11]

    def check_partial(self, out):
        for name, data in snapshot(out).items():
            if name.endswith((".tar", ".parquet")):
                check(data == self.ref.get(name), f"{name} differs from the uninterrupted run")

    def result(self, out):
        return snapshot(out, skip=("_stats.json", "dataset.json"))

    def check_final(self, out):
        shards_sound(out)
        verify(out, deep=True)
        got = []
        for p in sorted(Path(out).glob("*.tar")):
            with tarfile.open(p) as t:
                for m in t.getmembers():
                    if m.name.endswith(".json"):
                        got.append(json.loads(t.extractfile(m).read())["source_key"])
        check(sorted(got) == sorted(self.view_keys), "packed samples != the view's samples")
        check(len(set(got)) == len(got), "a sample packed twice")


def read_safetensors_ok(path):
    b = Path(path).read_bytes()
    n = struct.unpack("<Q", b[:8])[0]
    hdr = json.loads(b[8:8 + n])
    end = max(v["data_offsets"][1] for k, v in hdr.items() if k != "__metadata__")
    check(len(b) == 8 + n + end, f"{path}: truncated")


class Train(Stage):
    name = "train"
    milestone = "ck/step-*/model.safetensors"
    steps, batch = 6, 6

    def __init__(self, data):
        self.data = data

    def prepare(self, d):
        return d

    def args(self, out):
        return [pixelmill(), "train", "--data", self.data, "--model", "test-16",
                "--steps", self.steps, "--batch-size", self.batch, "--lr", "1e-3", "--seed", 7,
                "--ema-decay", 0.9, "--checkpoint-dir", Path(out) / "ck", "--checkpoint-every", 1,
                "--keep", 20, "--loader-threads", 1, "--threads", 1, "--resume", "auto"]

    def check_partial(self, out):
        ck = Path(out) / "ck"
        if (ck / "latest").exists():
            latest = ck / (ck / "latest").read_text().strip()
            check((latest / "model.safetensors").exists() and (latest / "state.bin").exists(),
                  f"latest -> {latest.name} is incomplete")
        for p in ck.glob("step-*/model.safetensors") if ck.exists() else []:
            read_safetensors_ok(p)

    def result(self, out):
        last = Path(out) / "ck" / f"step-{self.steps:08d}"
        return {"model.safetensors": (last / "model.safetensors").read_bytes(),
                "state.bin": (last / "state.bin").read_bytes()}

    def check_final(self, out):
        check((Path(out) / "ck" / "latest").read_text().strip() == f"step-{self.steps:08d}",
              "latest is not the last step")


# ---- rounds -----------------------------------------------------------------------------

def reference(stage, work, np_):
    """The uninterrupted run: its result, its milestone count and its duration."""
    d = work / f"{stage.name}-ref"
    d.mkdir()
    out = stage.prepare(d)
    job = Job(np_, stage.final_args(out), d / "log")
    job.wait_ranks()
    t0 = time.monotonic()
    rc, hung, _ = job.finish()
    wall = time.monotonic() - t0
    if rc != 0 or hung:
        raise Failure(f"{stage.name} reference run exited {rc}: {(d / 'log').read_text()[-3000:]}")
    stage.ref = stage.result(out)
    stage.check_final(out)
    stage.ref_out = out
    stage.ref_wall = wall
    stage.ref_milestones = count_files(out, stage.milestone)
    return out


def one_round(stage, work, np_, kills, rng, idx, actions=ACTIONS):
    d = work / f"{stage.name}-r{idx}"
    d.mkdir()
    out = stage.prepare(d)
    rec = {"stage": stage.name, "round": idx, "attempts": [], "ok": False}
    m = max(stage.ref_milestones, 1)
    for a in range(kills):
        action = rng.choice(actions)
        k = rng.randrange(m)
        extra = rng.uniform(0, stage.ref_wall / m)
        job = Job(np_, stage.args(out), d / "log")
        att = {"action": action, "milestone": k, "delay": round(extra, 3)}
        hit = False
        if job.wait_ranks():
            while job.p.poll() is None and count_files(out, stage.milestone) < k:
                time.sleep(0.002)
            time.sleep(extra)
            if action.startswith("sig") and stage.resumable:
                # a stop signal is meant for a running program: wait until every process
                # has its handlers (a signal in the instant between exec and main() kills
                # any program, ours included; kill -9 needs no such wait)
                want = (signal.SIGTERM, signal.SIGUSR1)
                while job.p.poll() is None and not (
                        catches(job.p.pid, want) and len(job.ranks()) == np_
                        and all(catches(q, want) for q in job.ranks().values())):
                    time.sleep(0.002)
            ranks = job.ranks()
            if job.p.poll() is None and len(ranks) == np_:
                hit = True
                r = rng.randrange(np_)
                att["rank"] = r if action.endswith("rank") else None
                try:
                    if action == "kill9-rank":
                        os.kill(ranks[r], signal.SIGKILL)
                    elif action == "kill9-job":
                        os.killpg(job.p.pid, signal.SIGKILL)
                    elif action == "sigterm-rank":
                        os.kill(ranks[r], signal.SIGTERM)
                    elif action == "sigusr1-mpirun":
                        os.kill(job.p.pid, signal.SIGUSR1)
                    else:
                        os.kill(job.p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    hit = False
        rc, hung, gone = job.finish()
        att.update(hit=hit, rc=rc, hung=hung, left_processes=not gone,
                   mpirun_stuck_in_finalize=job.stuck_in_finalize,
                   milestones_seen=count_files(out, stage.milestone))
        rec["attempts"].append(att)
        check(not hung, f"{stage.name}: attempt {a} ({action}) hung")
        check(gone, f"{stage.name}: processes of the job survived it")
        if action in ("sigusr1-mpirun", "sigterm-rank") and hit and stage.resumable:
            # a stop signal: resumable (75) or finished meanwhile (0), never a crash
            check(rc in (0, 75), f"{stage.name}: {action} gave exit {rc}")
        if not hit:
            check(rc == 0, f"{stage.name}: an uninterrupted attempt exited {rc}")
        stage.check_partial(out)
        if rc == 0:
            break  # finished: nothing left to interrupt
    job = Job(np_, stage.final_args(out), d / "log")
    rc, hung, _ = job.finish()
    rec["resume_rc"] = rc
    check(rc == 0 and not hung, f"{stage.name}: the resume exited {rc}: "
          f"{(d / 'log').read_text()[-3000:]}")
    got = stage.result(out)
    bad = diff(got, stage.ref)
    check(not bad, f"{stage.name}: result differs from the uninterrupted run: {bad[:10]}")
    stage.check_final(out)
    tmp = temporaries(out)
    check(not tmp, f"{stage.name}: temporaries left after the resume: {tmp[:10]}")
    rec["ok"] = True
    return rec


def fake_internet(work):
    import make_corpus
    from server import FakeInternet
    corpus = make_corpus.ensure_corpus(count=200)
    net = FakeInternet(corpus)
    net.start()
    lists = work / "lists"
    lists.mkdir()
    net.write_lists(lists)
    man = net.manifest()
    net.max_bytes = json.loads((Path(corpus) / "corpus.json").read_text())["limits"][
        "max_success_bytes"] + 1024
    pq.write_table(fast_rows(lists, man, paced=True), lists / "paced.parquet")
    return net, lists


def fast_rows(lists, man, paced=False):
    """The fake internet's URL list without its deliberately slow rows; paced: with every
    image behind nginx's rate limit (/slow/ok/), so that a run lasts seconds whatever the
    machine's load and the kills land while it works."""
    t = pq.read_table(lists / "urls.parquet")
    t = t.take(pa.array([i for i, m in enumerate(man) if m["case"] not in SLOW_CASES]))
    if paced:
        urls = [u.replace("/img/", "/slow/ok/", 1) if "/img/" in (u or "") else u
                for u in t.column("URL").to_pylist()]
        t = t.set_column(t.schema.get_field_index("URL"), "URL", pa.array(urls))
    return t


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=int(os.environ.get("PIXELMILL_CHAOS_ROUNDS", 1)))
    ap.add_argument("--kills", type=int, default=3, help="interrupted attempts per round")
    ap.add_argument("--np", type=int, default=3)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--stages", default="download,dedupe,filter,pack,train")
    ap.add_argument("--actions", default=",".join(ACTIONS), help="actions drawn from")
    ap.add_argument("--work", default=None, help="scratch directory (default: a temp dir)")
    ap.add_argument("--report", default=None, help="write the record as JSON here")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory")
    a = ap.parse_args(argv)
    seed = a.seed if a.seed is not None else random.SystemRandom().randrange(1 << 31)
    rng = random.Random(seed)
    stages = a.stages.split(",")
    work = Path(a.work or tempfile.mkdtemp(prefix="pm-chaos-"))
    work.mkdir(parents=True, exist_ok=True)
    record = {"seed": seed, "np": a.np, "rounds": a.rounds, "kills": a.kills, "stages": {},
              "failures": []}
    t_start = time.monotonic()
    net = None
    try:
        built = {}

        def ensure(name):
            """The stage with its reference run (and those of the stages it reads)."""
            nonlocal net
            if name in built:
                return built[name]
            if name == "download":
                net, lists = fake_internet(work)
                st = Download(net, lists, a.np)
            elif name == "dedupe":
                st = Dedupe(ensure("download").ref_out)
            elif name == "filter":
                st = Filter(ensure("dedupe").ref_out)
            elif name == "pack":
                # the downloaded dataset with the view "safe" (punsafe < 0.5)
                psrc = copy_dataset(ensure("download").ref_out, work / "pack-src")
                run([pixelmill(), "filter", psrc, "--where", "punsafe < 0.5", "--view", "safe"])
                keys = [r["key"] for r in sidecar_rows(psrc) if r["status"] == "success"
                        and r["punsafe"] is not None and r["punsafe"] < 0.5]
                st = Pack(psrc, keys)
            elif name == "train":
                import make_shapes
                shapes = work / "shapes"
                make_shapes.write_dataset(shapes, samples=60, per_shard=12, size=16, seed=3,
                                          npy_every=4)
                st = Train(shapes)
            else:
                raise SystemExit(f"unknown stage {name}")
            reference(st, work, a.np)
            built[name] = st
            return st

        for name in stages:
            st = ensure(name)
            srec = record["stages"][name] = {
                "reference_wall_s": round(st.ref_wall, 2), "milestones": st.ref_milestones,
                "rounds": [], "hits": 0, "attempts": 0, "actions": collections.Counter(),
                "mpirun_stuck_in_finalize": 0}
            for i in range(a.rounds):
                try:
                    rec = one_round(st, work, a.np, a.kills, rng, i, a.actions.split(","))
                except Failure as e:
                    rec = {"stage": name, "round": i, "ok": False, "error": str(e)[:4000]}
                    record["failures"].append(rec)
                srec["rounds"].append(rec)
                for att in rec.get("attempts", []):
                    srec["attempts"] += 1
                    srec["mpirun_stuck_in_finalize"] += att.get("mpirun_stuck_in_finalize", 0)
                    srec["hits"] += att["hit"]
                    if att["hit"]:
                        srec["actions"][att["action"]] += 1
                print(f"chaos: {name} round {i}: {'ok' if rec['ok'] else 'FAILED'} "
                      f"{[(x['action'], x['hit'], x['rc']) for x in rec.get('attempts', [])]}",
                      flush=True)
                if not a.keep and rec["ok"]:  # a failed round's files stay for a look
                    shutil.rmtree(work / f"{name}-r{i}", ignore_errors=True)
    finally:
        if net is not None:
            net.stop()
        record["wall_s"] = round(time.monotonic() - t_start, 1)
        if a.report:
            Path(a.report).write_text(json.dumps(record, indent=1, default=dict) + "\n")
        if not a.keep and not a.work and not record["failures"]:
            shutil.rmtree(work, ignore_errors=True)
    for name, s in record["stages"].items():
        ok = sum(r["ok"] for r in s["rounds"])
        print(f"chaos: {name}: {ok}/{len(s['rounds'])} rounds ok, {s['hits']} of "
              f"{s['attempts']} attempts interrupted a running job {dict(s['actions'])} "
              f"(reference {s['reference_wall_s']} s, {s['milestones']} milestones; mpirun stuck "
              f"in its finalize after its ranks ended: {s['mpirun_stuck_in_finalize']})")
    print(f"chaos: seed {seed}, {len(record['failures'])} failed rounds, {record['wall_s']} s")
    for f in record["failures"]:
        print(f"FAILED {f['stage']} round {f['round']}: {f['error']}", file=sys.stderr)
    return 1 if record["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
