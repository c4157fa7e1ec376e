"""pixelmill doctor: the real binary against references — os/shutil for CPU, memory and
disk, `fi_info` (libfabric's own tool) for providers, a local HTTP server for S3
reachability, and promtool (or the prometheus_client parser) for the metrics file.
GPU and NCCL checks can only be exercised for their 'skipped'/'fail' paths on machines
without a GPU; they are compared with what the machine really has."""
import http.server
import json
import os
import re
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from conftest import run, tool

LAX = ["--max-load-per-cpu", "1000"]  # shared build machines are loaded: no load warning


def doctor(*args, check=True, env=None):
    r = run([tool("pixelmill"), "doctor", *args], check=False,
            env=dict(os.environ, **(env or {})))
    if check:
        assert r.returncode == 0, r.stdout + r.stderr
    return r


def doctor_json(*args, env=None):
    r = doctor("--json", *args, check=False, env=env)
    assert r.returncode in (0, 1), r.stderr
    doc = json.loads(r.stdout)
    assert doc["healthy"] == (r.returncode == 0)
    return r.returncode, doc, {c["name"]: c for c in doc["checks"]}


def test_host_checks_match_the_system():
    rc, doc, checks = doctor_json(*LAX)
    assert rc == 0 and doc["reasons"] == []
    assert checks["cpu"]["status"] == "ok"
    assert checks["cpu"]["value"] == os.cpu_count()
    meminfo = dict(re.findall(r"^(\w+):\s+(\d+) kB", Path("/proc/meminfo").read_text(), re.M))
    avail = int(meminfo["MemAvailable"]) * 1024
    assert abs(checks["memory"]["value"] - avail) < 0.2 * avail
    assert abs(checks["load"]["value"] - os.getloadavg()[0]) < max(2.0, os.getloadavg()[0])


def test_table_is_aligned_and_ends_with_the_verdict():
    r = doctor(*LAX)
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["CHECK", "STATUS", "DETAIL"]
    col = lines[0].index("STATUS")
    for line in lines[1:-1]:
        assert line[col - 2:col] == "  " and line[col] != " ", line
    assert lines[-1] == "healthy"


def test_force_fail_is_unhealthy_with_the_reason():
    r = doctor("--force-fail", "bad DIMM in slot 3", *LAX, check=False)
    assert r.returncode == 1
    assert r.stdout.splitlines()[-1] == "unhealthy: forced: bad DIMM in slot 3"
    rc, doc, _ = doctor_json("--force-fail", "x", *LAX)
    assert rc == 1 and doc["reasons"] == ["forced: x"]


def test_warning_fails_only_with_fail_on_warning():
    load = os.getloadavg()[0]
    if load <= 0:
        pytest.skip("load average is exactly 0: cannot force the load warning")
    rc, _, checks = doctor_json("--max-load-per-cpu", "0")
    assert checks["load"]["status"] == "warn" and rc == 0
    rc, doc, _ = doctor_json("--max-load-per-cpu", "0", "--fail-on-warning")
    assert rc == 1 and doc["reasons"][0].startswith("load: ")


@pytest.mark.parametrize("args", [["--bogus"], ["--storage"], ["--min-gpus", "x"],
                                  ["--min-free-gib", "-1"], ["--storage-mib", "0"],
                                  ["--fabric="]])
def test_usage_errors_exit_2(args):
    r = doctor(*args, check=False)
    assert r.returncode == 2, (args, r.stdout, r.stderr)


def test_help():
    r = doctor("--help")
    assert "Exit status: 0 healthy, 1 unhealthy" in r.stdout


def test_storage_rates_free_space_and_cleanup(tmp_path):
    rc, _, c = doctor_json("--storage", str(tmp_path), "--storage-mib", "8", *LAX)
    assert rc == 0
    assert c["storage.write"]["status"] == "ok" and c["storage.write"]["value"] > 0
    assert c["storage.read"]["status"] == "ok" and "verified" in c["storage.read"]["detail"]
    assert re.search(r"O_DIRECT|fadvise\(DONTNEED\)", c["storage.read"]["detail"])
    free = shutil.disk_usage(tmp_path).free
    assert abs(c["storage.free"]["value"] - free) < 0.05 * free + (64 << 20)
    assert list(tmp_path.iterdir()) == []  # the test file is removed


def test_storage_thresholds_and_missing_dir(tmp_path):
    rc, doc, c = doctor_json("--storage", str(tmp_path), "--storage-mib", "2",
                             "--min-write-mbps", "1e12", *LAX)
    assert rc == 1 and c["storage.write"]["status"] == "fail"
    assert "below the minimum" in c["storage.write"]["detail"]
    rc, _, c = doctor_json("--storage", str(tmp_path), "--storage-mib", "1",
                           "--min-free-gib", "1e9", *LAX)
    assert rc == 1 and c["storage.free"]["status"] == "fail"
    rc, _, c = doctor_json("--storage", str(tmp_path / "missing"), *LAX)
    assert rc == 1 and c["storage.free"]["status"] == "fail"
    assert "No such file" in c["storage.free"]["detail"]


def has_gpu():
    return any(Path("/dev").glob("nvidia[0-9]*"))


def test_gpu_checks_are_skipped_not_faked_without_a_gpu():
    rc, _, c = doctor_json("--gpu", "--nccl", *LAX)
    if has_gpu():
        assert c["gpu"]["status"] == "ok" and c["gpu"]["value"] >= 1
        assert c["gpu0.sgemm"]["status"] == "ok" and "results exact" in c["gpu0.sgemm"]["detail"]
        assert c["gpu0.membw"]["status"] == "ok"
        return
    assert rc == 0
    assert c["gpu"]["status"] == "skipped" and c["gpu"]["detail"]
    assert "value" not in c["gpu"]
    assert c["nccl"]["status"] == "skipped"
    assert not any(n.startswith("gpu0") for n in c)
    # a node that must have GPUs fails instead
    rc, doc, c = doctor_json("--min-gpus", "1", "--nccl", "--min-nccl-busbw", "100", *LAX)
    assert rc == 1 and c["gpu"]["status"] == "fail" and c["nccl"]["status"] == "fail"


def fi_info_providers():
    out = subprocess.run(["fi_info"], capture_output=True, text=True, timeout=60).stdout
    provs = set()
    for m in re.finditer(r"^provider: (\S+)", out, re.M):
        provs.update(m.group(1).split(";"))
    return provs


@pytest.mark.skipif(shutil.which("fi_info") is None, reason="libfabric-bin not installed")
def test_fabric_providers_match_fi_info():
    want = fi_info_providers()
    rc, _, c = doctor_json("--fabric", *LAX)
    got = set(c["fabric"]["detail"].removeprefix("providers: ").split(","))
    assert got == want
    assert c["fabric"]["value"] == len(want)
    some = sorted(want)[0]
    rc, _, c = doctor_json("--fabric", some, *LAX)
    assert rc == 0 and c["fabric"]["status"] == "ok"
    if "efa" not in want:
        rc, doc, c = doctor_json("--fabric", "efa", *LAX)
        assert rc == 1 and c["fabric"]["status"] == "fail"
        assert "provider 'efa' not available" in c["fabric"]["detail"]


class Handler(http.server.BaseHTTPRequestHandler):
    seen = []
    status = 403

    def do_HEAD(self):
        Handler.seen.append((self.command, self.path))
        self.send_response(Handler.status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *a):
        pass


@pytest.fixture
def http_server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    Handler.seen.clear()
    Handler.status = 403
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def test_s3_reachability(http_server):
    rc, _, c = doctor_json("--s3", http_server + "/bucket", *LAX)
    assert rc == 0 and c["s3"]["status"] == "ok" and "HTTP 403" in c["s3"]["detail"]
    assert Handler.seen == [("HEAD", "/bucket")]
    # s3:// URLs go to $AWS_ENDPOINT_URL path-style
    rc, _, c = doctor_json("--s3", "s3://my-bucket/some/prefix", *LAX,
                           env={"AWS_ENDPOINT_URL": http_server + "/"})
    assert rc == 0 and Handler.seen[-1] == ("HEAD", "/my-bucket/some/prefix")
    Handler.status = 503
    rc, _, c = doctor_json("--s3", http_server, *LAX)
    assert rc == 0 and c["s3"]["status"] == "warn"
    port = http_server.rsplit(":", 1)[1]
    rc, doc, c = doctor_json("--s3", "ftp://x/", *LAX)
    assert rc == 1 and "not an s3://" in c["s3"]["detail"]


def test_s3_unreachable_fails():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    rc, doc, c = doctor_json("--s3", f"http://127.0.0.1:{port}/", "--s3-timeout", "5", *LAX)
    assert rc == 1 and c["s3"]["status"] == "fail" and "unreachable" in c["s3"]["detail"]


DOCUMENTED = ["pixelmill_doctor_healthy", "pixelmill_doctor_last_run_timestamp_seconds",
              "pixelmill_doctor_check_status", "pixelmill_doctor_cpus",
              "pixelmill_doctor_memory_available_bytes", "pixelmill_doctor_load1",
              "pixelmill_doctor_storage_free_bytes",
              "pixelmill_doctor_storage_write_bytes_per_second",
              "pixelmill_doctor_storage_read_bytes_per_second"]


def parse_metrics(text):
    """Families by name, via promtool's checker and the reference Python parser."""
    from prometheus_client.parser import text_string_to_metric_families
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_metrics_file_is_valid_prometheus_text(tmp_path):
    prom = tmp_path / "doctor.prom"
    r = doctor("--storage", str(tmp_path), "--storage-mib", "2", "--force-fail", 'say "hi"\\n',
               "--metrics-file", str(prom), *LAX, check=False)
    assert r.returncode == 1
    text = prom.read_text()
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))
    if shutil.which("promtool"):
        p = subprocess.run(["promtool", "check", "metrics"], input=text, text=True,
                           capture_output=True)
        assert p.returncode == 0, p.stdout + p.stderr
    fams = parse_metrics(text)
    for name in DOCUMENTED:
        assert name in fams, name
    assert fams["pixelmill_doctor_healthy"].samples[0].value == 0
    status = {s.labels["check"]: s.value for s in fams["pixelmill_doctor_check_status"].samples}
    assert status["forced"] == 2 and status["cpu"] == 0 and status["storage.read"] == 0
    # the documented names are the ones in docs/operators.md
    doc = (Path(__file__).resolve().parent.parent / "docs/operators.md").read_text()
    for name in DOCUMENTED:
        assert name in doc, name


def test_doctor_metric_names_in_docs_and_dashboard():
    root = Path(__file__).resolve().parent.parent
    doc = (root / "docs/operators.md").read_text()
    dash = json.loads((root / "cluster/monitoring/grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    names = set()
    for e in exprs:
        names.update(re.findall(r"\bpixelmill_[a-z0-9_]+", e))
    assert names
    for n in names:
        base = re.sub(r"_(bucket|sum|count)$", "", n)
        assert base in doc, f"dashboard metric {n} is not documented in docs/operators.md"


# --- GPU and NCCL code paths against a CPU stand-in runtime ------------------------------
# No GPU here: tests/gpu_stub/cuda_stub.c implements the few CUDA runtime, cuBLAS and NCCL
# calls the doctor makes on the CPU (memory = malloc, GEMM = loops, all-reduce = sums),
# so the doctor's own logic — rows per device, exact-result checks, busbw formula, error
# handling — runs for real. The numbers it measures are CPU numbers, not GPU numbers.

def cmake_cache(name):
    build = Path(tool("pixelmill")).parent
    m = re.search(rf"^{name}:\w+=(.*)$", (build / "CMakeCache.txt").read_text(), re.M)
    return m.group(1) if m and not m.group(1).endswith("NOTFOUND") else None


@pytest.fixture(scope="module")
def gpu_stub(tmp_path_factory):
    inc = [cmake_cache("CUDA_RUNTIME_INCLUDE"), cmake_cache("CUBLAS_INCLUDE"),
           cmake_cache("NCCL_INCLUDE")]
    if not all(inc) or shutil.which("cc") is None:
        pytest.skip("pixelmill was built without the CUDA/NCCL headers")
    ver = Path(inc[0], "cuda_runtime_api.h").read_text()
    major = int(re.search(r"#define CUDART_VERSION\s+(\d+)", ver).group(1)) // 1000
    d = tmp_path_factory.mktemp("gpu_stub")
    src = Path(__file__).parent / "gpu_stub/cuda_stub.c"
    for define, lib in [("STUB_CUDART", f"libcudart.so.{major}"),
                        ("STUB_CUBLAS", f"libcublas.so.{major}"), ("STUB_NCCL", "libnccl.so.2")]:
        run(["cc", "-shared", "-fPIC", "-O2", f"-D{define}", *[f"-I{i}" for i in set(inc)],
             "-o", d / lib, src])
    return str(d)


def stub_doctor(stub, *args, **env):
    e = {"LD_LIBRARY_PATH": stub, **{k: str(v) for k, v in env.items()}}
    return doctor_json("--gemm-size", "48", "--membw-mib", "4", "--nccl-mib", "2", *args,
                       *LAX, env=e)


def test_gpu_rows_per_device_and_busbw_formula(gpu_stub):
    rc, doc, c = stub_doctor(gpu_stub, "--gpu", "--nccl", "--min-gpus", "3", STUB_GPUS=3)
    assert rc == 0, doc
    assert c["gpu"]["value"] == 3 and c["gpu"]["status"] == "ok"
    for d in range(3):
        assert c[f"gpu{d}"]["value"] == 80 << 30
        assert "results exact" in c[f"gpu{d}.sgemm"]["detail"]
        assert c[f"gpu{d}.sgemm"]["value"] > 0 and c[f"gpu{d}.membw"]["value"] > 0
    assert "gpu3" not in c
    m = re.search(r"busbw ([\d.]+) GB/s, algbw ([\d.]+) GB/s \(3 GPUs", c["nccl"]["detail"])
    assert m and "sums verified" in c["nccl"]["detail"]
    busbw = c["nccl"]["value"] / 1e9
    assert abs(busbw - float(m.group(1))) <= 0.051
    algbw = float(m.group(2))
    assert abs(busbw - algbw * 2 * (3 - 1) / 3) <= 0.05 * 4 / 3 + 0.001


def test_wrong_gemm_result_fails_the_gpu(gpu_stub):
    rc, doc, c = stub_doctor(gpu_stub, "--gpu", STUB_CORRUPT_SGEMM=1)
    assert rc == 1
    assert c["gpu0.sgemm"]["status"] == "fail"
    assert c["gpu0.sgemm"]["detail"].startswith("1 of 2304 results wrong")
    assert any(r.startswith("gpu0.sgemm: ") for r in doc["reasons"])


def test_wrong_allreduce_sum_fails_nccl(gpu_stub):
    rc, doc, c = stub_doctor(gpu_stub, "--nccl", STUB_GPUS=4, STUB_CORRUPT_NCCL=1)
    assert rc == 1
    assert c["nccl"]["detail"].startswith("all-reduce result wrong on GPU 1")
    assert "want 10" in c["nccl"]["detail"]


def test_cuda_errors_fail_with_the_call_and_message(gpu_stub):
    rc, doc, c = stub_doctor(gpu_stub, "--gpu", STUB_FAIL_MALLOC=1)
    assert rc == 1
    assert c["gpu0.sgemm"]["status"] == "fail"
    assert "Malloc" in c["gpu0.sgemm"]["detail"]
    assert "out of memory (stub)" in c["gpu0.sgemm"]["detail"]


def test_one_gpu_skips_nccl_unless_required_and_thresholds(gpu_stub):
    rc, doc, c = stub_doctor(gpu_stub, "--gpu", "--nccl", STUB_GPUS=1)
    assert rc == 0 and c["nccl"]["status"] == "skipped" and "1 visible" in c["nccl"]["detail"]
    rc, doc, c = stub_doctor(gpu_stub, "--min-gpus", "2", "--nccl", STUB_GPUS=1)
    assert rc == 1 and c["gpu"]["status"] == "fail" and c["nccl"]["status"] == "fail"
    rc, doc, c = stub_doctor(gpu_stub, "--gpu", "--min-gpu-tflops", "1e6",
                             "--min-gpu-membw", "1e9", STUB_GPUS=1)
    assert rc == 1
    assert "below the minimum" in c["gpu0.sgemm"]["detail"]
    assert "below the minimum" in c["gpu0.membw"]["detail"]


# --- cluster/slurm/prolog.sh without Slurm: a recording `scontrol` on PATH -------------

ROOT = Path(__file__).resolve().parent.parent


def run_prolog(tmp_path, pixelmill, args, timeout_s="120"):
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    rec = tmp_path / "scontrol.args"
    (bindir / "scontrol").write_text(
        f'#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done > {rec}\n')
    (bindir / "scontrol").chmod(0o755)
    env = dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}", PIXELMILL=pixelmill,
               PIXELMILL_DOCTOR_ARGS=args, PIXELMILL_DOCTOR_CONF=str(tmp_path / "none"),
               PIXELMILL_DOCTOR_TIMEOUT=timeout_s, SLURMD_NODENAME="node-17")
    r = subprocess.run([ROOT / "cluster/slurm/prolog.sh"], env=env, capture_output=True,
                       text=True, timeout=60)
    return r, (rec.read_text().splitlines() if rec.exists() else None)


def test_prolog_passes_a_healthy_node(tmp_path):
    r, rec = run_prolog(tmp_path, tool("pixelmill"), "--max-load-per-cpu 1000")
    assert r.returncode == 0 and rec is None


def test_prolog_drains_with_the_reason(tmp_path):
    r, rec = run_prolog(tmp_path, tool("pixelmill"),
                        "--max-load-per-cpu 1000 --force-fail 'GPU 3 \"fell off the bus\"'")
    assert r.returncode == 1
    assert rec == ["update", "nodename=node-17", "state=drain",
                   "reason=pixelmill doctor: forced: GPU 3 'fell off the bus'"]


def test_prolog_drains_when_the_doctor_is_missing_or_hangs(tmp_path):
    r, rec = run_prolog(tmp_path, str(tmp_path / "no-such-pixelmill"), "")
    assert r.returncode == 1
    assert rec[-1].startswith("reason=pixelmill doctor: pixelmill not found")
    hang = tmp_path / "hang.sh"
    hang.write_text("#!/bin/sh\nsleep 30\n")
    hang.chmod(0o755)
    r, rec = run_prolog(tmp_path, str(hang), "", timeout_s="1")
    assert r.returncode == 1
    assert rec[-1] == "reason=pixelmill doctor: doctor hung (timeout 1s)"
