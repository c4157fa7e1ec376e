"""The fake internet (tests/fakenet): corpus generator and loopback servers.

Checked with plain curl (subprocess) and Python's urllib/ssl/socket against a real nginx
and the raw helper, with a small cached corpus (200 rows)."""
import csv
import hashlib
import io
import json
import os
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import pytest

pytest.importorskip("PIL")
pytest.importorskip("skimage")
sys.path.insert(0, str(Path(__file__).resolve().parent / "fakenet"))
import make_corpus  # noqa: E402
from server import METADATA_URL, FakeInternet, pid_alive  # noqa: E402
from PIL import Image, ImageOps  # noqa: E402

pytestmark = [
    pytest.mark.skipif(not os.path.exists("/usr/sbin/nginx"),
                       reason="nginx not installed (scripts/install-deps.sh)"),
    # no project binary is involved: once per scripts/test.sh run is enough
    pytest.mark.skipif(os.environ.get("PIXELMILL_SANITIZED") == "1",
                       reason="test infrastructure only; runs in the normal pass"),
]

OUTCOMES = {"success", "http 403", "http 404", "http 410", "http 429", "http 500",
            "http 503", "timeout", "too large", "truncated", "too many redirects", "blocked",
            "disallowed", "unsupported format", "decode error", "too many pixels",
            "connection error", "tls error", "invalid url"}
COUNT = 200


@pytest.fixture(scope="module")
def corpus():
    return make_corpus.ensure_corpus(COUNT, seed=0)


@pytest.fixture(scope="module")
def manifest(corpus):
    return json.loads((corpus / "manifest.json").read_text())


@pytest.fixture(scope="module")
def net(corpus):
    with FakeInternet(corpus) as n:
        yield n


def curl(*args, timeout=30):
    """Run curl; returns (info from -w %{json}, headers text, body bytes)."""
    with tempfile.NamedTemporaryFile() as hdr:
        r = subprocess.run(["curl", "-sS", "-D", hdr.name, "-o", "/dev/stdout",
                            "-w", "\n@@CURLINFO@@%{json}", *args],
                           capture_output=True, timeout=timeout)
        headers = Path(hdr.name).read_text("latin-1")
    body, _, info = r.stdout.rpartition(b"\n@@CURLINFO@@")
    info = json.loads(info)
    info["rc"] = r.returncode
    return info, headers, body


def header(headers, name):
    vals = [ln.split(":", 1)[1].strip() for ln in headers.splitlines()
            if ln.lower().startswith(name.lower() + ":")]
    return vals


def first(manifest, case):
    return next(e for e in manifest if e["case"] == case)


# ------------------------------------------------------------------ corpus


def test_lists_agree_and_look_like_laion(corpus, manifest):
    import pyarrow as pa
    import pyarrow.parquet as pq
    t = pq.read_table(corpus / "urls.parquet")
    assert t.column_names == ["URL", "TEXT", "WIDTH", "HEIGHT", "similarity", "punsafe",
                              "pwatermark", "AESTHETIC_SCORE", "LANGUAGE"]
    assert t.schema.field("punsafe").type == pa.float32()
    assert t.schema.field("pwatermark").type == pa.float32()
    assert t.num_rows == len(manifest) == COUNT
    rows = t.to_pylist()
    with open(corpus / "urls.csv", newline="", encoding="utf-8") as f:
        crow = list(csv.DictReader(f))
    jrow = [json.loads(ln) for ln in (corpus / "urls.jsonl").read_text("utf-8").splitlines()]
    assert [r["URL"] for r in rows] == [r["URL"] for r in crow] == [r["URL"] for r in jrow] \
        == [e["url"] for e in manifest]
    assert [r["TEXT"] for r in rows] == [r["TEXT"] for r in crow] == [r["TEXT"] for r in jrow]
    assert any(r["WIDTH"] is None for r in rows) and any(r["punsafe"] is None for r in rows)
    for r, e in zip(rows, manifest):
        if r["WIDTH"] is not None:
            assert (r["WIDTH"], r["HEIGHT"]) == (e["width"], e["height"])
    assert {e["outcome"] for e in manifest} <= OUTCOMES
    # every fault/special case is present at least once, in the input order's mix
    assert {c for c, *_ in make_corpus.CASES} <= {e["case"] for e in manifest}
    assert {"plain", "exact_duplicate", "near_duplicate"} <= {e["case"] for e in manifest}


def test_images_match_manifest(corpus, manifest):
    sizes = []
    seen = set()
    for e in manifest:
        if not e["file"] or not e["file"].startswith("img/") or e["file"] in seen:
            continue
        seen.add(e["file"])
        data = (corpus / e["file"]).read_bytes()
        assert len(data) == e["bytes"] and hashlib.sha256(data).hexdigest() == e["sha256"]
        im = Image.open(io.BytesIO(data))
        assert im.format.lower() == e["format"], e["file"]
        assert im.size == (e["stored_width"], e["stored_height"]), e["file"]
        im.load()
        orient = im.getexif().get(0x0112)
        assert orient == e["orientation"], e["file"]
        shown = ImageOps.exif_transpose(im)
        assert shown.size == (e["width"], e["height"]), e["file"]
        assert getattr(im, "n_frames", 1) == e["frames"]
        v = e["variant"]
        if v == "grey":
            assert im.mode == "L"
        elif v == "cmyk":
            assert im.mode == "CMYK"
        elif v in ("rgba", "lossless_alpha"):
            assert im.mode == "RGBA"
        elif v == "palette":
            assert im.mode == "P"
        elif v == "16bit":
            assert data[24] == 16          # IHDR bit depth
        elif v == "progressive":
            assert im.info.get("progressive") or im.info.get("progression")
        elif v == "animated":
            assert e["frames"] >= 2
        sizes.append(max(e["width"], e["height"]))
    assert {(e["format"], e["variant"]) for e in manifest if e["format"]} >= \
        {(f, v) for f, v, _ in make_corpus.VARIANTS}
    assert any(s < 64 for s in sizes) and any(s > 4000 for s in sizes)
    mid = sum(1 for s in sizes if 200 <= s <= 1500)
    assert mid > 0.6 * len(sizes)


def test_duplicate_ground_truth(corpus, manifest):
    d = json.loads((corpus / "duplicates.json").read_text())
    by_url = {e["url"]: e for e in manifest}
    assert d["exact"] and d["near"] and d["same_url"]
    for g in d["exact"]:
        assert len(g) >= 2 and len(set(g)) == len(g)
        assert len({by_url[u]["sha256"] for u in g}) == 1
        assert len({(corpus / by_url[u]["file"]).read_bytes() for u in g}) == 1
    for u in d["same_url"]:
        assert sum(1 for e in manifest if e["url"] == u) >= 2

    def ham(a, b):
        return bin(int(a, 16) ^ int(b, 16)).count("1")
    within, group_of = [], {}
    for n, g in enumerate(d["near"]):
        assert len({by_url[u]["sha256"] for u in g}) >= 2   # really different bytes
        for u in g:
            group_of[u] = n
            within += [ham(by_url[u]["phash"], by_url[v]["phash"]) for v in g]
    for g in d["exact"]:
        for u in g:
            group_of.setdefault(u, ("x", g[0]))
    imgs = [e for e in {e["url"]: e for e in manifest if e["phash"]}.values()]
    cross = min(ham(a["phash"], b["phash"]) for i, a in enumerate(imgs) for b in imgs[i + 1:]
                if group_of.get(a["url"], a["url"]) != group_of.get(b["url"], b["url"]))
    # the made near-duplicates are near; nothing else is
    assert max(within) <= 6 < 10 <= cross


def test_generation_is_deterministic_and_independent_of_jobs(tmp_path):
    a = make_corpus.build(tmp_path / "a", count=30, seed=7, jobs=1)
    b = make_corpus.build(tmp_path / "b", count=30, seed=7, jobs=2)
    assert a["cache_key"] == b["cache_key"]

    def digest(d):
        return {p.relative_to(d).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(d.rglob("*")) if p.is_file() and p.name != "corpus.json"}
    da = digest(tmp_path / "a")
    assert da == digest(tmp_path / "b") and len(da) > 30
    assert make_corpus.cache_key(make_corpus.params_of(30, 8)) != a["cache_key"]


def test_fault_files(corpus, manifest):
    for case in ("corrupt_truncated_jpeg", "corrupt_garbled_jpeg", "corrupt_png",
                 "empty_body", "html_as_jpeg"):
        data = (corpus / first(manifest, case)["file"]).read_bytes()
        with pytest.raises(Exception):
            Image.open(io.BytesIO(data)).load()
    # bombs: headers claim 60000 x 60000 (GIF: 65535 x 65535) and Pillow refuses them
    for case, side in (("bomb_png", 60000), ("bomb_jpeg", 60000), ("bomb_gif", 65535)):
        data = (corpus / first(manifest, case)["file"]).read_bytes()
        assert len(data) < 1 << 20
        with pytest.raises(Image.DecompressionBombError):
            Image.open(io.BytesIO(data))
        old = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            assert Image.open(io.BytesIO(data)).size == (side, side)
        finally:
            Image.MAX_IMAGE_PIXELS = old
    # the PNG bomb is fully valid: CRCs right, zlib stream complete with the right
    # Adler-32, exactly height * (1 + ceil(width/8)) bytes of scanlines
    data = (corpus / first(manifest, "bomb_png")["file"]).read_bytes()
    pos, idat = 8, b""
    while pos < len(data):
        ln, typ = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + ln]
        assert struct.unpack(">I", data[pos + 8 + ln:pos + 12 + ln])[0] == \
            zlib.crc32(typ + body) & 0xFFFFFFFF
        idat += body if typ == b"IDAT" else b""
        pos += 12 + ln
    dec, total = zlib.decompressobj(), 0
    for i in range(0, len(idat), 1 << 16):
        total += len(dec.decompress(idat[i:i + 1 << 16], 1 << 24))
        while dec.unconsumed_tail:
            total += len(dec.decompress(dec.unconsumed_tail, 1 << 24))
    assert dec.eof and total == 60000 * (1 + 7500)
    assert Image.open(corpus / first(manifest, "unsupported_tiff")["file"]).format == "TIFF"
    assert Image.open(corpus / first(manifest, "unsupported_bmp")["file"]).format == "BMP"
    huge = corpus / first(manifest, "too_large")["file"]
    assert huge.stat().st_size == make_corpus.TOO_LARGE_BYTES


# ------------------------------------------------------------------ servers


def test_every_image_served_with_its_bytes(net, manifest, corpus):
    """All plain/duplicate rows (HTTP and HTTP/2 over HTTPS, odd names, query strings)."""
    ctx = ssl.create_default_context(cafile=net.ca_file)
    n = 0
    for e in net.manifest():
        if e["case"] not in ("plain", "near_duplicate", "exact_duplicate", "same_url"):
            continue
        with urllib.request.urlopen(e["url"], timeout=10, context=ctx) as r:
            body = r.read()
            assert r.status == 200
            assert r.headers["Content-Type"] == {"jpeg": "image/jpeg", "png": "image/png",
                                                 "webp": "image/webp",
                                                 "gif": "image/gif"}[e["format"]]
        assert hashlib.sha256(body).hexdigest() == e["sha256"], e["url"]
        n += 1
    assert n > COUNT // 2
    assert any("%20" in e["url"] or "%C3" in e["url"] for e in net.manifest())


@pytest.mark.parametrize("code", [403, 404, 410, 500, 429, 503])
def test_status_endpoints(net, code):
    for base in (net.http_base, net.https_base):
        info, hdr, _ = curl("--cacert", net.ca_file, f"{base}/status/{code}/x{code}.jpg")
        assert info["http_code"] == code
        ra = header(hdr, "Retry-After")
        assert ra == ([str({429: 2, 503: 3}[code])] if code in (429, 503) else [])


def test_flaky_raw_endpoints(net, manifest, corpus):
    e = first(manifest, "raw_flaky_429")
    url = net.url(e["url"]) + "?test=flaky"
    got = []
    for _ in range(4):
        info, hdr, body = curl(url)
        got.append(info["http_code"])
        if info["http_code"] == 429:
            assert header(hdr, "Retry-After") == ["1"]
    assert got == [429, 429, 200, 200]
    assert hashlib.sha256(body).hexdigest() == e["sha256"]
    e = first(manifest, "raw_flaky_503")
    url = net.url(e["url"]) + "?test=flaky"
    assert [curl(url)[0]["http_code"] for _ in range(3)] == [503, 200, 200]


def test_robots_and_content_types(net, manifest):
    for case, value in (("robots_noai", "noai"), ("robots_noimageai", "noimageai"),
                        ("robots_noindex_noimageai", "noindex, noimageai"),
                        ("robots_ua_noai", "pixelmill: noai"),
                        ("robots_otherbot", "otherbot: noai")):
        e = first(manifest, case)
        info, hdr, body = curl(net.url(e["url"]))
        assert info["http_code"] == 200
        assert header(hdr, "X-Robots-Tag") == [value]
        assert hashlib.sha256(body).hexdigest() == e["sha256"]
    e = first(manifest, "ctype_html")
    info, hdr, body = curl(net.url(e["url"]))
    assert info["content_type"] == "text/html" and hashlib.sha256(body).hexdigest() == e["sha256"]
    e = first(manifest, "ctype_octet_stream")
    info, hdr, body = curl(net.url(e["url"]))
    assert info["content_type"] == "application/octet-stream"
    assert hashlib.sha256(body).hexdigest() == e["sha256"]
    e = first(manifest, "html_as_jpeg")
    info, hdr, body = curl(net.url(e["url"]))
    assert info["content_type"] == "image/jpeg" and body.startswith(b"<!DOCTYPE html")
    for case, ctype in (("unsupported_tiff", "image/tiff"), ("unsupported_bmp", "image/bmp"),
                        ("unsupported_svg", "image/svg+xml")):
        info, _, _ = curl(net.url(first(manifest, case)["url"]))
        assert (info["http_code"], info["content_type"]) == (200, ctype)


def test_too_large_and_bombs_served(net, manifest):
    e = first(manifest, "too_large")
    info, hdr, _ = curl("-I", net.url(e["url"]))
    assert header(hdr, "Content-Length") == [str(make_corpus.TOO_LARGE_BYTES)]
    info, _, _ = curl("--max-filesize", str(10 << 20), net.url(e["url"]))
    assert info["rc"] == 63                       # CURLE_FILESIZE_EXCEEDED
    for case in ("bomb_png", "bomb_jpeg", "bomb_gif"):
        info, _, body = curl(net.url(first(manifest, case)["url"]))
        assert info["http_code"] == 200 and len(body) == first(manifest, case)["bytes"]


def test_slow_drip_is_slow_and_slow_ok_completes(net, manifest):
    e = first(manifest, "slow_drip")
    t0 = time.time()
    info, hdr, body = curl("--max-time", "3", net.url(e["url"]))
    assert info["rc"] == 28 and time.time() - t0 >= 2.9          # timed out
    assert int(header(hdr, "Content-Length")[0]) == e["bytes"] > 60 * make_corpus.DRIP_RATE
    # nginx trickles in bursts: at most rate * (t + 1) plus one buffer
    assert len(body) <= 4 * make_corpus.DRIP_RATE + 4096
    e = first(manifest, "slow_ok")
    info, _, body = curl(net.url(e["url"]))
    assert info["http_code"] == 200 and hashlib.sha256(body).hexdigest() == e["sha256"]
    if e["bytes"] > 4 * make_corpus.SLOW_OK_RATE // 10:
        assert info["speed_download"] < 1.5 * make_corpus.SLOW_OK_RATE
    e = first(manifest, "raw_drip")
    info, hdr, body = curl("--max-time", "2", net.url(e["url"]))
    assert info["rc"] == 28 and info["http_code"] == 200 and len(body) <= 10
    assert int(header(hdr, "Content-Length")[0]) == e["bytes"]


def test_truncated_body_is_shorter_than_content_length(net, manifest):
    e = first(manifest, "raw_truncated")
    info, hdr, body = curl(net.url(e["url"]))
    assert info["rc"] == 18                                      # CURLE_PARTIAL_FILE
    assert int(header(hdr, "Content-Length")[0]) == e["bytes"]
    assert len(body) == e["bytes"] // 2 < e["bytes"]
    with pytest.raises(Exception) as exc:
        urllib.request.urlopen(net.url(e["url"]), timeout=10).read()
    assert "IncompleteRead" in type(exc.value).__name__


def test_neverending_stall_reset_garbage_closed(net, manifest):
    e = first(manifest, "raw_neverending")
    with urllib.request.urlopen(net.url(e["url"]), timeout=10) as r:
        assert r.headers["Content-Length"] is None
        assert r.headers["Content-Type"] == "image/jpeg"
        got = 0
        while got < 8 << 20:
            chunk = r.read(1 << 20)
            assert chunk
            got += len(chunk)
    t0 = time.time()
    info, hdr, body = curl("--max-time", "1", net.url(first(manifest, "raw_stall")["url"]))
    assert info["rc"] == 28 and hdr == "" and body == b"" and time.time() - t0 >= 0.9
    info, _, _ = curl(net.url(first(manifest, "raw_reset")["url"]))
    assert info["rc"] in (52, 56)                  # empty reply / connection reset
    info, _, _ = curl(net.url(first(manifest, "raw_garbage")["url"]))
    assert info["rc"] not in (0, 28) and info["http_code"] == 0
    info, _, _ = curl(net.url(first(manifest, "connection_refused")["url"]))
    assert info["rc"] == 7                         # couldn't connect


def test_redirects(net, manifest):
    e = first(manifest, "redirect_chain")
    url = net.url(e["url"])
    info, hdr, body = curl("-L", "--cacert", net.ca_file, url)
    assert info["http_code"] == 200 and info["num_redirects"] == 3
    assert hashlib.sha256(body).hexdigest() == e["sha256"]
    name = e["file"].split("/", 1)[1]
    assert info["url_effective"].endswith(f"/img/{name}")
    codes = [int(ln.split()[1]) for ln in hdr.splitlines() if ln.startswith("HTTP/")]
    assert codes == [301, 302, 307, 200]
    locs = header(hdr, "Location")
    assert locs[1] == f"/redirect/chain/1/{name}"     # one relative Location
    assert locs[0].startswith(("http://127.0.0.1:", "https://127.0.0.1:"))
    info, _, _ = curl("-L", "--max-redirs", "10", net.url(first(manifest, "redirect_loop")["url"]))
    assert info["rc"] == 47                            # too many redirects
    e = first(manifest, "redirect_loopback")
    info, hdr, _ = curl(net.url(e["url"]))
    assert header(hdr, "Location") == [f"{net.http_base}/img/{e['file'].split('/', 1)[1]}"]
    info, hdr, _ = curl(net.url(first(manifest, "redirect_file_scheme")["url"]))
    assert header(hdr, "Location") == ["file:///etc/passwd"]
    info, hdr, _ = curl(net.url(first(manifest, "redirect_metadata")["url"]))
    assert info["http_code"] == 302 and header(hdr, "Location") == [METADATA_URL]


def test_metadata_canary_shows_in_access_log(net, manifest):
    """A client that followed the metadata redirect through a --connect-to mapping (the
    way download tests must run) lands on nginx with Host 169.254.169.254; only
    loopback is ever connected to."""
    assert not [r for r in net.access_log() if r["host"] == "169.254.169.254"]
    port = net.http_base.rsplit(":", 1)[1]
    info, _, body = curl("-L", "--connect-to", f"169.254.169.254:80:127.0.0.1:{port}",
                         net.url(first(manifest, "redirect_metadata")["url"]))
    assert info["http_code"] == 200 and body.startswith(b"canary")
    hits = [r for r in net.access_log() if r["host"] == "169.254.169.254"]
    assert len(hits) == 1 and hits[0]["path"].startswith("/latest/meta-data/")


def test_https_verifies_only_with_test_ca_and_speaks_h2(net, manifest):
    url = net.https_base + "/health"
    info, _, body = curl("--cacert", net.ca_file, "--http2", url)
    assert info["http_code"] == 200 and body == b"ok\n" and info["http_version"] == "2"
    info, _, _ = curl(url)
    assert info["rc"] == 60                            # untrusted without the CA
    for host in ("127.0.0.1", "localhost"):
        info, _, _ = curl("--cacert", net.ca_file, url.replace("127.0.0.1", host))
        assert info["http_code"] == 200
    ctx = ssl.create_default_context(cafile=net.ca_file)
    with urllib.request.urlopen(url, context=ctx, timeout=10) as r:
        assert r.read() == b"ok\n"
    with pytest.raises(urllib.error.URLError) as exc:
        urllib.request.urlopen(url, context=ssl.create_default_context(), timeout=10)
    assert isinstance(exc.value.reason, ssl.SSLCertVerificationError)
    # the wrong-certificate port: signed by the CA, but for wrong.host.test
    e = first(manifest, "tls_bad_cert")
    info, _, _ = curl("--cacert", net.ca_file, net.url(e["url"]))
    assert info["rc"] == 60
    with pytest.raises(urllib.error.URLError) as exc:
        urllib.request.urlopen(net.url(e["url"]), context=ctx, timeout=10)
    assert "match" in str(exc.value.reason).lower()
    info, _, body = curl("--cacert", net.ca_file, "--resolve",
                         f"wrong.host.test:{net.ports['https_badcert']}:127.0.0.1",
                         net.url(e["url"]).replace("127.0.0.1", "wrong.host.test"))
    assert info["http_code"] == 200 and hashlib.sha256(body).hexdigest() == e["sha256"]


def test_access_log_has_one_line_per_request(net):
    before = len(net.access_log())
    marks = [f"/status/404/logcheck-{i}.jpg?k=v" for i in range(3)]
    for m in marks:
        curl(net.http_base + m)
    curl("--cacert", net.ca_file, net.https_base + "/health")
    curl(net.raw_base + "/health?logcheck")
    log = net.access_log()
    assert len(log) == before + 5
    new = [r for r in log if "logcheck" in r["path"]]
    assert [(r["method"], r["path"], r["status"], r["host"]) for r in new
            if r["server"] == "nginx"] == [("GET", m, 404, "127.0.0.1") for m in marks]
    assert any(r["server"] == "raw" and r["status"] == 200 for r in new)
    h2 = [r for r in log if r["path"] == "/health" and r["scheme"] == "https"]
    assert h2 and h2[-1]["protocol"] == "HTTP/2.0"


# ------------------------------------------------------------------ lifecycle


def _refused(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return False
    except ConnectionRefusedError:
        return True


def test_shutdown_leaves_nothing(corpus):
    net = FakeInternet(corpus).start()
    pids, ports, state = net.pids(), dict(net.ports), net.state
    assert len(pids) >= 3 and all(pid_alive(p) for p in pids)   # master, workers, raw
    # an in-flight slow transfer must not hold up the shutdown
    slow = subprocess.Popen(["curl", "-s", "-o", "/dev/null",
                             net.http_base + "/status/404/x", net.raw_base + "/stall/x"])
    time.sleep(0.3)
    t0 = time.time()
    net.stop()
    assert time.time() - t0 < 30  # the stalled transfer never ends by itself
    slow.wait(10)
    assert not [p for p in pids if pid_alive(p)]
    assert all(_refused(p) for k, p in ports.items() if k != "closed")
    assert not state.exists()


def test_killed_owner_leaves_nothing(corpus, tmp_path):
    """SIGKILL the process that owns a FakeInternet: nginx and the helper follow it."""
    code = ("import sys, json, time; sys.path.insert(0, sys.argv[1]);"
            "from server import FakeInternet;"
            "n = FakeInternet(sys.argv[2], state_dir=sys.argv[3]).start();"
            "print(json.dumps(n.pids()), flush=True); time.sleep(120)")
    p = subprocess.Popen([sys.executable, "-c", code, str(Path(__file__).parent / "fakenet"),
                          str(corpus), str(tmp_path / "state")], stdout=subprocess.PIPE,
                         text=True)
    try:
        pids = json.loads(p.stdout.readline())
        assert len(pids) >= 3 and all(pid_alive(q) for q in pids)
    finally:
        p.kill()
        p.wait()
    deadline = time.time() + 10
    while [q for q in pids if pid_alive(q)] and time.time() < deadline:
        time.sleep(0.05)
    assert not [q for q in pids if pid_alive(q)]


def test_cli_start_stop(corpus, tmp_path):
    srv = Path(__file__).resolve().parent / "fakenet" / "server.py"
    state = tmp_path / "state"
    r = subprocess.run([sys.executable, srv, "start", "--corpus", corpus, "--state", state],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    env = dict(ln.split("=", 1) for ln in r.stdout.splitlines())
    assert env == dict(ln.split("=", 1) for ln in (state / "fakenet.env").read_text().splitlines())
    info = json.loads((state / "fakenet.json").read_text())
    try:
        import pyarrow.parquet as pq
        urls = pq.read_table(env["FAKENET_URLS"]).column("URL").to_pylist()
        assert not any("@HTTP" in u for u in urls)
        man = json.loads(Path(env["FAKENET_MANIFEST"]).read_text())
        assert [m["url"] for m in man] == urls
        e = next(m for m in man if m["case"] == "plain")
        info2, _, body = curl("--cacert", env["FAKENET_CA_FILE"], e["url"])
        assert info2["http_code"] == 200 and hashlib.sha256(body).hexdigest() == e["sha256"]
        with open(state / "urls.csv", encoding="utf-8") as f:
            assert next(csv.DictReader(f))["URL"] == urls[0]
        r = subprocess.run([sys.executable, srv, "start", "--corpus", corpus, "--state",
                            state], capture_output=True, text=True, timeout=60)
        assert r.returncode != 0 and "already running" in r.stderr
        assert subprocess.run([sys.executable, srv, "status", "--state", state],
                              capture_output=True).returncode == 0
    finally:
        r = subprocess.run([sys.executable, srv, "stop", "--state", state],
                           capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert not [p for p in info["pids"] + [info["supervisor_pid"]] if pid_alive(p)]
    assert _refused(int(env["FAKENET_HTTP"].rsplit(":", 1)[1]))
    assert subprocess.run([sys.executable, srv, "status", "--state", state],
                          capture_output=True).returncode == 1


# ------------------------------------------------------------------ manifest oracle


def test_manifest_outcomes_match_reference_client(net, manifest):
    """Every row of the corpus, fetched by the reference client over the live servers,
    ends as the manifest says (successes with the manifest's bytes and displayed size),
    and nothing ever reaches for 169.254.169.254."""
    from concurrent.futures import ThreadPoolExecutor
    import reference_client
    limits = json.loads((net.corpus / "corpus.json").read_text())["limits"]
    # any cap in [max_success_bytes, too_large_bytes) gives the manifest's outcomes; a
    # low one lets the never-ending body hit it quickly
    cap = limits["max_success_bytes"] + (1 << 20)
    rows = net.manifest()
    t0 = time.time()

    def one(e):
        return e, reference_client.fetch(e["url"], net.ca_file, deadline_s=5.0,
                                         max_bytes=cap, retries=2, max_retry_sleep=1.0)
    with ThreadPoolExecutor(24) as ex:
        results = list(ex.map(one, rows))
    bad = [(e["row"], e["case"], e["url"], e["outcome"], r["outcome"], r["detail"])
           for e, r in results if r["outcome"] != e["outcome"]]
    assert not bad, "\n".join(map(str, bad))
    for e, r in results:
        if e["outcome"] == "success":
            assert r["sha256"] == e["sha256"], e["url"]
            assert (r["format"], r["width"], r["height"]) == \
                (e["format"], e["width"], e["height"]), e["url"]
    flaky = [r for e, r in results if e["case"].startswith("raw_flaky")]
    assert flaky and all(r["attempts"] >= 2 for r in flaky)
    chains = [r for e, r in results if e["case"] == "redirect_chain"]
    assert chains and all(r["redirects"] == 3 for r in chains)
    assert not [r for r in net.access_log() if r["time"] >= t0 - 0.01 and (
        r["host"] == "169.254.169.254" or r["path"].startswith("/latest/"))]
