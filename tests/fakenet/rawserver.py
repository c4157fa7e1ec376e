#!/usr/bin/env python3
"""Raw-socket HTTP/1.1 helper of the fake internet: the faults nginx cannot express.

Listens on 127.0.0.1 only. Every response closes the connection. Endpoints (NAME is a
file in CORPUS/img/, percent-encoded; ID is any path segment):

  GET /health                   200 "ok"
  GET /truncated/NAME           200, Content-Length of the whole file, half the body, close
  GET /neverending/ID           200 image/jpeg, no Content-Length, a JPEG SOI then zeros as
                                fast as the client reads (stops at 1 GiB or 120 s)
  GET /stall/ID                 reads the request, never answers (closes after 120 s)
  GET /drip/NAME                200 with Content-Length, then 1 byte every 0.25 s (<= 120 s)
  GET /flaky/STATUS/N/NAME      the first N requests for this exact target (path + query)
                                answer STATUS (429 or 503) with Retry-After: 1, later ones
                                200 with the file
  GET /reset/ID                 reads the request, then resets the connection (RST)
  GET /garbage/ID               answers bytes that are not HTTP, then closes
  anything else                 404

It also holds a second port bound but not listening ("closed"): connecting to it is
refused. Each request is logged as one JSON line (same keys as nginx's access log).

  python3 rawserver.py --corpus DIR --port-file FILE --log FILE [--lifetime S]
"""
import argparse
import asyncio
import json
import os
import signal
import socket
import struct
import sys
import time
import urllib.parse
from pathlib import Path

CTYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png",
          ".webp": "image/webp", ".gif": "image/gif"}
MAX_STREAM = 1 << 30
MAX_HOLD_S = 120.0


class Raw:
    def __init__(self, corpus, log_path):
        self.img = Path(corpus) / "img"
        self.log = open(log_path, "a", buffering=1, encoding="utf-8")
        self.counts = {}
        self.port = None

    def record(self, method, target, status, host, nbytes, t0):
        self.log.write(json.dumps({
            "time": round(time.time(), 3), "server": "raw", "method": method,
            "path": target, "status": status, "host": (host or "").split(":")[0],
            "http_host": host or "", "port": self.port, "scheme": "http",
            "protocol": "HTTP/1.1", "bytes": nbytes,
            "request_time": round(time.time() - t0, 3)}) + "\n")

    def file_for(self, name):
        p = (self.img / urllib.parse.unquote(name)).resolve()
        if p.parent != self.img.resolve() or not p.is_file():
            return None
        return p

    @staticmethod
    def head(status, reason, headers):
        lines = [f"HTTP/1.1 {status} {reason}"] + [f"{k}: {v}" for k, v in headers] + \
                ["Connection: close", "Server: fakenet-raw", "", ""]
        return "\r\n".join(lines).encode()

    async def handle(self, reader, writer):
        t0 = time.time()
        method = target = host = None
        status, sent = 0, 0
        try:
            req = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            lines = req.decode("latin-1").split("\r\n")
            method, target, _ = (lines[0].split(" ") + ["", ""])[:3]
            for ln in lines[1:]:
                if ln.lower().startswith("host:"):
                    host = ln[5:].strip()
            path = target.split("?", 1)[0]
            parts = path.split("/")
            kind = parts[1] if len(parts) > 1 else ""
            if path == "/health":
                status = 200
                writer.write(self.head(200, "OK", [("Content-Length", 3)]) + b"ok\n")
                sent = 3
            elif kind == "truncated" and len(parts) == 3 and self.file_for(parts[2]):
                data = self.file_for(parts[2]).read_bytes()
                status = 200
                writer.write(self.head(200, "OK", [("Content-Type", ctype(parts[2])),
                                                   ("Content-Length", len(data))]))
                writer.write(data[:len(data) // 2])
                sent = len(data) // 2
            elif kind == "neverending":
                status = 200
                writer.write(self.head(200, "OK", [("Content-Type", "image/jpeg")]))
                writer.write(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01"
                             b"\x00\x00")
                chunk = b"\x00" * 65536
                while sent < MAX_STREAM and time.time() - t0 < MAX_HOLD_S:
                    writer.write(chunk)
                    await asyncio.wait_for(writer.drain(), MAX_HOLD_S)
                    sent += len(chunk)
            elif kind == "stall":
                status = 0
                try:
                    await asyncio.wait_for(reader.read(1), MAX_HOLD_S)
                except asyncio.TimeoutError:
                    pass
            elif kind == "drip" and len(parts) == 3 and self.file_for(parts[2]):
                data = self.file_for(parts[2]).read_bytes()
                status = 200
                writer.write(self.head(200, "OK", [("Content-Type", ctype(parts[2])),
                                                   ("Content-Length", len(data))]))
                await writer.drain()
                while sent < len(data) and time.time() - t0 < MAX_HOLD_S:
                    writer.write(data[sent:sent + 1])
                    await asyncio.wait_for(writer.drain(), MAX_HOLD_S)
                    sent += 1
                    await asyncio.sleep(0.25)
            elif kind == "flaky" and len(parts) == 5 and parts[2] in ("429", "503") \
                    and parts[3].isdigit() and self.file_for(parts[4]):
                n = self.counts.get(target, 0)
                self.counts[target] = n + 1
                if n < int(parts[3]):
                    status = int(parts[2])
                    body = b"try again later\n"
                    reason = "Too Many Requests" if status == 429 else "Service Unavailable"
                    writer.write(self.head(status, reason, [
                        ("Retry-After", 1), ("Content-Type", "text/plain"),
                        ("Content-Length", len(body))]) + body)
                    sent = len(body)
                else:
                    data = self.file_for(parts[4]).read_bytes()
                    status = 200
                    writer.write(self.head(200, "OK", [("Content-Type", ctype(parts[4])),
                                                       ("Content-Length", len(data))]) + data)
                    sent = len(data)
            elif kind == "reset":
                status = 0
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.transport.abort()
                return
            elif kind == "garbage":
                status = 0
                writer.write(b"\x00\x17\x03 this is not HTTP \xff\xfe\r\n\r\n" * 8)
                sent = 8 * 28
            else:
                status = 404
                body = b"not found\n"
                writer.write(self.head(404, "Not Found", [("Content-Length", len(body))]) + body)
                sent = len(body)
            await asyncio.wait_for(writer.drain(), MAX_HOLD_S)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError,
                ConnectionError, OSError):
            pass
        finally:
            if method is not None:
                self.record(method, target, status, host, sent, t0)
            try:
                writer.close()
            except Exception:
                pass


def ctype(name):
    return CTYPES.get(os.path.splitext(urllib.parse.unquote(name))[1].lower(),
                      "application/octet-stream")


async def serve(args):
    raw = Raw(args.corpus, args.log)
    server = await asyncio.start_server(raw.handle, "127.0.0.1", args.port, backlog=512)
    raw.port = server.sockets[0].getsockname()[1]
    closed = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    closed.bind(("127.0.0.1", 0))           # bound, never listening: connections refused
    info = {"port": raw.port, "closed_port": closed.getsockname()[1], "pid": os.getpid()}
    tmp = args.port_file + ".tmp"
    Path(tmp).write_text(json.dumps(info))
    os.replace(tmp, args.port_file)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for s in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(s, stop.set)
    try:
        await asyncio.wait_for(stop.wait(), args.lifetime)
    except asyncio.TimeoutError:
        print("rawserver: lifetime reached, stopping", file=sys.stderr)
    server.close()
    for t in asyncio.all_tasks():
        if t is not asyncio.current_task():
            t.cancel()
    closed.close()


def main(argv=None):
    ap = argparse.ArgumentParser(description="fake internet raw HTTP helper")
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--lifetime", type=float, default=4 * 3600,
                    help="stop by itself after this many seconds")
    asyncio.run(serve(ap.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
