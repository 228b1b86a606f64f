#!/usr/bin/env python3
"""A Zipkin collector for the tests: accepts POST /api/v2/spans (a JSON
array of v2 spans), appends each span as one JSON line to FILE, answers
202. Prints "ready" once listening.

usage: zipkin_collector.py ADDR PORT FILE
"""
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

addr, port, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]


class Collector(BaseHTTPRequestHandler):
    def do_POST(self):
        n = int(self.headers.get("content-length", "0"))
        body = self.rfile.read(n)
        try:
            spans = json.loads(body)
            ok = self.path == "/api/v2/spans" and isinstance(spans, list)
        except ValueError:
            ok = False
        if not ok:
            self.send_response(400)
            self.end_headers()
            return
        with open(out, "a") as f:
            for s in spans:
                f.write(json.dumps(s) + "\n")
        self.send_response(202)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer((addr, port), Collector)
print("ready", flush=True)
server.serve_forever()
