"""A local S3 for tests: moto's standalone server behind a verifying, fault-injecting proxy.

moto does not check request signatures (any key pair is accepted), so `SigV4Proxy` sits
in front of it: it recomputes every request's AWS Signature V4 with botocore's signer
(S3SigV4Auth) from the method, path, query, the signed headers and the body, checks the
body against `x-amz-content-sha256`, and answers 403 SignatureDoesNotMatch on any
mismatch, so a wrong secret is rejected as AWS would. It can also inject faults (503
SlowDown, 500, connection resets, truncated bodies, slow answers) on chosen requests.
Only 127.0.0.1 is used.

For test modules: the pytest fixtures `moto` (one server per module), `proxy` (a fresh
SigV4Proxy in front of it), `direct` (boto3 talking to moto directly: the reference
view of the buckets) and `bucket` (a new empty bucket); import them by name into the
test module. `reference_client(moto)` and `client_env(proxy)` serve other set-ups.
"""
import calendar
import hashlib
import http.client
import os
import re
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3
import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from conftest import free_port

ACCESS_KEY = "AKIAPIXELMILLTEST01"
SECRET_KEY = "pmSecret/Do+Not+Print+0123456789abcdefXYZ"
REGION = "eu-west-3"


class MotoServer:
    """moto's standalone S3 server in a subprocess on 127.0.0.1."""

    def __init__(self):
        self.port = free_port()
        env = dict(os.environ, MOTO_ALLOW_NONEXISTENT_REGION="true")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        deadline = time.time() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/moto-api/", timeout=1)
                break
            except Exception:
                if self.proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError("moto server did not start")
                time.sleep(0.1)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def close(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class Fault:
    """Inject `action` into requests matching method/query substring, `times` times
    (None: always), skipping the first `skip` matches."""

    def __init__(self, action, method=None, query=None, path=None, times=1, skip=0, delay=1.0,
                 body=b""):
        self.action, self.method, self.query, self.path = action, method, query, path
        self.times, self.skip, self.delay, self.body = times, skip, delay, body
        self.seen = 0
        self.fired = 0

    def match(self, method, path, query):
        if self.method and method != self.method:
            return False
        if self.query is not None and self.query not in query:
            return False
        if self.path is not None and self.path not in path:
            return False
        self.seen += 1
        if self.seen <= self.skip:
            return False
        if self.times is not None and self.fired >= self.times:
            return False
        self.fired += 1
        return True


class SigV4Proxy:
    """Verifying, fault-injecting reverse proxy in front of `upstream_port`."""

    def __init__(self, upstream_port, keys=None):
        self.upstream_port = upstream_port
        self.keys = keys or {ACCESS_KEY: (SECRET_KEY, None)}  # akid -> (secret, token)
        self.faults = []
        self.log = []  # (method, path, query, status or action)
        self.lock = threading.Lock()
        self.rejected = 0
        self.max_keys = None  # force small listing pages (added after verification)
        # moto reports every upload as initiated in 2010; this many seconds ago instead
        self.initiated_age_s = None
        self.parts_inflight = 0  # part uploads being handled now, and the most at once
        self.max_parts_inflight = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                proxy.handle(self)

            do_PUT = do_POST = do_DELETE = do_HEAD = do_GET

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.local = threading.local()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def add_fault(self, *a, **kw):
        f = Fault(*a, **kw)
        with self.lock:
            self.faults.append(f)
        return f

    def clear(self):
        with self.lock:
            self.faults = []
            self.log = []

    # ---------------------------------------------------------------- verification

    def verify(self, method, raw_path, headers, body):
        """None if the request is correctly signed, else the S3 error code."""
        auth = headers.get("Authorization", "")
        prefix = "AWS4-HMAC-SHA256 "
        if not auth.startswith(prefix):
            return "AccessDenied"
        try:
            fields = dict(p.strip().split("=", 1) for p in auth[len(prefix):].split(","))
            akid, date, region, service, term = fields["Credential"].split("/")
            signed = fields["SignedHeaders"].split(";")
            signature = fields["Signature"]
        except (ValueError, KeyError):
            return "AuthorizationHeaderMalformed"
        if akid not in self.keys:
            return "InvalidAccessKeyId"
        secret, token = self.keys[akid]
        if service != "s3" or term != "aws4_request" or region != REGION:
            return "AuthorizationHeaderMalformed"
        amz_date = headers.get("x-amz-date", "")
        if not amz_date.startswith(date):
            return "AccessDenied"
        try:
            when = calendar.timegm(time.strptime(amz_date, "%Y%m%dT%H%M%SZ"))
        except ValueError:
            return "AccessDenied"
        if abs(when - time.time()) > 900:
            return "RequestTimeTooSkewed"
        for h in ("host", "x-amz-date", "x-amz-content-sha256"):
            if h not in signed:
                return "AccessDenied"
        if token is not None:
            if "x-amz-security-token" not in signed or \
                    headers.get("x-amz-security-token") != token:
                return "InvalidToken"
        content_sha = headers.get("x-amz-content-sha256", "")
        if content_sha != "UNSIGNED-PAYLOAD" and \
                content_sha != hashlib.sha256(body).hexdigest():
            return "XAmzContentSHA256Mismatch"
        sign_headers = {}
        for h in signed:
            v = headers.get_all(h)
            if v is None:
                return "AccessDenied"
            sign_headers[h] = ",".join(v)
        req = AWSRequest(method=method, url=f"http://{headers['host']}{raw_path}",
                         headers=sign_headers, data=body)
        req.context["timestamp"] = amz_date
        signer = S3SigV4Auth(Credentials(akid, secret, token), "s3", region)
        canonical = signer.canonical_request(req)
        expected = signer.signature(signer.string_to_sign(req, canonical), req)
        if expected != signature:
            return "SignatureDoesNotMatch"
        return None

    # ---------------------------------------------------------------- handling

    def upstream(self):
        c = getattr(self.local, "conn", None)
        if c is None:
            c = http.client.HTTPConnection("127.0.0.1", self.upstream_port, timeout=60)
            self.local.conn = c
        return c

    @staticmethod
    def send_error(h, status, code, close=False):
        body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
                f"<Message>{code}</Message></Error>").encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/xml")
        h.send_header("Content-Length", str(len(body)))
        if close:
            h.send_header("Connection", "close")
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(body)

    @staticmethod
    def reset(h):
        # RST instead of FIN: SO_LINGER with a zero timeout
        h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        h.close_connection = True
        h.connection.close()

    def handle(self, h):
        is_part = "partNumber=" in h.path
        if is_part:
            with self.lock:
                self.parts_inflight += 1
                self.max_parts_inflight = max(self.max_parts_inflight, self.parts_inflight)
        try:
            self.handle_request(h)
        finally:
            if is_part:
                with self.lock:
                    self.parts_inflight -= 1

    def handle_request(self, h):
        method = h.command
        raw_path = h.path
        path, _, query = raw_path.partition("?")
        n = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(n) if n else b""
        err = self.verify(method, raw_path, h.headers, body)
        if err:
            with self.lock:
                self.rejected += 1
                self.log.append((method, path, query, err))
            self.send_error(h, 403 if err != "XAmzContentSHA256Mismatch" else 400, err)
            return
        action = None
        with self.lock:
            for f in self.faults:
                if f.match(method, path, query):
                    action = f
                    break
            self.log.append((method, path, query, action.action if action else "ok"))
        if action is not None:
            if action.action == "503":
                self.send_error(h, 503, "SlowDown")
                return
            if action.action == "500":
                self.send_error(h, 500, "InternalError")
                return
            if action.action == "reset":
                self.reset(h)
                return
            if action.action == "garbage":  # a 200 whose body is not what S3 sends
                h.send_response(200)
                h.send_header("Content-Length", str(len(action.body)))
                h.end_headers()
                h.wfile.write(action.body)
                return
            if action.action == "slow":
                time.sleep(action.delay)
        headers = {k: v for k, v in h.headers.items()
                   if k.lower() not in ("connection", "keep-alive")}
        if self.max_keys and method == "GET" and "list-type=2" in query:
            raw_path += f"&max-keys={self.max_keys}"
        elif self.max_keys and method == "GET" and "uploads=" in query:
            raw_path += f"&max-uploads={self.max_keys}"
        for attempt in range(2):
            conn = self.upstream()
            try:
                conn.request(method, raw_path, body=body, headers=headers)
                resp = conn.getresponse()
                break
            except (ConnectionError, http.client.HTTPException, OSError):
                conn.close()
                self.local.conn = None
                if attempt:
                    raise
        h.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in ("connection", "keep-alive", "transfer-encoding", "server",
                                 "date"):
                h.send_header(k, v)
        length = resp.getheader("Content-Length")
        if self.initiated_age_s is not None and method == "GET" and "uploads=" in query:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000Z",
                                  time.gmtime(time.time() - self.initiated_age_s))
            data = re.sub(rb"<Initiated>[^<]*</Initiated>",
                          f"<Initiated>{stamp}</Initiated>".encode(), resp.read())
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data)
            return
        if length is None and method != "HEAD":
            data = resp.read()
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data)
            return
        h.end_headers()
        if method == "HEAD":
            resp.read()
            return
        left = int(length)
        if action is not None and action.action == "truncate":
            left = left // 2  # send half, then reset the connection
        while left > 0:
            chunk = resp.read(min(left, 1 << 20))
            if not chunk:
                break
            h.wfile.write(chunk)
            left -= len(chunk)
        if action is not None and action.action == "truncate":
            resp.read()
            h.wfile.flush()
            self.reset(h)


def reference_client(moto):
    """boto3 talking to `moto` directly (no proxy, no faults)."""
    return boto3.client("s3", endpoint_url=moto.url, aws_access_key_id=ACCESS_KEY,
                        aws_secret_access_key=SECRET_KEY, region_name=REGION)


def client_env(proxy, secret=SECRET_KEY, token=None):
    """The environment for a pixelmill tool that reaches S3 through `proxy`: this process's
    environment without AWS_* variables, plus the test credentials (`secret`, and
    `token` as the session token when given), region and endpoint."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=secret,
               AWS_REGION=REGION, AWS_ENDPOINT_URL=proxy.url)
    if token:
        env["AWS_SESSION_TOKEN"] = token
    return env


def new_bucket(direct):
    """Create an empty bucket with a fresh name through `direct`; returns its name."""
    name = "pm-" + uuid.uuid4().hex[:12]
    direct.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": REGION})
    return name


@pytest.fixture(scope="module")
def moto():
    m = MotoServer()
    yield m
    m.close()


@pytest.fixture
def proxy(moto):
    p = SigV4Proxy(moto.port)
    yield p
    p.close()


@pytest.fixture
def direct(moto):
    """boto3 talking to moto directly: the reference view of the bucket."""
    return reference_client(moto)


@pytest.fixture
def bucket(direct):
    return new_bucket(direct)


class LocalS3:
    """moto behind the verifying proxy, for a test module: `direct` is a boto3 client
    straight to moto (to look at what the code under test wrote), `env` the environment
    that points pixelmill at the proxy with the test credentials."""

    def __init__(self):
        self.moto = MotoServer()
        self.proxy = SigV4Proxy(self.moto.port)
        self.direct = reference_client(self.moto)
        self.env = client_env(self.proxy)

    def new_bucket(self):
        return new_bucket(self.direct)

    def close(self):
        self.proxy.close()
        self.moto.close()


def s3_objects(client, bucket, prefix):
    """{name relative to prefix: bytes} of every object under s3://bucket/prefix/."""
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket,
                                                                Prefix=prefix + "/"):
        for o in page.get("Contents", []):
            out[o["Key"][len(prefix) + 1:]] = client.get_object(
                Bucket=bucket, Key=o["Key"])["Body"].read()
    return out
