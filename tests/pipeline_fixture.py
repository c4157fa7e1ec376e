"""Pipeline files for `pixelmill run` over the fake internet (tests/fakenet), the same
stages run one by one as the reference, and what "the same result" means: the dataset's
sidecars and tar members, the dedupe marks, the view's keep-bitmaps and the packed
shards. Used by tests/test_pipeline_run.py and tests/test_slurm_pipeline.py."""
import hashlib
import json
from pathlib import Path

from conftest import run, tool
from test_download import summary, tar_members

STAGES = ["download", "dedupe", "filter", "pack"]
ROWS = 72  # of the paced list (every image rate-limited): enough for every status and shard


def pipeline_list(net):
    """The first ROWS rows of the fake internet's paced list (tests/test_download.py)."""
    import pyarrow.parquet as pq
    p = net.lists / "pipeline.parquet"
    if not p.exists():
        pq.write_table(pq.read_table(net.lists / "paced.parquet").slice(0, ROWS), p)
    return p


def stage_options(net, dataset, packed, concurrency=32, threads=2):
    """{section: [(key, value)]} of a download -> dedupe -> filter -> pack pipeline."""
    return {
        "pipeline": [("dataset", dataset)],
        "download": [("input", pipeline_list(net)), ("url-col", "URL"),
                     ("caption-col", "TEXT"), ("keep-cols", "punsafe,WIDTH,HEIGHT"),
                     ("samples-per-shard", 4), ("timeout", 6), ("retries", 2),
                     ("ca-file", net.ca_file), ("user-agent-token", "pixelmill"),
                     ("max-bytes", net.max_bytes), ("concurrency", concurrency),
                     ("threads", threads), ("allow-address", "127.0.0.1"),
                     ("quiet", "true")],
        "dedupe": [("by", "url,content,phash")],
        "filter": [("view", "safe"), ("where", "punsafe < 0.5"),
                   ("where", "WIDTH >= 8"), ("dedupe", "url,content")],
        "pack": [("output", packed), ("samples-per-shard", 10)],
    }


def write_ini(path, sections):
    lines = []
    for name, kvs in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {v}" for k, v in kvs]
        lines.append("")
    Path(path).write_text("\n".join(lines))
    return path


def run_stages_one_by_one(sections):
    """The reference: each stage as its own command, with the options the INI gives."""
    ds = sections["pipeline"][0][1]
    def opts(name):
        out = []
        for k, v in sections[name]:
            out += [f"--{k}"] if v == "true" else [f"--{k}", v]
        return out
    run([tool("pixelmill"), "download", "--output", ds] + opts("download"), timeout=300)
    run([tool("pixelmill"), "dedupe", ds] + opts("dedupe"))
    run([tool("pixelmill"), "filter", ds] + opts("filter"))
    packed = dict(sections["pack"])["output"]
    run([tool("pixelmill"), "pack", f"{ds}:safe"] + opts("pack"))
    return result(ds, packed)


def digest(p):
    return hashlib.sha256(Path(p).read_bytes()).hexdigest()


def result(ds, packed):
    """Everything the pipeline produced that must not depend on interruptions."""
    ds, packed = Path(ds), Path(packed)
    for d in (ds, packed):
        run([tool("pixelmill"), "verify", d])
    marks = {}
    for m in sorted((ds / "_dedupe").glob("*/marks.json")):
        doc = json.loads(m.read_text())
        marks[m.parent.name] = {k: doc[k] for k in ("records", "duplicates", "groups")}
        marks[m.parent.name]["files"] = {
            f.name: digest(f) for f in sorted(m.parent.iterdir())
            if f.is_file() and f.name != "marks.json"}
    view = {f.name: digest(f) for f in sorted((ds / "_views" / "safe").iterdir())
            if f.is_file() and f.name != "view.json"}
    return {"dataset": summary(ds), "members": tar_members(ds), "marks": marks,
            "view": view, "packed": summary_packed(packed), "packed_members": tar_members(packed)}


def summary_packed(packed):
    import pyarrow.parquet as pq
    files = sorted(Path(packed).glob("[0-9]*.parquet"))
    return [r for f in files for r in pq.read_table(f).to_pylist()]


def diff(a, b):
    """Names of the parts that differ (for assertion messages)."""
    return [k for k in a if a[k] != b[k]]
