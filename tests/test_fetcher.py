"""The download engine (net/fetcher.h) against real HTTP servers on loopback.

Each test starts small threaded Python servers on 127.0.0.x, runs pm_fetch_tool on URLs
pointing at them and checks both what the tool reports and what the servers saw
(requests, their timing, TCP connections accepted). Every run passes --loopback-only, an
engine fence that refuses any non-loopback address at connect time, so no test can send
traffic off the machine even if the address policy under test were broken.
"""
import email.utils
import json
import socket
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import free_port, run, tool


def body_bytes(n):
    return bytes((i * 7 + 3) & 0xFF for i in range(n))


class State:
    """What a group of servers saw: TCP connections and requests (path, arrival time)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.connections = 0
        self.requests = []
        self.counters = {}

    def count(self, path):
        with self.lock:
            return sum(1 for p, _ in self.requests if p == path)

    def times(self, path):
        with self.lock:
            return [t for p, t in self.requests if p == path]

    def bump(self, key):
        with self.lock:
            self.counters[key] = self.counters.get(key, 0) + 1
            return self.counters[key]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def setup(self):
        super().setup()
        with self.server.state.lock:
            self.server.state.connections += 1

    def send(self, code, body=b"", headers=()):
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        st = self.server.state
        url = urllib.parse.urlsplit(self.path)
        path = url.path
        query = urllib.parse.parse_qs(url.query)
        with st.lock:
            st.requests.append((path, time.monotonic()))
        parts = path.strip("/").split("/")
        try:
            self.route(st, parts, query)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def route(self, st, parts, query):
        head = parts[0]
        if head == "img":
            self.send(200, body_bytes(int(parts[1])), [("Content-Type", "image/jpeg")])
        elif head == "status":
            self.send(int(parts[1]), b"error page")
        elif head == "once429":
            if st.bump(self.path) == 1:
                self.send(429, b"slow down", [("Retry-After", "1")])
            else:
                self.send(200, body_bytes(100), [("Content-Type", "image/png")])
        elif head == "once503date":
            if st.bump(self.path) == 1:
                when = email.utils.formatdate(time.time() + 2, usegmt=True)
                self.send(503, b"busy", [("Retry-After", when)])
            else:
                self.send(200, body_bytes(100))
        elif head == "stall":
            # the first request reads the request and never answers (closes after
            # parts[1] ms); later ones get a quick 404
            if st.bump(self.path) == 1:
                time.sleep(int(parts[1]) / 1000)
                self.close_connection = True
            else:
                self.send(404, b"gone")
        elif head == "slow":
            time.sleep(int(parts[1]) / 1000)
            self.send(200, body_bytes(200))
        elif head == "drip":
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            for _ in range(1000):
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.2)
        elif head == "truncated":
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(body_bytes(500))
            self.wfile.flush()
            self.close_connection = True
        elif head == "endless":
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            chunk = b"z" * 65536
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                self.wfile.write(chunk)
        elif head == "bigcl":
            self.send_response(200)
            self.send_header("Content-Length", str(10**10))
            self.end_headers()
            self.close_connection = True
            self.wfile.write(b"z" * 1000)
        elif head == "redir":
            n = int(parts[1])
            target = "/img/1234" if n == 0 else f"/redir/{n - 1}"
            self.send(302, b"", [("Location", target)])
        elif head == "loop":
            self.send(302, b"", [("Location", "/loop")])
        elif head == "to":
            self.send(302, b"", [("Location", query["u"][0])])
        elif head == "robots":
            self.send(200, body_bytes(100), [("X-Robots-Tag", v) for v in query["v"]])
        else:
            self.send(404, b"no such endpoint")


class Server:
    def __init__(self, state, host="127.0.0.1", port=0):
        self.state = state
        self.httpd = ThreadingHTTPServer((host, port), Handler, bind_and_activate=False)
        self.httpd.daemon_threads = True
        self.httpd.request_queue_size = 1024
        self.httpd.allow_reuse_address = True
        self.httpd.server_bind()
        self.httpd.server_activate()
        self.httpd.state = state
        self.host = host
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path):
        return f"http://{self.host}:{self.port}{path}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server(State())
    yield s
    s.close()


def fetch(urls, *opts, stdin=None, timeout=60):
    """Run pm_fetch_tool; return (results by index, stats dict, wall seconds)."""
    args = [tool("pm_fetch_tool"), "--loopback-only", *opts]
    t0 = time.monotonic()
    if stdin is None:
        r = run(args + list(urls), timeout=timeout)
    else:
        r = run(args, input="\n".join(urls) + "\n", timeout=timeout)
    wall = time.monotonic() - t0
    lines = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
    stats = json.loads(r.stderr.strip().splitlines()[-1])
    assert len(lines) == len(urls), r.stdout
    assert sorted(x["index"] for x in lines) == list(range(len(urls)))
    by_index = {x["index"]: x for x in lines}
    for pos, x in enumerate(lines):
        x["order"] = pos
    return by_index, stats, wall


PRIVATE = ("--allow-private-network",)


def test_success_and_permanent_errors_are_not_retried(server):
    urls = [server.url("/img/5000"), server.url("/status/404"), server.url("/status/403"),
            server.url("/status/410"), server.url("/status/400")]
    res, stats, _ = fetch(urls, *PRIVATE, "--retries", "2", "--backoff-ms", "50")
    ok = res[0]
    assert ok["status"] == "success" and ok["http"] == 200 and ok["error"] is None
    assert ok["bytes"] == 5000 and ok["content_type"] == "image/jpeg"
    assert ok["attempts"] == 1
    for i, code in [(1, 404), (2, 403), (3, 410), (4, 400)]:
        assert res[i]["status"] == "failed"
        assert res[i]["error"] == f"http {code}" and res[i]["http"] == code
        assert res[i]["bytes"] == 0 and res[i]["attempts"] == 1
        assert server.state.count(f"/status/{code}") == 1  # never retried
    assert stats["submitted"] == stats["completed"] == 5


def test_429_waits_for_retry_after_while_other_hosts_go_on():
    state = State()
    a, b = Server(state), Server(state)
    try:
        others = [b.url(f"/slow/{100 + 10 * i}") for i in range(20)]
        urls = [a.url("/once429/k1")] + others + [b.url("/img/300")]
        res, stats, wall = fetch(urls, *PRIVATE, "--retries", "2", "--concurrency", "64",
                                 "--max-host-connections", "32")
        r429 = res[0]
        assert r429["status"] == "success" and r429["attempts"] == 2, r429
        t = state.times("/once429/k1")
        assert len(t) == 2
        assert t[1] - t[0] >= 1.0, t  # Retry-After: 1 honoured
        assert r429["elapsed"] >= 1.0
        for i in range(1, len(urls)):
            assert res[i]["status"] == "success"
            # the other host's URLs finished while the 429 URL was waiting
            assert res[i]["order"] < r429["order"]
            assert res[i]["elapsed"] < r429["elapsed"]
        assert stats["retries"] == 1
    finally:
        a.close()
        b.close()


def test_429_retry_not_parked_behind_stalled_transfers(server):
    """Regression: transfers that never answer, on the same host, must not delay a retried
    429 or eat its deadline. libcurl used to park new transfers to a host whose connection
    was still unanswered (CURLOPT_PIPEWAIT: waiting to learn whether it multiplexes), with
    their clock running, so in the download test the retry timed out."""
    stalls = [server.url(f"/stall/{s}") for s in (3500, 3600, 3700)]
    urls = stalls + [server.url("/once429/behind")]
    res, stats, _ = fetch(urls, *PRIVATE, "--retries", "1", "--timeout", "3",
                          "--backoff-ms", "100")
    r = res[3]
    assert r["status"] == "success" and r["attempts"] == 2, r
    t = server.state.times("/once429/behind")
    # sent once Retry-After (1 s) is over, not when the stalled transfers time out (3 s)
    assert len(t) == 2 and 1.0 <= t[1] - t[0] < 1.8, t
    assert r["order"] == 0, r  # done before the stalled ones
    for i in range(3):
        assert res[i]["error"] == "http 404" and res[i]["attempts"] == 2, res[i]


def test_503_with_http_date_retry_after(server):
    res, _, _ = fetch([server.url("/once503date/x")], *PRIVATE, "--retries", "1")
    assert res[0]["status"] == "success" and res[0]["attempts"] == 2
    t = server.state.times("/once503date/x")
    assert len(t) == 2 and t[1] - t[0] >= 0.9, t  # a date 2 s ahead, 1 s resolution


def test_503_retried_with_backoff_then_fails(server):
    res, stats, _ = fetch([server.url("/status/503")], *PRIVATE, "--retries", "2",
                          "--backoff-ms", "200")
    r = res[0]
    assert r["status"] == "failed" and r["error"] == "http 503" and r["attempts"] == 3
    t = server.state.times("/status/503")
    assert len(t) == 3
    # backoff 200 ms then 400 ms, each with +-50% jitter
    assert 0.09 <= t[1] - t[0] <= 1.0
    assert 0.19 <= t[2] - t[1] <= 1.5
    assert stats["retries"] == 2

    res, _, _ = fetch([server.url("/status/500")], *PRIVATE, "--retries", "0")
    assert res[0]["attempts"] == 1 and server.state.count("/status/500") == 1


def test_slow_drip_hits_total_deadline(server):
    res, _, wall = fetch([server.url("/drip")], *PRIVATE, "--retries", "0", "--timeout", "1")
    r = res[0]
    assert r["status"] == "failed" and r["error"] == "timeout", r
    assert 0.9 <= r["elapsed"] < 3, r
    assert r["bytes"] == 0


def test_low_speed_abort(server):
    # 5 bytes/s is below 1000 bytes/s for 1 s: aborted long before the 30 s deadline
    res, _, _ = fetch([server.url("/drip")], *PRIVATE, "--retries", "0", "--timeout", "30",
                      "--low-speed", "1000", "1")
    assert res[0]["error"] == "timeout" and res[0]["elapsed"] < 5, res[0]


def test_truncated_body_is_retried_then_reported(server):
    res, _, _ = fetch([server.url("/truncated")], *PRIVATE, "--retries", "1",
                      "--backoff-ms", "50")
    r = res[0]
    assert r["status"] == "failed" and r["error"] == "truncated" and r["bytes"] == 0, r
    assert r["attempts"] == 2 and server.state.count("/truncated") == 2


def test_endless_body_stops_at_max_bytes_or_deadline(server):
    res, _, wall = fetch([server.url("/endless"), server.url("/bigcl"), server.url("/img/2000"),
                          server.url("/img/2001")],
                         *PRIVATE, "--retries", "0", "--max-bytes", "2000", "--timeout", "15")
    assert res[0]["error"] == "too large" and res[0]["bytes"] == 0
    assert res[0]["elapsed"] < 5
    assert res[1]["error"] == "too large"  # refused from Content-Length
    assert res[2]["status"] == "success" and res[2]["bytes"] == 2000  # exactly the limit
    assert res[3]["error"] == "too large"
    res, _, _ = fetch([server.url("/endless")], *PRIVATE, "--retries", "0", "--timeout", "1",
                      "--max-bytes", str(1 << 40))
    assert res[0]["error"] == "timeout"


def test_redirects(server):
    to = lambda u: server.url("/to?u=" + urllib.parse.quote(u, safe=""))
    # /redir/N answers N + 1 redirects: to /redir/N-1, ..., /redir/0, then /img/1234
    urls = [server.url("/redir/2"), server.url("/redir/4"), server.url("/redir/5"),
            server.url("/loop"), to("ftp://127.0.0.1/x"), to("file:///etc/passwd"),
            to("gopher://127.0.0.1:70/"), to(server.url("/img/77"))]
    res, _, _ = fetch(urls, *PRIVATE)
    assert res[0]["status"] == "success" and res[0]["redirects"] == 3
    assert res[0]["final_url"] == server.url("/img/1234") and res[0]["bytes"] == 1234
    assert res[1]["status"] == "success" and res[1]["redirects"] == 5  # 5 is allowed
    assert res[2]["error"] == "redirect loop"
    assert res[3]["error"] == "redirect loop"
    assert server.state.count("/loop") == 6  # first request + 5 redirects, no retries
    for i in (4, 5, 6):
        assert res[i]["error"] == "blocked: scheme", res[i]
    assert res[7]["status"] == "success" and res[7]["bytes"] == 77


def test_refused_addresses_get_zero_requests():
    """With private networks refused, only the allow-listed 127.0.0.1 origin is reachable:
    redirects and direct URLs to 127.0.0.2 (in any spelling) and to the metadata address
    are refused at connect time, and the listener on 127.0.0.2 never sees a connection."""
    origin_state, target_state = State(), State()
    origin = Server(origin_state, "127.0.0.1")
    target = Server(target_state, "127.0.0.2")
    try:
        p = target.port
        to = lambda u: origin.url("/to?u=" + urllib.parse.quote(u, safe=""))
        urls = [to(f"http://127.0.0.2:{p}/img/10"),
                to("http://169.254.169.254/latest/meta-data/"),
                to(f"http://2130706434:{p}/img/10"),
                to(f"http://[::ffff:127.0.0.2]:{p}/img/10"),
                f"http://127.0.0.2:{p}/img/10",
                f"http://2130706434:{p}/img/10",
                f"http://0x7f.0.0.2:{p}/img/10",
                f"http://0177.0.0.2:{p}/img/10",
                f"http://[::ffff:127.0.0.2]:{p}/img/10",
                "http://169.254.169.254/latest/meta-data/",
                "http://[fd00::1]/", "http://10.1.2.3/", "http://100.64.0.1/",
                origin.url("/img/42")]
        res, stats, _ = fetch(urls, "--allow-address", "127.0.0.1", "--retries", "2")
        for i in range(len(urls) - 1):
            assert res[i]["status"] == "failed", (urls[i], res[i])
            assert res[i]["error"] == "blocked: private address", (urls[i], res[i])
        assert res[len(urls) - 1]["status"] == "success"  # the allow-listed origin works
        assert target_state.connections == 0 and target_state.requests == []
        assert stats["refused_sockets"] >= 4  # the redirects were refused at the socket

        # Without the allow list even the origin is refused, by name as well.
        conns = origin_state.connections
        res, stats, _ = fetch([origin.url("/img/1"), f"http://localhost:{origin.port}/img/1"])
        assert all(r["error"] == "blocked: private address" for r in res.values())
        assert origin_state.count("/img/1") == 0 and origin_state.connections == conns
        assert stats["connections"] == 0 and stats["refused_sockets"] >= 1

        # Control: the target is reachable when private networks are allowed.
        res, _, _ = fetch([to(f"http://127.0.0.2:{p}/img/10")], *PRIVATE)
        assert res[0]["status"] == "success" and res[0]["bytes"] == 10
        assert target_state.connections >= 1
    finally:
        origin.close()
        target.close()


def test_bad_urls_and_schemes():
    urls = ["ftp://127.0.0.1/a", "file:///etc/passwd", "data:image/png;base64,AAAA",
            "not a url", "127.0.0.1/x.jpg", "http://user:secret@127.0.0.2:1/x"]
    res, _, _ = fetch(urls)
    assert [res[i]["error"] for i in range(3)] == ["blocked: scheme"] * 3
    assert res[3]["error"] == "bad url" and res[4]["error"] == "bad url"
    assert res[5]["error"] == "blocked: private address"
    assert "secret" not in json.dumps(res[5])  # credentials never printed


def test_x_robots_tag(server):
    r = lambda *vals: server.url("/robots?" + urllib.parse.urlencode([("v", v) for v in vals]))
    urls = [r("noai"), r("noindex, nofollow"), r("googlebot: noai"), r("nofollow"),
            r("nofollow", "NoImageAI"), r("pixelmill: noimageai"), r("mybot: noai")]
    res, stats, _ = fetch(urls, *PRIVATE, "--token", "mybot")
    expect = ["disallowed", "disallowed", "success", "success", "disallowed", "disallowed",
              "disallowed"]
    assert [res[i]["status"] for i in range(len(urls))] == expect
    for i, e in enumerate(expect):
        if e == "disallowed":
            assert res[i]["error"] == "disallowed" and res[i]["bytes"] == 0
            assert res[i]["attempts"] == 1
    assert stats["disallowed"] == 5
    res, _, _ = fetch([r("noai"), r("noindex")], *PRIVATE, "--directives", "noindex")
    assert res[0]["status"] == "success" and res[1]["status"] == "disallowed"


def test_thousand_urls_reuse_connections():
    state = State()
    servers = [Server(state) for _ in range(4)]
    try:
        urls = [servers[i % 4].url(f"/img/{100 + i % 500}") for i in range(1000)]
        res, stats, wall = fetch(urls, *PRIVATE, "--concurrency", "200",
                                 "--max-host-connections", "50", stdin=True)
        assert all(res[i]["status"] == "success" for i in range(1000))
        assert all(res[i]["bytes"] == 100 + i % 500 for i in range(1000))
        assert len(state.requests) == 1000
        # at most 4 hosts x 50 connections, each reused for several requests
        assert state.connections <= 200, state.connections
        assert stats["connections"] == state.connections
        print(f"1000 URLs in {wall:.2f} s over {state.connections} connections")

        # With 8 connections per host the same run needs at most 32 connections.
        before = state.connections
        res, stats, wall = fetch(urls, *PRIVATE, "--concurrency", "200", stdin=True)
        assert all(res[i]["status"] == "success" for i in range(1000))
        assert state.connections - before <= 32
        print(f"1000 URLs in {wall:.2f} s over {state.connections - before} connections")
    finally:
        for s in servers:
            s.close()


def test_connection_refused_is_retried(server):
    port = free_port()  # nothing listens there now
    res, stats, _ = fetch([f"http://127.0.0.1:{port}/x"], *PRIVATE, "--retries", "1",
                          "--backoff-ms", "50")
    assert res[0]["error"] == "connect" and res[0]["attempts"] == 2, res[0]


def make_tls(tmp_path):
    """A throwaway CA and a server certificate for IP 127.0.0.1, made with openssl."""
    def ossl(*args):
        run(["openssl", *args])

    ca_key, ca, key, csr, crt = (tmp_path / n for n in
                                 ("ca.key", "ca.pem", "srv.key", "srv.csr", "srv.pem"))
    ossl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", ca_key, "-out", ca, "-days", "2", "-subj", "/CN=pixelmill test CA")
    ossl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1")
    ext = tmp_path / "ext.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")
    ossl("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
         "-out", crt, "-days", "2", "-extfile", ext)
    return ca, crt, key


def test_https_with_ca_file(tmp_path):
    import ssl
    ca, crt, key = make_tls(tmp_path)
    state = State()
    srv = Server(state)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(crt, key)
    srv.httpd.socket = ctx.wrap_socket(srv.httpd.socket, server_side=True)
    try:
        url = f"https://127.0.0.1:{srv.port}/img/321"
        res, _, _ = fetch([url], *PRIVATE, "--retries", "0")
        assert res[0]["error"] == "tls", res[0]  # unknown CA
        res, _, _ = fetch([url, f"https://127.0.0.1:{srv.port}/redir/1"], *PRIVATE,
                          "--ca-file", str(ca))
        assert res[0]["status"] == "success" and res[0]["bytes"] == 321, res[0]
        assert res[1]["status"] == "success" and res[1]["final_url"].startswith("https://")
    finally:
        srv.close()


def test_429_pauses_the_whole_host(server):
    # One connection per host: the later URLs queue behind the 429 and must wait it out.
    urls = [server.url("/once429/h"), server.url("/img/10"), server.url("/img/11")]
    res, _, _ = fetch(urls, *PRIVATE, "--max-host-connections", "1")
    assert all(r["status"] == "success" for r in res.values())
    first = server.state.times("/once429/h")[0]
    for p in ("/img/10", "/img/11"):
        assert server.state.times(p)[0] - first >= 1.0


NGINX_CONF = """
daemon off;
master_process off;
worker_processes 1;
error_log {d}/error.log warn;
pid {d}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
    log_format conn '$connection $connection_requests $server_protocol $uri';
    access_log {d}/access.log conn;
    client_body_temp_path {d}/tmp; proxy_temp_path {d}/tmp; fastcgi_temp_path {d}/tmp;
    uwsgi_temp_path {d}/tmp; scgi_temp_path {d}/tmp;
    server {{
        listen 127.0.0.1:{port} ssl http2;
        ssl_certificate {crt};
        ssl_certificate_key {key};
        root {d}/www;
    }}
}}
"""


def test_http2_multiplexing_with_nginx(tmp_path):
    """HTTP/2 over TLS (ALPN) to a local nginx: many transfers share few connections.
    Skipped where nginx is not installed (it is not a dependency of the engine)."""
    import shutil
    import subprocess
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if
                                      __import__("os").path.exists("/usr/sbin/nginx") else None)
    if not nginx:
        pytest.skip("nginx not installed")
    ca, crt, key = make_tls(tmp_path)
    (tmp_path / "www").mkdir()
    (tmp_path / "tmp").mkdir()
    for i in range(50):
        (tmp_path / "www" / f"{i}.bin").write_bytes(body_bytes(1000 + i))
    port = free_port()
    conf = tmp_path / "nginx.conf"
    conf.write_text(NGINX_CONF.format(d=tmp_path, port=port, crt=crt, key=key))
    proc = subprocess.Popen([nginx, "-c", str(conf), "-p", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                break
            except OSError:
                time.sleep(0.05)
        urls = [f"https://127.0.0.1:{port}/{i % 50}.bin" for i in range(300)]
        res, stats, _ = fetch(urls, *PRIVATE, "--ca-file", str(ca), "--concurrency", "200",
                              stdin=True)
        assert all(r["status"] == "success" for r in res.values()), res[0]
        assert all(res[i]["bytes"] == 1000 + i % 50 for i in range(300))
        assert all(r["http_version"] == 2 for r in res.values())
        log = (tmp_path / "access.log").read_text().splitlines()
        conns = {line.split()[0] for line in log}
        assert len(log) == 300 and all("HTTP/2.0" in line for line in log)
        assert len(conns) <= 8, conns  # multiplexed: a handful of connections at most
        print(f"300 URLs over HTTP/2 on {len(conns)} connection(s)")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_no_busy_wait_while_full():
    """A retry that is due while every slot is busy must not make the engine spin: it
    sleeps in poll until a transfer ends (CPU time stays far below wall time)."""
    import resource
    state = State()
    a, b = Server(state), Server(state)
    try:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        res, _, wall = fetch([a.url("/once429/spin"), b.url("/slow/2500")], *PRIVATE,
                             "--concurrency", "1")
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        assert all(r["status"] == "success" for r in res.values())
        assert wall >= 2.5
        assert cpu < 0.1 * wall, (cpu, wall)  # spinning took ~0.5 s even on a busy box
    finally:
        a.close()
        b.close()


def test_threads_share_dns_and_tls_cache(tmp_path):
    """Four fetchers on four threads with one fetch_share (the rank-thread layout)."""
    state = State()
    servers = [Server(state) for _ in range(2)]
    try:
        urls = []
        for i in range(400):
            s = servers[i % 2]
            host = "localhost" if i % 3 == 0 else "127.0.0.1"  # names use the shared DNS
            path = f"/img/{10 + i}" if i % 10 else "/status/404"
            urls.append(f"http://{host}:{s.port}{path}")
        res, stats, _ = fetch(urls, *PRIVATE, "--threads", "4", "--concurrency", "16",
                              stdin=True)
        for i in range(400):
            if i % 10:
                assert res[i]["status"] == "success" and res[i]["bytes"] == 10 + i, res[i]
            else:
                assert res[i]["error"] == "http 404"
        assert stats["completed"] == 400 and stats["succeeded"] == 360
        assert len(state.requests) == 400
    finally:
        for s in servers:
            s.close()
