#!/usr/bin/python3
"""An HTTP/1.1 upstream (kernel TCP, Python's http.server) that says what it received.

usage:
  http_upstream.py ADDR PORT NAME

Every request, whatever its method, is answered 200 with a JSON document:
  {"upstream": NAME, "method", "path", "version", "headers": [[name, value], ...],
   "body_len", "body_sha256"}
Request bodies are read by content-length or chunked transfer coding (trailers skipped).
Special paths:
  /bytes/N       N bytes of a fixed pattern instead of the JSON (content-length)
  /chunked/N     the same, in chunks of 1000 bytes, with a trailer
  /close         the JSON, then the connection closes (`connection: close`)
Misbehaving answers (raw bytes, the connection closed after):
  /bad/garbage          a status line that is not HTTP ("HTTP/1.1 2x0 OK")
  /bad/reset-mid        a head promising 100 000 bytes, 1 000 of them, then a reset (RST)
  /bad/close-delimited  a body of 5 000 bytes with no length, ended by closing
  /bad/continue         "100 Continue", then the real answer ("ok")
  /bad/continue-at-once "100 Continue", "103 Early Hints" and the answer in one write
  /bad/huge-headers     a 200 kB header field
  /bad/slow-headers     the head one byte every 10 ms, then "ok"
  /bad/slow-body        a 10-byte body, one byte every 100 ms
Keep-alive otherwise. Prints "ready" once listening; runs until killed.
"""
import hashlib
import json
import socket
import struct
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

NAME = sys.argv[3] if len(sys.argv) > 3 else "upstream"
PATTERN = bytes(range(256)) * 4096


def pattern(n):
    out = bytearray()
    while len(out) < n:
        out += PATTERN[: n - len(out)]
    return bytes(out)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def read_body(self):
        h = hashlib.sha256()
        n = 0
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                line = self.rfile.readline()
                size = int(line.split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                data = self.rfile.read(size)
                h.update(data)
                n += len(data)
                self.rfile.readline()
        else:
            left = int(self.headers.get("content-length", "0"))
            while left > 0:
                data = self.rfile.read(min(left, 1 << 20))
                if not data:
                    break
                h.update(data)
                n += len(data)
                left -= len(data)
        return n, h.hexdigest()

    def misbehave(self, what):
        w = self.wfile
        if what == "garbage":
            w.write(b"HTTP/1.1 2x0 OK\r\ncontent-length: 2\r\n\r\nok")
        elif what == "reset-mid":
            w.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n" + b"x" * 1000)
            w.flush()
            time.sleep(0.2)
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        elif what == "close-delimited":
            w.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n" + b"y" * 5000)
        elif what == "continue":
            w.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            w.flush()
            time.sleep(0.05)
            w.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        elif what == "continue-at-once":
            w.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        elif what == "huge-headers":
            w.write(b"HTTP/1.1 200 OK\r\nx-big: " + b"z" * 200000 + b"\r\ncontent-length: 2\r\n\r\nok")
        elif what == "slow-headers":
            for b in b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-slow: yes\r\n\r\n":
                w.write(bytes([b]))
                w.flush()
                time.sleep(0.01)
            w.write(b"ok")
        elif what == "slow-body":
            w.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n")
            for b in b"0123456789":
                w.flush()
                time.sleep(0.1)
                w.write(bytes([b]))
        w.flush()
        self.close_connection = True

    def answer(self):
        n, sha = self.read_body()
        if self.path.startswith("/bad/"):
            self.misbehave(self.path[len("/bad/"):])
            return
        if self.path.startswith("/bytes/"):
            body = pattern(int(self.path.split("/")[2]))
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if self.path.startswith("/chunked/"):
            body = pattern(int(self.path.split("/")[2]))
            self.send_response(200)
            self.send_header("transfer-encoding", "chunked")
            self.send_header("trailer", "x-trailer")
            self.end_headers()
            for i in range(0, len(body), 1000):
                part = body[i : i + 1000]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\nx-trailer: done\r\n\r\n")
            return
        doc = {
            "upstream": NAME,
            "method": self.command,
            "path": self.path,
            "version": self.request_version,
            "headers": [[k.lower(), v] for k, v in self.headers.items()],
            "body_len": n,
            "body_sha256": sha,
        }
        body = json.dumps(doc).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        if self.path == "/close":
            self.send_header("connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = answer


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024


def main():
    server = Server((sys.argv[1], int(sys.argv[2])), Handler)
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
