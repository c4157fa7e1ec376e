#!/usr/bin/env python3
"""The fake internet: nginx (HTTP, HTTPS + HTTP/2, a wrong-certificate HTTPS port) and
a raw-socket helper (rawserver.py) on loopback, serving a make_corpus.py corpus and
fault endpoints. Nothing listens anywhere but 127.0.0.1; nothing touches /etc/nginx.

Python API (tests, benchmarks):

    from fakenet.server import FakeInternet
    with FakeInternet(corpus_dir) as net:
        net.http_base, net.https_base, net.raw_base   # 'http://127.0.0.1:PORT', ...
        net.ca_file                                   # test CA for --ca-file
        net.url("@HTTP@/img/000001.jpg")              # fill placeholders
        net.manifest()                                # manifest rows, real URLs
        net.access_log()                              # list of dicts, one per request

CLI (demo, benchmarks):

    python3 tests/fakenet/server.py start --state DIR [--corpus DIR | --count N] [--ipv6]
    python3 tests/fakenet/server.py stop --state DIR
    python3 tests/fakenet/server.py status --state DIR

`start` runs the servers in a detached supervisor, writes DIR/urls.{csv,jsonl,parquet},
DIR/manifest.json and DIR/duplicates.json with the real base URLs, DIR/fakenet.json and
DIR/fakenet.env (FAKENET_HTTP=..., sourceable), prints the env lines and returns. The
supervisor stops by itself after --lifetime seconds (default 4 h).
"""
import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_COUNT = 3000


def _mc():
    """make_corpus, imported on first use (numpy/Pillow/pyarrow make imports slow, and
    `stop`/`status` need none of it)."""
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    import make_corpus
    return make_corpus


def robots_headers():
    """X-Robots-Tag value served under /robots/KEY/."""
    return {"noai": "noai", "noimageai": "noimageai",
            "noindex_noimageai": "noindex, noimageai",
            "ua_noai": f"{_mc().USER_AGENT_TOKEN}: noai", "otherbot": "otherbot: noai"}

STATUS_CODES = (403, 404, 410, 500)
RETRY_AFTER = {429: 2, 503: 3}
METADATA_URL = "http://169.254.169.254/latest/meta-data/iam/security-credentials/"

LOG_FORMAT = ('{"time":$msec,"server":"nginx","method":"$request_method",'
              '"path":"$request_uri","status":$status,"host":"$host",'
              '"http_host":"$http_host","port":$server_port,"scheme":"$scheme",'
              '"protocol":"$server_protocol","bytes":$body_bytes_sent,'
              '"request_time":$request_time,"user_agent":"$http_user_agent",'
              '"remote":"$remote_addr"}')


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certs(d):
    """Test CA plus two server certificates signed by it, in directory d:
    server.crt (localhost, 127.0.0.1, ::1) and wrong.crt (only wrong.host.test)."""
    d = Path(d)
    d.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "3650",
             "-subj", "/CN=pixelmill fakenet test CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    for name, san in (("server", "DNS:localhost,IP:127.0.0.1,IP:::1"),
                      ("wrong", "DNS:wrong.host.test")):
        (d / f"{name}.ext").write_text(
            f"subjectAltName={san}\nbasicConstraints=critical,CA:FALSE\n"
            "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
            "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n")
        cn = "localhost" if name == "server" else "wrong.host.test"
        _openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN={cn}", cwd=d)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                 "-set_serial", str(secrets.randbits(63)), "-days", "30", "-out",
                 f"{name}.crt", "-extfile", f"{name}.ext", cwd=d)
    return d / "ca.crt"


def nginx_conf(state, corpus, ports, ipv6):
    """The nginx configuration text (see docs/internals/fakenet.md for the endpoints)."""
    s, c = Path(state), Path(corpus).resolve()
    make_corpus = _mc()
    img = f"{c}/img/"
    user = "user root root;" if os.geteuid() == 0 else ""
    listen_http = f"listen 127.0.0.1:{ports['http']} default_server;"
    listen_https = f"listen 127.0.0.1:{ports['https']} ssl http2 default_server;"
    if ipv6:
        listen_http += f"\n        listen [::1]:{ports['http']} default_server;"
        listen_https += f"\n        listen [::1]:{ports['https']} ssl http2 default_server;"
    status = "\n".join(f"        location ^~ /status/{code}/ {{ return {code}; }}"
                       for code in STATUS_CODES)
    retry = "\n".join(f"        location ^~ /status/{code}/ {{ add_header Retry-After {ra} "
                      f"always; return {code}; }}" for code, ra in RETRY_AFTER.items())
    robots = "\n".join(f'        location ^~ /robots/{k}/ {{ add_header X-Robots-Tag "{v}" '
                       f'always; alias {img}; }}' for k, v in robots_headers().items())
    temp = "\n".join(f"    {k}_temp_path {s}/tmp/{k};"
                     for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return f"""# generated by tests/fakenet/server.py
{user}
worker_processes 2;
daemon off;
pid {s}/nginx.pid;
error_log {s}/logs/error.log warn;
events {{ worker_connections 4096; }}
http {{
    types {{
        image/jpeg jpg jpeg; image/png png; image/webp webp; image/gif gif;
        image/tiff tif tiff; image/bmp bmp; image/svg+xml svg; text/html html;
    }}
    default_type application/octet-stream;
    log_format fakenet escape=json '{LOG_FORMAT}';
    access_log {s}/logs/access.log fakenet;
{temp}
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 30s;
    keepalive_requests 100000;
    server_tokens off;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:fakenet:1m;

    server {{
        {listen_http}
        {listen_https}
        server_name localhost;
        ssl_certificate {s}/tls/server.crt;
        ssl_certificate_key {s}/tls/server.key;
        root {c};

        location = /health {{ default_type text/plain; return 200 "ok\\n"; }}
        location ^~ /img/ {{ }}
        location ^~ /fault/ {{ }}
{status}
{retry}
        location ^~ /slow/drip/ {{ limit_rate {make_corpus.DRIP_RATE}; alias {img}; }}
        location ^~ /slow/ok/ {{ limit_rate {make_corpus.SLOW_OK_RATE}; alias {img}; }}
{robots}
        location ^~ /ctype/html/ {{ types {{ }} default_type text/html; alias {img}; }}
        location ~ ^/redirect/chain/3/(.*)$ {{ return 301 /redirect/chain/2/$1; }}
        location ~ ^/redirect/chain/2/(.*)$ {{
            absolute_redirect off;
            return 302 /redirect/chain/1/$1;
        }}
        location ~ ^/redirect/chain/1/(.*)$ {{ return 307 /img/$1; }}
        location ~ ^/redirect/loop/a/(.*)$ {{ return 302 /redirect/loop/b/$1; }}
        location ~ ^/redirect/loop/b/(.*)$ {{ return 302 /redirect/loop/a/$1; }}
        location ~ ^/redirect/loopback/(.*)$ {{
            return 302 http://127.0.0.1:{ports['http']}/img/$1;
        }}
        location ^~ /redirect/metadata/ {{ return 302 {METADATA_URL}; }}
        location ^~ /redirect/file/ {{ return 302 file:///etc/passwd; }}
        # canary: reached only through a --connect-to style mapping of 169.254.169.254
        location ^~ /latest/ {{ return 200 "canary: metadata endpoint reached\\n"; }}
        location / {{ return 404; }}
    }}
    server {{
        listen 127.0.0.1:{ports['https_badcert']} ssl http2;
        server_name wrong.host.test;
        ssl_certificate {s}/tls/wrong.crt;
        ssl_certificate_key {s}/tls/wrong.key;
        root {c};
        location / {{ }}
    }}
}}
"""


def _die_with_parent():
    """preexec_fn: the child gets SIGTERM when the process that started it dies (Linux
    PR_SET_PDEATHSIG), so a killed test run leaves no nginx or helper behind."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))
    except Exception:
        pass


def _children(pid):
    """Pids whose parent is pid (from /proc)."""
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                stat = (p / "stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(p.name))
            except (OSError, ValueError, IndexError):
                pass
    return out


def pid_alive(pid):
    try:
        st = Path(f"/proc/{pid}/stat").read_text()
        return st.rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class FakeInternet:
    """The fake internet as a context manager. state_dir (default: a fresh temp dir,
    removed on stop unless keep_state) receives nginx.conf, tls/, logs/. ipv6: nginx
    also listens on [::1] (same ports). lifetime: the raw helper stops by itself after
    this many seconds."""

    def __init__(self, corpus_dir, state_dir=None, keep_state=None, ipv6=False,
                 lifetime=4 * 3600):
        self.corpus = Path(corpus_dir).resolve()
        if not (self.corpus / "corpus.json").exists():
            raise FileNotFoundError(f"{self.corpus} is not a make_corpus.py corpus")
        self._tmp = state_dir is None
        self.state = Path(state_dir or tempfile.mkdtemp(prefix="fakenet-")).resolve()
        self.keep_state = (not self._tmp) if keep_state is None else keep_state
        self.ipv6 = ipv6
        self.lifetime = lifetime
        self.nginx = self.raw = None
        self.ports = {}
        self._nginx_children = []

    # ---------------------------------------------------------------- lifecycle
    def start(self):
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        if not os.path.exists(nginx):
            raise RuntimeError("nginx is not installed (scripts/install-deps.sh)")
        for sub in ("logs", "tmp", "tls"):
            (self.state / sub).mkdir(parents=True, exist_ok=True)
        self.ca_file = str(make_certs(self.state / "tls"))
        self.access_log_path = self.state / "logs" / "access.log"
        self.raw_log_path = self.state / "logs" / "raw_access.log"
        try:
            self._start_raw()
            for attempt in range(5):
                self.ports.update(http=free_port(), https=free_port(),
                                  https_badcert=free_port())
                conf = self.state / "nginx.conf"
                conf.write_text(nginx_conf(self.state, self.corpus, self.ports, self.ipv6))
                errlog = self.state / "logs" / "error.log"
                self.nginx = subprocess.Popen(
                    [nginx, "-p", str(self.state), "-c", str(conf), "-e", str(errlog)],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                    stderr=open(self.state / "logs" / "nginx.stderr", "ab"),
                    preexec_fn=_die_with_parent)
                if self._wait_nginx():
                    break
                self.nginx.wait(5)
                err = errlog.read_text(errors="replace") if errlog.exists() else ""
                if "Address already in use" not in err or attempt == 4:
                    raise RuntimeError(f"nginx did not start:\n{err[-2000:]}")
            self._nginx_children = _children(self.nginx.pid)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_raw(self):
        port_file = self.state / "raw.json"
        if port_file.exists():
            port_file.unlink()
        self.raw = subprocess.Popen(
            [sys.executable, str(HERE / "rawserver.py"), "--corpus", str(self.corpus),
             "--port-file", str(port_file), "--log", str(self.raw_log_path),
             "--lifetime", str(self.lifetime)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=open(self.state / "logs" / "raw.stderr", "ab"),
            preexec_fn=_die_with_parent)
        deadline = time.time() + 15
        while not port_file.exists():
            if self.raw.poll() is not None or time.time() > deadline:
                raise RuntimeError("rawserver.py did not start: " + (
                    self.state / "logs" / "raw.stderr").read_text(errors="replace")[-2000:])
            time.sleep(0.02)
        info = json.loads(port_file.read_text())
        self.ports.update(raw=info["port"], closed=info["closed_port"])

    def _wait_nginx(self):
        deadline = time.time() + 15
        while time.time() < deadline:
            if self.nginx.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(f"{self.http_base}/health", timeout=2) as r:
                    if r.status == 200:
                        with socket.create_connection(("127.0.0.1", self.ports["https"]), 2):
                            return True
            except OSError:
                pass
            time.sleep(0.05)
        return False

    def pids(self):
        """Every process of this fake internet (nginx master and workers, raw helper)."""
        out = []
        if self.nginx:
            out.append(self.nginx.pid)
            out += self._nginx_children or _children(self.nginx.pid)
        if self.raw:
            out.append(self.raw.pid)
        return out

    def stop(self):
        """Stop everything (fast shutdown, then SIGKILL after 10 s); idempotent."""
        procs = []
        if self.nginx and self.nginx.poll() is None:
            kids = _children(self.nginx.pid) or self._nginx_children
            self.nginx.send_signal(signal.SIGTERM)
            procs.append((self.nginx, kids))
        if self.raw and self.raw.poll() is None:
            self.raw.send_signal(signal.SIGTERM)
            procs.append((self.raw, []))
        for p, kids in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
            for k in kids:             # workers of a master that had to be killed
                if pid_alive(k):
                    try:
                        os.kill(k, signal.SIGKILL)
                    except OSError:
                        pass
        if self._tmp and not self.keep_state:
            shutil.rmtree(self.state, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # ---------------------------------------------------------------- addresses
    @property
    def http_base(self):
        return f"http://127.0.0.1:{self.ports['http']}"

    @property
    def https_base(self):
        return f"https://127.0.0.1:{self.ports['https']}"

    @property
    def https_badcert_base(self):
        return f"https://127.0.0.1:{self.ports['https_badcert']}"

    @property
    def raw_base(self):
        return f"http://127.0.0.1:{self.ports['raw']}"

    @property
    def closed_base(self):
        return f"http://127.0.0.1:{self.ports['closed']}"

    @property
    def bases(self):
        return {"HTTP": self.http_base, "HTTPS": self.https_base,
                "HTTPS_BADCERT": self.https_badcert_base, "RAW": self.raw_base,
                "CLOSED": self.closed_base}

    def url(self, template):
        """Fill the @HTTP@-style placeholders of a corpus URL."""
        return _mc().substitute(template, self.bases)

    def manifest(self):
        """The corpus manifest (list of dicts, input order) with real URLs."""
        rows = json.loads((self.corpus / "manifest.json").read_text())
        for r in rows:
            r["url"] = self.url(r["url"])
        return rows

    def write_lists(self, dest):
        """Write urls.{csv,jsonl,parquet}, manifest.json, duplicates.json with real URLs."""
        _mc().write_substituted(self.corpus, dest, self.bases)

    def access_log(self):
        """Every request so far, nginx's and the raw helper's, in time order (dicts with
        time, server, method, path, status, host, http_host, port, scheme, protocol,
        bytes, request_time)."""
        rows = []
        for p in (self.access_log_path, self.raw_log_path):
            if p.exists():
                for line in p.read_text(encoding="utf-8", errors="replace").splitlines():
                    if line.strip():
                        rows.append(json.loads(line))
        rows.sort(key=lambda r: r["time"])
        return rows

    def info(self):
        return {"http": self.http_base, "https": self.https_base,
                "https_badcert": self.https_badcert_base, "raw": self.raw_base,
                "closed": self.closed_base, "ca_file": self.ca_file,
                "access_log": str(self.access_log_path), "raw_access_log": str(self.raw_log_path),
                "corpus": str(self.corpus), "state": str(self.state), "pids": self.pids()}


# ------------------------------------------------------------------------ CLI

ENV_KEYS = (("FAKENET_HTTP", "http"), ("FAKENET_HTTPS", "https"),
            ("FAKENET_HTTPS_BADCERT", "https_badcert"), ("FAKENET_RAW", "raw"),
            ("FAKENET_CLOSED", "closed"), ("FAKENET_CA_FILE", "ca_file"),
            ("FAKENET_ACCESS_LOG", "access_log"), ("FAKENET_URLS", "urls"),
            ("FAKENET_MANIFEST", "manifest"), ("FAKENET_CORPUS", "corpus"))


def _serve(a):
    """The detached supervisor: run the fake internet until SIGTERM or the lifetime."""
    state = Path(a.state).resolve()
    net = FakeInternet(a.corpus, state_dir=state, lifetime=a.lifetime, ipv6=a.ipv6)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    net.start()
    try:
        net.write_lists(state)
        info = net.info()
        info.update(urls=str(state / "urls.parquet"), manifest=str(state / "manifest.json"),
                    supervisor_pid=os.getpid())
        (state / "fakenet.env").write_text(
            "".join(f"{k}={info[v]}\n" for k, v in ENV_KEYS))
        tmp = state / "fakenet.json.tmp"
        tmp.write_text(json.dumps(info, indent=1) + "\n")
        os.replace(tmp, state / "fakenet.json")
        deadline = time.time() + a.lifetime
        while not stop and time.time() < deadline:
            time.sleep(0.2)
            if net.nginx.poll() is not None or net.raw.poll() is not None:
                print("fakenet: a server exited unexpectedly", file=sys.stderr)
                break
    finally:
        net.stop()
        (state / "fakenet.json").unlink(missing_ok=True)
    return 0


def _start(a):
    state = Path(a.state).resolve()
    state.mkdir(parents=True, exist_ok=True)
    old = _running(state)
    if old:
        sys.exit(f"fakenet: already running in {state} (pid {old['supervisor_pid']})")
    corpus = a.corpus or str(_mc().ensure_corpus(a.count, a.seed, quiet=False))
    (state / "fakenet.json").unlink(missing_ok=True)
    log = open(state / "server.log", "ab")
    p = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "serve",
                          "--state", str(state), "--corpus", corpus,
                          "--lifetime", str(a.lifetime)] + (["--ipv6"] if a.ipv6 else []),
                         stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                         start_new_session=True)
    deadline = time.time() + 60
    while not (state / "fakenet.json").exists():
        if p.poll() is not None or time.time() > deadline:
            if p.poll() is None:
                p.terminate()
            sys.exit("fakenet: start failed:\n" +
                     (state / "server.log").read_text(errors="replace")[-3000:])
        time.sleep(0.05)
    sys.stdout.write((state / "fakenet.env").read_text())
    return 0


def _running(state):
    f = Path(state) / "fakenet.json"
    if not f.exists():
        return None
    info = json.loads(f.read_text())
    return info if pid_alive(info["supervisor_pid"]) else None


def _stop(a):
    info = _running(a.state)
    if not info:
        print("fakenet: not running", file=sys.stderr)
        return 0
    pid = info["supervisor_pid"]
    os.kill(pid, signal.SIGTERM)
    deadline = time.time() + 30
    while pid_alive(pid) and time.time() < deadline:
        time.sleep(0.05)
    if pid_alive(pid):
        sys.exit(f"fakenet: supervisor {pid} did not stop")
    left = [q for q in info["pids"] if pid_alive(q)]
    if left:
        sys.exit(f"fakenet: processes left behind: {left}")
    return 0


def _status(a):
    info = _running(a.state)
    if not info:
        print("fakenet: not running")
        return 1
    print(json.dumps(info, indent=1))
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(description="the fake internet (loopback only)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("start", "serve"):
        p = sub.add_parser(name, help="start in the background" if name == "start"
                           else argparse.SUPPRESS)
        p.add_argument("--state", required=True, help="directory for config, certs, logs, "
                       "URL lists")
        p.add_argument("--corpus", help="a make_corpus.py output directory (default: the "
                       "cached corpus for --count/--seed)")
        p.add_argument("--count", type=int, default=DEFAULT_COUNT)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--lifetime", type=float, default=4 * 3600,
                       help="stop by itself after this many seconds (default 4 h)")
        p.add_argument("--ipv6", action="store_true",
                       help="nginx also listens on [::1] (same ports)")
    for name in ("stop", "status"):
        p = sub.add_parser(name)
        p.add_argument("--state", required=True)
    a = ap.parse_args(argv)
    return {"start": _start, "serve": _serve, "stop": _stop, "status": _status}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
