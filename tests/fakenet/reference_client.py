#!/usr/bin/env python3
"""Reference client: fetches one URL the way `pixelmill download` is specified to, and
names the outcome class the manifest uses. It is the oracle that checks the manifest
against the live fake internet (tests/test_fakenet.py), and a Python baseline for
benchmarks. Loopback only: every host it would connect to must be 127.0.0.1, ::1 or
localhost, otherwise the URL is 'blocked' (the manifest's expectations assume a
downloader run with --allow-private-network, which still refuses link-local/metadata).

Rules, in order:
  malformed URL -> invalid url; scheme other than http/https -> blocked;
  host not loopback (also after a redirect) -> blocked; connection refused/reset, empty or
  non-HTTP reply -> connection error; certificate failure -> tls error;
  429/503 -> retried (Retry-After, at most `retries` times) then 'http N';
  3xx -> followed (at most max_redirects hops, else too many redirects);
  other non-200 -> 'http N'; X-Robots-Tag noai/noimageai (bare or 'pixelmill:') ->
  disallowed; Content-Length or body above max_bytes -> too large; body shorter than
  Content-Length -> truncated; total time above deadline -> timeout;
  empty body -> decode error; not JPEG/PNG/GIF/WebP by magic -> unsupported format;
  header width*height above max_pixels -> too many pixels; decode failure -> decode error.

  python3 reference_client.py --ca-file CA URL...
"""
import argparse
import hashlib
import http.client
import io
import ipaddress
import socket
import ssl
import sys
import time
import urllib.parse

LOOPBACK_NAMES = {"localhost"}
USER_AGENT = "pixelmill-reference/1"
UA_TOKEN = "pixelmill"


class Outcome(Exception):
    def __init__(self, outcome, detail=""):
        super().__init__(f"{outcome}: {detail}")
        self.outcome, self.detail = outcome, detail


def _loopback(host):
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_url(url):
    try:
        u = urllib.parse.urlsplit(url)
        host, port = u.hostname, u.port
    except ValueError as e:
        raise Outcome("invalid url", str(e))
    if u.scheme in ("http", "https"):
        if not host:
            raise Outcome("invalid url", "no host")
    elif u.scheme and (u.netloc or u.scheme in ("file", "data", "javascript", "mailto")):
        raise Outcome("blocked", f"scheme {u.scheme}")
    else:
        raise Outcome("invalid url", "no scheme")
    if not _loopback(host):
        raise Outcome("blocked", f"host {host} is not loopback")
    return u, host, port or (443 if u.scheme == "https" else 80)


def robots_disallow(values):
    """True if an X-Robots-Tag value forbids AI use for us (img2dataset's rule)."""
    for v in values:
        for part in v.split(","):
            part = part.strip().lower()
            if ":" in part:
                ua, _, part = part.partition(":")
                if ua.strip() not in (UA_TOKEN, "*"):
                    continue
            if part.strip() in ("noai", "noimageai"):
                return True
    return False


def _get(u, host, port, ctx, deadline, max_bytes):
    left = deadline - time.time()
    if left <= 0:
        raise Outcome("timeout", "deadline")
    target = (u.path or "/") + (f"?{u.query}" if u.query else "")
    cls = http.client.HTTPSConnection if u.scheme == "https" else http.client.HTTPConnection
    kw = {"context": ctx} if u.scheme == "https" else {}
    conn = cls(host, port, timeout=max(0.05, left), **kw)
    try:
        conn.request("GET", target, headers={"User-Agent": USER_AGENT})
        sock = conn.sock           # getresponse() drops it from conn on Connection: close
        r = conn.getresponse()
        headers = r.headers
        if r.status != 200:
            return r.status, headers, b""
        if robots_disallow(headers.get_all("X-Robots-Tag") or []):
            raise Outcome("disallowed", headers.get("X-Robots-Tag"))
        cl = headers.get("Content-Length")
        if cl is not None and int(cl) > max_bytes:
            raise Outcome("too large", f"Content-Length {cl}")
        body = io.BytesIO()
        while True:
            if time.time() > deadline:
                raise Outcome("timeout", f"after {body.tell()} bytes")
            sock.settimeout(max(0.05, deadline - time.time()))
            chunk = r.read1(65536) if hasattr(r, "read1") else r.read(65536)
            if not chunk:
                break
            body.write(chunk)
            if body.tell() > max_bytes:
                raise Outcome("too large", f"more than {max_bytes} bytes")
        if cl is not None and body.tell() < int(cl):
            raise Outcome("truncated", f"{body.tell()} of {cl} bytes")
        return 200, headers, body.getvalue()
    except Outcome:
        raise
    except ssl.SSLCertVerificationError as e:
        raise Outcome("tls error", str(e))
    except ssl.SSLError as e:
        raise Outcome("tls error", str(e))
    except http.client.IncompleteRead as e:
        raise Outcome("truncated", str(e))
    except (socket.timeout, TimeoutError) as e:
        raise Outcome("timeout", str(e))
    except (ConnectionError, http.client.HTTPException, OSError) as e:
        raise Outcome("connection error", f"{type(e).__name__}: {e}")
    finally:
        conn.close()


def sniff(body):
    if body[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if body[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if body[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if body[:4] == b"RIFF" and body[8:12] == b"WEBP":
        return "webp"
    return None


def decode(body, max_pixels):
    """Returns (format, displayed width, height) or raises Outcome."""
    from PIL import Image, ImageOps
    if not body:
        raise Outcome("decode error", "empty body")
    fmt = sniff(body)
    if fmt is None:
        raise Outcome("unsupported format", repr(body[:16]))
    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        try:
            im = Image.open(io.BytesIO(body))
        except Exception as e:
            raise Outcome("decode error", f"header: {e}")
        if im.size[0] * im.size[1] > max_pixels:
            raise Outcome("too many pixels", f"{im.size[0]}x{im.size[1]}")
        try:
            im.load()
            im = ImageOps.exif_transpose(im)
        except Exception as e:
            raise Outcome("decode error", str(e))
        return fmt, im.size[0], im.size[1]
    finally:
        Image.MAX_IMAGE_PIXELS = old


def fetch(url, ca_file=None, deadline_s=10.0, max_bytes=24 << 20, max_redirects=5,
          retries=2, max_retry_sleep=1.0, max_pixels=178956970):
    """Fetch and classify url. deadline_s bounds each request (every redirect hop and
    retry gets its own). Returns a dict: outcome, detail, url (final), sha256, format,
    width, height (displayed), attempts, redirects."""
    ctx = ssl.create_default_context(cafile=ca_file) if ca_file else \
        ssl.create_default_context()
    res = {"url": url, "outcome": None, "detail": "", "sha256": None, "format": None,
           "width": None, "height": None, "attempts": 0, "redirects": 0}
    try:
        tries = 0
        while True:
            u, host, port = _check_url(url)
            res["attempts"] += 1
            deadline = time.time() + deadline_s      # per request (hop or retry)
            status, headers, body = _get(u, host, port, ctx, deadline, max_bytes)
            if status in (301, 302, 303, 307, 308):
                loc = headers.get("Location")
                if not loc:
                    raise Outcome(f"http {status}", "redirect without Location")
                if res["redirects"] >= max_redirects:
                    raise Outcome("too many redirects", f"after {max_redirects}")
                res["redirects"] += 1
                url = urllib.parse.urljoin(url, loc)
                continue
            if status in (429, 503) and tries < retries:
                tries += 1
                try:
                    wait = float(headers.get("Retry-After", "1"))
                except ValueError:
                    wait = 1.0
                time.sleep(min(wait, max_retry_sleep))
                continue
            if status != 200:
                raise Outcome(f"http {status}")
            break
        res["url"] = url
        res["sha256"] = hashlib.sha256(body).hexdigest()
        res["format"], res["width"], res["height"] = decode(body, max_pixels)
        res["outcome"] = "success"
    except Outcome as o:
        res["outcome"], res["detail"] = o.outcome, o.detail
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ca-file")
    ap.add_argument("--deadline", type=float, default=10.0)
    ap.add_argument("--max-bytes", type=int, default=24 << 20)
    ap.add_argument("urls", nargs="+")
    a = ap.parse_args(argv)
    import json
    for url in a.urls:
        print(json.dumps(fetch(url, a.ca_file, a.deadline, a.max_bytes)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
