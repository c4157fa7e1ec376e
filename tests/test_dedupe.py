"""pixelmill dedupe: marks in _dedupe/ on a dataset with a known duplicate structure.

Checked against references computed here in Python: url/content groups by construction
(ground truth of the fixture) and by recomputing the hashes; phash against a brute-force
connected-components reference on the sidecar phashes, and precision/recall against the
fixture's ground truth (re-encodes, rescales, exact copies; look-alikes are distinct).
Also: -np 1/2/4 byte-identical marks, a tiny --memory-limit (rounds) gives the same
marks, kill -9 + rerun == straight run, reruns skip up-to-date methods, and
`filter --dedupe` consumes the marks.
"""
import filecmp
import json
import os
import shutil
import signal
import struct
import subprocess
import time

import numpy as np
import pytest

from conftest import mpirun, run, tool
from dedupe_fixture import make_dup_dataset

METHODS = ["url", "content", "phash"]


@pytest.fixture(scope="module")
def dup_dataset(tmp_path_factory):
    d = tmp_path_factory.mktemp("dedupe") / "ds"
    table, truth = make_dup_dataset(str(d), tool("pm_image_tool"))
    return str(d), table, truth


def fresh_copy(src, dst):
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("_dedupe", "_views"))
    return str(dst)


def read_marks(ds, method):
    """{global row: keeper global row} for every duplicate, from .dup + .keeper files."""
    index = json.load(open(os.path.join(ds, "dataset.json")))
    out, base = {}, 0
    for sh in index["shardlist"]:
        name = sh["url"][:-4]
        dup = open(os.path.join(ds, "_dedupe", method, name + ".dup"), "rb").read()
        magic, ver, _, rows, kept = struct.unpack("<8sIIQQ", dup[:32])
        assert magic == b"PMVKEEP\0" and ver == 1 and rows == sh["rows"]
        bits = np.unpackbits(np.frombuffer(dup[32:], np.uint8), bitorder="little")[:rows]
        assert bits.sum() == kept
        kp = open(os.path.join(ds, "_dedupe", method, name + ".keeper"), "rb").read()
        kmagic, kver, _, krows, count = struct.unpack("<8sIIQQ", kp[:32])
        assert kmagic == b"PMDKEEP\0" and kver == 1 and krows == rows and count == kept
        assert len(kp) == 32 + 8 * count
        keepers = struct.unpack(f"<{count}Q", kp[32:])
        for row, k in zip(np.nonzero(bits)[0], keepers):
            out[base + int(row)] = k
        base += rows
    return out


def clusters_from_marks(ds, method, success_rows):
    dups = read_marks(ds, method)
    for g, k in dups.items():
        assert k in success_rows and k not in dups, "a keeper must be a kept success row"
    return {g: dups.get(g, g) for g in success_rows}


def components(keys, edges_fn, n):
    parent = list(range(n))

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x
    for i, j in edges_fn():
        a, b = find(i), find(j)
        if a != b:
            parent[max(a, b)] = min(a, b)
    return [find(i) for i in range(n)]


def reference_keepers(table, method, k=4, largest=False):
    """Brute-force reference: {global row: keeper global row} over success rows."""
    t = table.to_pylist()
    ok = [i for i, r in enumerate(t) if r["status"] == "success"]
    n = len(ok)
    if method == "phash":
        ph = np.array([t[i]["phash"] for i in ok], dtype=np.int64).view(np.uint64)
        x = ph[:, None] ^ ph[None, :]
        d = np.zeros(x.shape, dtype=np.int64)
        for b in range(64):
            d += ((x >> np.uint64(b)) & np.uint64(1)).astype(np.int64)
        pairs = np.argwhere(np.triu(d <= k, 1))
        comp = components(ok, lambda: pairs.tolist(), n)
    else:
        if method == "url":
            from urllib.parse import urlsplit, urlunsplit
            def norm(u):  # enough of the normalisation for the fixture's URLs
                p = urlsplit(u)
                host = p.hostname
                port = p.port
                if port and not ((p.scheme.lower() == "https" and port == 443) or
                                 (p.scheme.lower() == "http" and port == 80)):
                    host += f":{port}"
                return urlunsplit((p.scheme.lower(), host, p.path or "/", p.query, ""))
            vals = [norm(t[i]["url"]) for i in ok]
        else:
            vals = [t[i]["content_hash"] for i in ok]
        first = {}
        comp = [first.setdefault(v, j) for j, v in enumerate(vals)]
    best = {}
    for j, c in enumerate(comp):
        g = ok[j]
        area = (t[g]["original_width"] or 0) * (t[g]["original_height"] or 0) if largest else 0
        key = (-area, g)
        if c not in best or key < best[c]:
            best[c] = key
    return {ok[j]: best[c][1] for j, c in enumerate(comp)}


def pair_scores(pred, truth_group, rows):
    """Pairwise precision/recall of predicted clusters vs ground-truth groups."""
    from collections import Counter
    def pairs(labels):
        c = Counter(labels[r] for r in rows)
        return sum(v * (v - 1) // 2 for v in c.values())
    both = Counter((pred[r], truth_group[r]) for r in rows)
    tp = sum(v * (v - 1) // 2 for v in both.values())
    pp, tt = pairs(pred), pairs(truth_group)
    return (tp / pp if pp else 1.0), (tp / tt if tt else 1.0)


def dedupe_json(ds, *extra, np_=None):
    args = [tool("pixelmill"), "dedupe", ds, "--json", *extra]
    r = mpirun(np_, args) if np_ else run(args)
    return json.loads(r.stdout)


def test_quality_against_reference_and_truth(dup_dataset, tmp_path):
    src, table, truth = dup_dataset
    ds = fresh_copy(src, tmp_path / "ds")
    report = tmp_path / "report.html"
    summary = dedupe_json(ds, "--report", str(report))
    t = table.to_pylist()
    ok = [i for i, r in enumerate(t) if r["status"] == "success"]
    assert summary["success"] == len(ok)
    for m in METHODS:
        pred = clusters_from_marks(ds, m, set(ok))
        ref = reference_keepers(table, m)
        assert pred == ref, f"{m}: keepers differ from the brute-force reference"
        s = summary["methods"][m]
        assert s["duplicates"] == sum(1 for g in ok if pred[g] != g)
        assert s["records"] == len(ok)
        sizes = {}
        for g in ok:
            sizes[pred[g]] = sizes.get(pred[g], 0) + 1
        assert s["groups"] == sum(1 for v in sizes.values() if v > 1)
        assert s["largest_group"] == max(sizes.values())
        assert sum(s["cluster_sizes"].values()) == s["groups"]
    # ground truth: precision / recall per method
    url_truth = {g: truth[g]["url_group"] for g in ok}
    content_truth = {g: truth[g]["blob"] for g in ok}
    near_truth = {g: truth[g]["group"] for g in ok}
    scores = {}
    for m, tg in (("url", url_truth), ("content", content_truth), ("phash", near_truth)):
        pred = clusters_from_marks(ds, m, set(ok))
        scores[m] = pair_scores(pred, tg, ok)
        print(f"dedupe {m}: pairwise precision {scores[m][0]:.4f} recall {scores[m][1]:.4f}")
    assert scores["url"] == (1.0, 1.0)
    assert scores["content"] == (1.0, 1.0)
    # phash: recall on re-encodes and rescales (is each variant in its base's cluster?)
    pred = clusters_from_marks(ds, "phash", set(ok))
    base_of = {truth[g]["group"]: pred[g] for g in ok if truth[g]["kind"] == "base"}
    for kind in ("exact", "reencode", "rescale"):
        rows = [g for g in ok if truth[g]["kind"] == kind]
        rec = sum(pred[g] == base_of[truth[g]["group"]] for g in rows) / len(rows)
        print(f"dedupe phash K=4: recall on {kind} {rec:.4f} ({len(rows)} rows)")
        assert rec >= 0.95
    look = [g for g in ok if truth[g]["kind"] == "lookalike"]
    merged = sum(1 for g in look if sum(pred[h] == pred[g] for h in ok) > 1)
    print(f"dedupe phash K=4: look-alikes merged with another picture: {merged}/{len(look)}")
    assert scores["phash"][0] >= 0.99 and scores["phash"][1] >= 0.95
    html = report.read_text()
    assert html.count("data:image/jpeg;base64,") >= 10
    assert "phash duplicate groups" in html and "<script" not in html


def test_ranks_rounds_identical(dup_dataset, tmp_path):
    src, _, _ = dup_dataset
    dirs = []
    for np_, extra in ((1, []), (2, []), (4, []), (2, ["--memory-limit", "2K"])):
        ds = fresh_copy(src, tmp_path / f"np{np_}{len(extra)}")
        s = dedupe_json(ds, *extra, np_=np_)
        if extra:
            assert all(s["runs"][m]["rounds"] > 1 for m in METHODS), s["runs"]
        dirs.append(ds)
    for ds in dirs[1:]:
        for m in METHODS:
            d0 = os.path.join(dirs[0], "_dedupe", m)
            names = sorted(os.listdir(d0))
            assert names == sorted(os.listdir(os.path.join(ds, "_dedupe", m)))
            match, mismatch, errors = filecmp.cmpfiles(d0, os.path.join(ds, "_dedupe", m),
                                                       names, shallow=False)
            assert not mismatch and not errors, (ds, m, mismatch)
        assert filecmp.cmp(os.path.join(dirs[0], "_dedupe", "summary.json"),
                           os.path.join(ds, "_dedupe", "summary.json"), shallow=False)


def snapshot(ds):
    out = {}
    root = os.path.join(ds, "_dedupe")
    for dp, _, files in os.walk(root):
        for f in files:
            out[os.path.relpath(os.path.join(dp, f), root)] = open(os.path.join(dp, f), "rb").read()
    return out


def test_kill_and_rerun(dup_dataset, tmp_path):
    src, _, _ = dup_dataset
    straight = fresh_copy(src, tmp_path / "straight")
    t0 = time.time()
    dedupe_json(straight, "--keep", "largest")
    wall = time.time() - t0
    want = snapshot(straight)
    # What a kill leaves, made deterministically: one method complete, one half-written
    # (no marks.json, a truncated bitmap, a temporary file), one not started.
    ds = fresh_copy(src, tmp_path / "simulated")
    shutil.copytree(os.path.join(straight, "_dedupe"), os.path.join(ds, "_dedupe"))
    os.remove(os.path.join(ds, "_dedupe", "summary.json"))
    os.remove(os.path.join(ds, "_dedupe", "content", "marks.json"))
    with open(os.path.join(ds, "_dedupe", "content", "00001.dup"), "r+b") as f:
        f.truncate(20)
    open(os.path.join(ds, "_dedupe", "content", ".00002.dup.tmp.1.abcdef0123456789"),
         "wb").write(b"x")
    shutil.rmtree(os.path.join(ds, "_dedupe", "phash"))
    open(os.path.join(ds, "_dedupe", ".summary.json.tmp.1.abcdef0123456789"), "wb").write(b"{")
    s = dedupe_json(ds, "--keep", "largest")
    assert [s["runs"][m]["skipped"] for m in METHODS] == [True, False, False]
    assert snapshot(ds) == want
    # real kill -9 at moments spread over a straight run's wall time
    partial = 0
    for frac in (0.3, 0.6, 0.75, 0.85, 0.93):
        delay = wall * frac
        ds = fresh_copy(src, tmp_path / f"kill{frac}")
        p = subprocess.Popen([tool("pixelmill"), "dedupe", ds, "--keep", "largest"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        p.send_signal(signal.SIGKILL)
        p.wait()
        # whatever the kill left: every method with marks.json is complete and correct
        got = snapshot(ds)
        partial += any(k.startswith(m + "/") for k in got for m in METHODS) and \
            not all(f"{m}/marks.json" in got for m in METHODS)
        for m in METHODS:
            if f"{m}/marks.json" in got:
                for k, v in want.items():
                    if k.startswith(m + "/"):
                        assert got.get(k) == v, (delay, k)
        dedupe_json(ds, "--keep", "largest")
        got = snapshot(ds)
        diff = sorted(k for k in set(got) | set(want) if got.get(k) != want.get(k))
        assert not diff, (frac, diff)  # temporaries of the killed run swept too
    print(f"dedupe kill -9: {partial} of 5 kills left a partly written _dedupe/")
    # a rerun with the same parameters skips every method; another radius recomputes phash
    s = dedupe_json(straight, "--keep", "largest")
    assert all(s["runs"][m]["skipped"] for m in METHODS)
    assert snapshot(straight) == want
    s = dedupe_json(straight, "--keep", "largest", "--by", "phash", "--hamming", "2")
    assert not s["runs"]["phash"]["skipped"]
    assert s["methods"]["phash"]["params"]["hamming"] == 2


def test_keep_largest(dup_dataset, tmp_path):
    src, table, _ = dup_dataset
    ds = fresh_copy(src, tmp_path / "ds")
    dedupe_json(ds, "--keep", "largest", "--by", "content,phash", "--by", "url")
    ok = {i for i, r in enumerate(table.to_pylist()) if r["status"] == "success"}
    for m in METHODS:
        pred = clusters_from_marks(ds, m, ok)
        assert pred == reference_keepers(table, m, largest=True), m
    # the largest rule actually changed some keepers
    assert clusters_from_marks(ds, "phash", ok) != reference_keepers(table, "phash")


def test_filter_consumes_marks(dup_dataset, tmp_path):
    src, table, _ = dup_dataset
    ds = fresh_copy(src, tmp_path / "ds")
    s = dedupe_json(ds)
    px = tool("pixelmill")
    for m in METHODS:
        r = run([px, "filter", ds, "--dedupe", m, "--view", f"v{m}", "--json"])
        c = json.loads(r.stdout)
        assert c["dedupe"][m] == s["methods"][m]["duplicates"]
        assert c["kept"] == s["success"] - s["methods"][m]["duplicates"]
    r = mpirun(2, [px, "filter", ds, "--dedupe", "url,content,phash", "--view", "all", "--json"])
    c = json.loads(r.stdout)
    dropped = set()
    for m in METHODS:
        dropped |= set(read_marks(ds, m))
    assert c["kept"] == s["success"] - len(dropped)
    v = json.load(open(os.path.join(ds, "_views", "all", "view.json")))
    assert v["dedupe_source"] == {m: "_dedupe" for m in METHODS}


def test_usage_errors(dup_dataset, tmp_path):
    src, _, _ = dup_dataset
    px = tool("pixelmill")
    assert run([px, "dedupe", src, "--by", "nope"], check=False).returncode == 2
    assert run([px, "dedupe", src, "--hamming", "40"], check=False).returncode == 2
    assert run([px, "dedupe", src, "--memory-limit", "lots"], check=False).returncode == 2
    assert run([px, "dedupe", str(tmp_path)], check=False).returncode != 0


# ---- the fake internet: download a small corpus, dedupe it, score against duplicates.json --

def test_fakenet_corpus_precision_recall(tmp_path):
    import sys
    import pyarrow.parquet as pq
    from conftest import ROOT
    sys.path.insert(0, str(ROOT / "tests" / "fakenet"))
    import make_corpus
    from server import FakeInternet
    corpus = make_corpus.ensure_corpus(count=200)
    with FakeInternet(corpus) as net:
        lists = tmp_path / "lists"
        lists.mkdir()
        net.write_lists(lists)
        man = net.manifest()
        keep = [i for i, m in enumerate(man) if m["outcome"] == "success"]
        t = pq.read_table(lists / "urls.parquet")
        pq.write_table(t.take(keep), lists / "ok.parquet")
        limits = json.load(open(os.path.join(corpus, "corpus.json")))["limits"]
        ds = str(tmp_path / "ds")
        mpirun(2, [tool("pixelmill"), "download", "--input", lists / "ok.parquet", "--output",
                   ds, "--url-col", "URL", "--caption-col", "TEXT", "--samples-per-shard", "40",
                   "--timeout", "6", "--retries", "2", "--ca-file", net.ca_file,
                   "--max-bytes", str(limits["max_success_bytes"] + 1024), "--concurrency",
                   "16", "--threads", "2", "--allow-address", "127.0.0.1"], timeout=300)
    dups = json.load(open(lists / "duplicates.json"))
    s = dedupe_json(ds, np_=2)
    rows = []
    index = json.load(open(os.path.join(ds, "dataset.json")))
    for sh in index["shardlist"]:
        rows += pq.read_table(os.path.join(ds, sh["url"][:-4] + ".parquet")).to_pylist()
    ok = [g for g, r in enumerate(rows) if r["status"] == "success"]
    assert len(ok) >= 0.9 * len(keep)
    url_of = {g: rows[g]["url"] for g in ok}
    for m, keys in (("content", ["exact"]), ("phash", ["exact", "near"])):
        # phash truth: exact copies are near-duplicates too (join the groups by URL)
        gid = {}
        for key in keys:
            for grp in dups[key]:
                old = {gid[u] for u in grp if u in gid}
                new = min(old | {min(grp)})
                for u in list(gid):
                    if gid[u] in old:
                        gid[u] = new
                for u in grp:
                    gid[u] = new
        truth = {g: ("g", gid[url_of[g]]) if url_of[g] in gid else ("u", url_of[g]) for g in ok}
        pred = clusters_from_marks(ds, m, set(ok))
        p, r = pair_scores(pred, truth, ok)
        print(f"fakenet dedupe {m}: {len(ok)} images, {s['methods'][m]['duplicates']} "
              f"duplicates, pairwise precision {p:.4f} recall {r:.4f}")
        if m == "content":
            assert (p, r) == (1.0, 1.0)
        else:
            assert p >= 0.99 and r >= 0.95
