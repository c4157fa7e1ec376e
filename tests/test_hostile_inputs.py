"""Hostile inputs through the public tools (issue 10, docs/reliability.md).

Every case must end with a clear error (exit status 1 or 2 and a message on stderr) or a
correct result: never a signal, a hang (each run has a timeout) or unbounded memory. On
normal builds each run goes under `prlimit --as` so an unbounded allocation fails fast;
under ASan (which reserves terabytes of address space) the peak RSS is checked instead.
"""
import json
import os
import random
import shutil
import struct
import subprocess
import tarfile
import tempfile
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import SANITIZED, tool

MiB = 1 << 20
PRLIMIT = shutil.which("prlimit")
# ASan and TSan reserve huge address ranges: no --as limit there (RSS is checked instead)
NO_AS = SANITIZED or os.environ.get("PIXELMILL_TSAN") == "1"


def hrun(args, timeout=60, as_mib=1024, nofile=None, stdin=None, env=None):
    """Run args; return (rc, stdout bytes, stderr str, peak RSS MiB). rc < 0 = signal."""
    pre = []
    if PRLIMIT and (not NO_AS and as_mib or nofile):
        pre = [PRLIMIT]
        if not NO_AS and as_mib:
            pre.append(f"--as={as_mib * MiB}")
        if nofile:
            pre.append(f"--nofile={nofile}")
        pre.append("--")
    # GNU time measures the command's own peak RSS: a child forked from this (possibly
    # large) pytest process would otherwise count the parent's pages it inherited
    rep = tempfile.NamedTemporaryFile(prefix="pm-rss-", delete=False)
    rep.close()
    pre = ["/usr/bin/time", "-o", rep.name, "-f", "%M"] + pre
    p = subprocess.Popen(pre + [str(a) for a in args], stdin=subprocess.PIPE, start_new_session=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    out = {}

    def reader(name, f):
        out[name] = f.read()

    def writer():
        try:
            if stdin:
                p.stdin.write(stdin)
            p.stdin.close()
        except (BrokenPipeError, OSError):
            pass

    threads = [threading.Thread(target=reader, args=("o", p.stdout)),
               threading.Thread(target=reader, args=("e", p.stderr)),
               threading.Thread(target=writer)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    while True:
        pid, status, ru = os.wait4(p.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            os.killpg(p.pid, 9)
            os.wait4(p.pid, 0)
            p.returncode = -9
            for t in threads:
                t.join()
            raise AssertionError(f"{[str(a) for a in args[:3]]} hung (killed after {timeout} s)")
        time.sleep(0.02)
    for t in threads:
        t.join()
    rc = os.waitstatus_to_exitcode(status)
    p.returncode = rc
    rss_kib = ru.ru_maxrss
    report = Path(rep.name).read_text()
    os.unlink(rep.name)
    words = report.split()
    if words and words[-1].isdigit():
        rss_kib = int(words[-1])
    if "terminated by signal" in report:  # GNU time exits 128+N; keep "rc < 0 = signal"
        rc = -int(report.split("terminated by signal")[1].split()[0])
    return rc, out["o"], out["e"].decode("utf-8", "replace"), rss_kib / 1024


def clean(rc, err, what):
    """A run that ended with a clear outcome: no signal, and a message when it failed."""
    assert rc >= 0, f"{what}: killed by signal {-rc}\n{err[-2000:]}"
    assert rc in (0, 1, 2), f"{what}: exit {rc}\n{err[-2000:]}"
    if rc != 0:
        assert err.strip(), f"{what}: failed without a message"
        assert "AddressSanitizer" not in err and "runtime error" not in err, err[-2000:]


# ---------------------------------------------------------------- URL lists (text tables)

def big_caption_csv(path, caption_bytes, line=3):
    with open(path, "wb") as f:
        f.write(b"url,caption\n")
        f.write(b"http://a.example/1.jpg,first\n")
        f.write(b"http://a.example/2.jpg,")
        chunk = b"ha" * (MiB // 2)
        left = caption_bytes
        while left > 0:
            f.write(chunk[:left])
            left -= len(chunk)
        f.write(b"\nhttp://a.example/3.jpg,last\n")


def test_billion_laughs_caption_csv(tmp_path):
    """A 70 MB caption (over the 64 MiB record limit): PM_ERR_LIMIT naming line 3."""
    p = tmp_path / "laughs.csv"
    big_caption_csv(p, 70 * MiB)
    rc, _, err, _ = hrun([tool("pm_table_dump"), p, "--count"])
    clean(rc, err, "pm_table_dump")
    assert rc == 1 and "line 3" in err and "longer than" in err, err


def test_big_caption_with_record_limit(tmp_path):
    """A 50 MB caption against --max-record 1 MiB: a clean limit error naming the line."""
    p = tmp_path / "big.csv"
    big_caption_csv(p, 50 * MiB)
    rc, _, err, _ = hrun([tool("pm_table_dump"), p, "--count", "--max-record", str(MiB)],
                         as_mib=512)
    assert rc == 1 and "line 3" in err and "longer than" in err, err


def test_billion_laughs_caption_jsonl(tmp_path):
    p = tmp_path / "laughs.jsonl"
    with open(p, "wb") as f:
        f.write(b'{"url": "http://a.example/1", "caption": "x"}\n')
        f.write(b'{"url": "http://a.example/2", "caption": "' + b"ha" * (35 * MiB) + b'"}\n')
    rc, _, err, _ = hrun([tool("pm_table_dump"), p, "--count"])
    assert rc == 1 and "line 2" in err, err


def test_stats_on_huge_caption(tmp_path):
    """`pixelmill stats` on the same file: a clean error, bounded memory."""
    p = tmp_path / "laughs.csv"
    big_caption_csv(p, 70 * MiB)
    rc, _, err, rss = hrun([tool("pixelmill"), "stats", p], as_mib=0, timeout=120)
    clean(rc, err, "pixelmill stats")
    assert rc != 0 and "line 3" in err, err
    assert rss < 1024, f"peak RSS {rss:.0f} MiB"


def test_unterminated_quote_runs_to_eof(tmp_path):
    """A quoted field that never closes (a '2 GB field' in effect): bounded, clean error."""
    p = tmp_path / "open.csv"
    with open(p, "wb") as f:
        f.write(b'url,caption\nhttp://a/1,"never closed ')
        for _ in range(80):
            f.write(b"y" * MiB)
    rc, _, err, _ = hrun([tool("pm_table_dump"), p, "--count"])
    assert rc == 1 and "line 2" in err, err


def test_claimed_2gb_field_sparse(tmp_path):
    """A 2 GB sparse file that is one unterminated field: stops at the record limit."""
    p = tmp_path / "sparse.csv"
    with open(p, "wb") as f:
        f.write(b'url,caption\nhttp://a/1,"')
        f.truncate(2 * 1024 * MiB)
    rc, _, err, _ = hrun([tool("pm_table_dump"), p, "--count"], timeout=120)
    clean(rc, err, "pm_table_dump sparse")
    assert rc == 1, err


def roundtrip_rows(out):
    """Rows printed by pm_table_dump as byte strings (its output is raw bytes >= 0x80)."""
    rows = []
    for line in out.decode("utf-8", "surrogateescape").splitlines():
        v = json.loads(line)
        if isinstance(v, list):
            rows.append([x.encode("utf-8", "surrogateescape") if isinstance(x, str) else x
                         for x in v])
    return rows


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_nul_and_invalid_utf8(tmp_path, fmt):
    """NUL bytes and invalid UTF-8 in captions come back byte-exact (or a clean error)."""
    caps = [b"nul\x00inside", b"\xff\xfe bad utf8 \xc3\x28", b"\xed\xa0\x80 surrogate",
            b"ok \xe2\x82\xac"]
    p = tmp_path / f"t.{fmt}"
    with open(p, "wb") as f:
        if fmt == "csv":
            f.write(b"url,caption\n")
            for i, c in enumerate(caps):
                f.write(b"http://a/%d,\"%s\"\n" % (i, c))
        else:
            for i, c in enumerate(caps):
                # JSON strings cannot hold raw NUL: \u0000 escape; other bytes raw
                esc = c.replace(b"\x00", b"\\u0000")
                f.write(b'{"url": "http://a/%d", "caption": "%s"}\n' % (i, esc))
    rc, out, err, _ = hrun([tool("pm_table_dump"), p])
    clean(rc, err, f"pm_table_dump {fmt}")
    if rc == 0:
        rows = roundtrip_rows(out)
        assert [r[1] for r in rows] == caps
    else:
        assert "line" in err, err


# ---------------------------------------------------------------- Parquet

def parquet_sample(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    t = pa.table({"url": [f"http://a/{i}" for i in range(100)], "w": list(range(100))})
    p = tmp_path / "ok.parquet"
    pq.write_table(t, p)
    return p.read_bytes()


def test_parquet_absurd_footer(tmp_path):
    data = parquet_sample(tmp_path)
    meta_len = struct.unpack("<I", data[-8:-4])[0]
    cases = {
        "len_2g": data[:-8] + struct.pack("<I", 0x7FFFFFFF) + b"PAR1",
        "len_4g": data[:-8] + struct.pack("<I", 0xFFFFFFFF) + b"PAR1",
        "len_file": data[:-8] + struct.pack("<I", len(data) - 8) + b"PAR1",
        "len_zero": data[:-8] + struct.pack("<I", 0) + b"PAR1",
        "truncated": data[: len(data) // 2] + data[-8:],
        "only_magic": b"PAR1PAR1",
    }
    # every byte of the footer's thrift set to 0xff in turn (huge varints / list sizes)
    start = len(data) - 8 - meta_len
    for k in range(0, meta_len, max(1, meta_len // 40)):
        b = bytearray(data)
        b[start + k] = 0xFF
        if k + 1 < meta_len:
            b[start + k + 1] = 0x7F
        cases[f"ff_{k}"] = bytes(b)
    for name, blob in cases.items():
        p = tmp_path / f"{name}.parquet"
        p.write_bytes(blob)
        rc, _, err, _ = hrun([tool("pm_table_dump"), p], timeout=30, as_mib=1024)
        clean(rc, err, f"parquet {name}")


# ---------------------------------------------------------------- tar member names

def test_tar_traversal_names(tmp_path):
    """Member names with ../ and absolute paths: refused or listed, never followed."""
    p = tmp_path / "evil.tar"
    with tarfile.open(p, "w", format=tarfile.USTAR_FORMAT) as t:
        for name in ["000000000.jpg", "../../evil.jpg", "/etc/evil.txt", "a/../../b.json",
                     "./000000001.txt"]:
            data = b"x" * 10
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            import io
            t.addfile(ti, io.BytesIO(data))
        ti = tarfile.TarInfo("link.jpg")
        ti.type = tarfile.SYMTYPE
        ti.linkname = "/etc/passwd"
        t.addfile(ti)
    before = set(os.listdir(tmp_path.parent))
    rc, out, err, _ = hrun([tool("pm_shard_tool"), "list", p])
    clean(rc, err, "pm_shard_tool list")
    assert set(os.listdir(tmp_path.parent)) == before
    assert not os.path.exists("/etc/evil.txt")
    for line in out.decode("utf-8", "replace").splitlines():
        key = line.split("\t")[0]
        assert not key.startswith("/") and ".." not in key.split("/"), line


# ---------------------------------------------------------------- images with lying headers

def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(
        ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def lying_images():
    png = (b"\x89PNG\r\n\x1a\n"
           + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 100000, 100000, 8, 6, 0, 0, 0))
           + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + png_chunk(b"IEND", b""))
    png_bigchunk = (b"\x89PNG\r\n\x1a\n"
                    + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 16, 16, 8, 2, 0, 0, 0))
                    + struct.pack(">I", 0x7FFFFFF0) + b"IDAT" + b"\x00" * 32)
    # baseline JPEG: SOI, SOF0 65535x65535 3 components, then EOI (no scan data)
    jpeg = (b"\xff\xd8" + b"\xff\xc0" + struct.pack(">HBHHB", 17, 8, 65535, 65535, 3)
            + b"\x01\x11\x00\x02\x11\x00\x03\x11\x00" + b"\xff\xd9")
    gif = (b"GIF89a" + struct.pack("<HHBBB", 65535, 65535, 0, 0, 0)
           + b"\x2c" + struct.pack("<HHHHB", 0, 0, 65535, 65535, 0) + b"\x02\x02\x44\x01\x00;")
    # VP8X canvas 16384x16384 (24-bit minus one fields), no image data
    webp_body = b"VP8X" + struct.pack("<I", 10) + b"\x00\x00\x00\x00" + \
        (16383).to_bytes(3, "little") + (16383).to_bytes(3, "little")
    webp = b"RIFF" + struct.pack("<I", 4 + len(webp_body)) + b"WEBP" + webp_body
    webp_riff_lie = b"RIFF" + struct.pack("<I", 0xFFFFFFF0) + b"WEBP" + webp_body
    # a real baseline JPEG whose SOF0 is patched to claim 60000x60000 (scan data intact; under libjpeg's own 65500 cap)
    real = open(os.path.join(os.path.dirname(__file__), "fuzz", "corpus", "image_decode",
                             "baseline.jpg"), "rb").read()
    k = real.index(b"\xff\xc0")
    jpeg_patched = real[:k + 5] + struct.pack(">HH", 60000, 60000) + real[k + 9:]
    return {"png_huge.png": png, "jpeg_patched.jpg": jpeg_patched, "png_chunk.png": png_bigchunk, "jpeg_huge.jpg": jpeg,
            "gif_huge.gif": gif, "webp_canvas.webp": webp, "webp_riff.webp": webp_riff_lie}


@pytest.mark.parametrize("name", sorted(lying_images()))
def test_lying_image_headers(tmp_path, name):
    p = tmp_path / name
    p.write_bytes(lying_images()[name])
    for args in (["info", p], ["decode", p, tmp_path / "o.ppm"],
                 ["resize", p, tmp_path / "o.jpg", "--size", "64", "--mode", "center_crop"]):
        rc, _, err, rss = hrun([tool("pm_image_tool"), *args], timeout=30, as_mib=1024)
        clean(rc, err, f"pm_image_tool {args[0]} {name}")
        assert rc != 0, f"{name}: {args[0]} accepted a lying header"
        assert rss < 1024


# ---------------------------------------------------------------- URLs through the fetcher

class Hits(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hits = []

    def log_message(self, *a):
        pass

    def do_GET(self):
        Hits.hits.append(self.path)
        body = b"hello"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def server():
    Hits.hits = []
    s = ThreadingHTTPServer(("127.0.0.1", 0), Hits)
    s.daemon_threads = True
    th = threading.Thread(target=s.serve_forever, daemon=True)
    th.start()
    yield s.server_address[1]
    s.shutdown()
    s.server_close()


def fetch(urls, extra=(), **kw):
    rc, out, err, rss = hrun([tool("pm_fetch_tool"), "--loopback-only", "--timeout", "5",
                              "--connect-timeout", "2", "--retries", "0", *extra],
                             stdin=b"\n".join(urls) + b"\n", timeout=kw.pop("timeout", 60),
                             **kw)
    clean(rc, err, "pm_fetch_tool")
    rows = [json.loads(l) for l in out.decode("utf-8", "replace").splitlines() if l.strip()]
    return rc, rows, err


def test_loopback_and_metadata_literals_refused(server):
    port = server
    hosts = ["2130706433", "0x7f.1", "0177.0.0.1", "127.1", "0x7f000001", "017700000001",
             "[::ffff:127.0.0.1]", "[::ffff:7f00:1]", "[::1]", "[0:0:0:0:0:0:0:1]",
             "[::127.0.0.1]", "localhost", "127.0.0.1", "0", "0.0.0.0",
             # percent-encoded hosts (libcurl decodes them): 0x7f.1, 127.0.0.1, [::1]
             "0%78%37f.1", "%31%32%37.0.0.1", "%5B::1%5D"]
    urls = [f"http://{h}:{port}/x".encode() for h in hosts]
    meta = ["169.254.169.254", "0xa9fea9fe", "2852039166", "0251.0376.0251.0376",
            "[::ffff:a9fe:a9fe]", "[::ffff:169.254.169.254]", "[fd00:ec2::254]",
            "100.100.100.200", "[fe80::1]"]
    urls += [f"http://{h}/latest/meta-data/".encode() for h in meta]
    rc, rows, err = fetch(urls)
    assert rc == 0, err
    assert len(rows) == len(urls)
    for r in rows:
        assert r["status"] != "success", r
        assert r["error"], r
    assert Hits.hits == [], "a refused address was contacted"


def test_allowed_control(server):
    """Control: the same server is reachable once its address is allowed explicitly."""
    rc, rows, err = fetch([f"http://127.0.0.1:{server}/ok".encode()],
                          ["--allow-address", "127.0.0.1"])
    assert rows[0]["status"] == "success", rows
    assert Hits.hits == ["/ok"]


def test_hostile_url_strings(server):
    port = server
    urls = [b"ftp://127.0.0.1/x", b"file:///etc/passwd", b"gopher://127.0.0.1:70/",
            b"javascript:alert(1)", b"dict://127.0.0.1:11211/stat", b"ldap://x/",
            b"http://" + b"a" * MiB + b".example/",                       # 1 MB URL
            b"http://127.0.0.1:%d/" % port + b"p" * MiB,                  # 1 MB path
            b"http://\xff\xfe.example/\xc3\x28",                             # invalid UTF-8
            b"http://127.0.0.1:%d/a b" % port, b"http://[::1", b"http://:80/", b"",
            b"http://user:pw@127.0.0.1:%d/" % port, b"https://[fe80::1%25lo]/",
            b"http://127.0.0.1:%d\x00.example.com/" % port]               # NUL byte
    rc, rows, err = fetch(urls)
    clean(rc, err, "pm_fetch_tool")
    for r in rows:
        assert r["status"] != "success", r
    assert Hits.hits == []


def test_dns_name_to_private_address(server, tmp_path):
    """A host name whose address is private (via HOSTALIASES -> localhost) is refused at
    connect time, not just IP literals."""
    aliases = tmp_path / "aliases"
    aliases.write_text("metadatahost localhost\n")
    env = dict(os.environ, HOSTALIASES=str(aliases))
    chk = subprocess.run(["python3", "-c", "import socket;"
                          "print(socket.getaddrinfo('metadatahost', 80)[0][4][0])"],
                         capture_output=True, text=True, env=env)
    if chk.returncode != 0:
        pytest.skip("the resolver does not honour HOSTALIASES here: " + chk.stderr[-200:])
    rc, rows, err = fetch([f"http://metadatahost:{server}/x".encode()], env=env)
    assert rows[0]["status"] != "success", rows
    assert Hits.hits == []


# ---------------------------------------------------------------- resource limits

def test_fetcher_fd_exhaustion(server):
    """High concurrency with 32 descriptors, 4 fetcher threads sharing one DNS/TLS cache:
    every URL ends (success or a clear error). Also run under TSan by scripts/test.sh."""
    urls = [f"http://127.0.0.1:{server}/{i}".encode() for i in range(200)]
    # generous timeouts: 128 transfers against one local server on a loaded machine must
    # not time out (this test is about descriptors, not speed)
    rc, rows, err = fetch(urls, ["--allow-address", "127.0.0.1", "--concurrency", "128",
                                 "--max-host-connections", "128", "--threads", "4",
                                 "--timeout", "60", "--connect-timeout", "30"],
                          nofile=32, timeout=300)
    assert len(rows) == len(urls) or rc != 0, err
    for r in rows:
        # a URL that failed because this process ran out of descriptors says so
        assert r["status"] == "success" or "file descriptor" in r["error"], r


def test_stats_fd_exhaustion(tmp_path):
    files = []
    for i in range(60):
        p = tmp_path / f"t{i:03}.csv"
        p.write_text("url,w\n" + "".join(f"http://a/{i}/{j},{j}\n" for j in range(5)))
        files.append(p)
    rc, out, err, _ = hrun([tool("pixelmill"), "stats", *files], as_mib=0, nofile=40,
                           timeout=120)
    clean(rc, err, "pixelmill stats with 40 descriptors")


@pytest.fixture
def tiny_fs(tmp_path):
    d = tmp_path / "full"
    d.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("needs root and mount for a 1 MiB tmpfs")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1M", "tmpfs", str(d)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip("cannot mount a tmpfs here: " + r.stderr.strip())
    yield d
    subprocess.run(["umount", str(d)], check=False)


def test_parquet_writer_disk_full(tiny_fs):
    out = tiny_fs / "t.parquet"
    rc, _, err, _ = hrun([tool("pm_parquet_write_sample"), out, "--codec", "none",
                          "--rows", "200000", "--seed", "1"], as_mib=0, timeout=120)
    clean(rc, err, "pm_parquet_write_sample on a full disk")
    assert rc != 0, "writing 200k rows to a 1 MiB filesystem succeeded?"
    assert "space" in err.lower(), err
    assert not out.exists(), "a partial Parquet file is visible under its final name"


def test_shard_writer_disk_full(tiny_fs):
    rc, _, err, _ = hrun([tool("pm_shard_tool"), "write", tiny_fs, "--samples", "2000",
                          "--seed", "3"], as_mib=0, timeout=120)
    clean(rc, err, "pm_shard_tool write on a full disk")
    assert rc != 0
    assert "space" in err.lower(), err
    names = os.listdir(tiny_fs)
    assert "dataset.json" not in names, names
    assert not [n for n in names if n.endswith(".tar")], names


def test_filter_output_disk_full(tiny_fs, tmp_path):
    """`pixelmill filter --output` (temp name + rename) on a full disk: ENOSPC named, no
    file under the final name, no temporary left behind."""
    src = tmp_path / "in.csv"
    rnd = random.Random(5)
    with open(src, "w") as f:
        f.write("url,caption,punsafe\n")
        for i in range(40000):   # ~3 MB of incompressible captions
            f.write(f"http://a.example/{i}.jpg,{rnd.getrandbits(256):064x},{(i % 10) / 10}\n")
    out = tiny_fs / "out.parquet"
    rc, _, err, _ = hrun([tool("pixelmill"), "filter", src, "--where", "punsafe < 0.95",
                          "--output", out], as_mib=0, timeout=120)
    clean(rc, err, "pixelmill filter on a full disk")
    assert rc != 0 and "space" in err.lower(), err
    assert os.listdir(tiny_fs) == [], os.listdir(tiny_fs)
