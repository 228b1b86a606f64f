#!/usr/bin/python3
"""Send a corpus of HTTP/1.1 requests to one proxy and report what came back.

usage:
  http_corpus.py ADDR PORT CORPUS.json

CORPUS.json is a list of {"method", "host", "path", "headers": [[name, value], ...]}.
Each request goes on its own connection (http.client, raw path: no quoting).
Prints a JSON list, one entry per request:
  {"status", "headers": [[lowercased name, value], ...], "body"}
where body is the response body as text (the upstream's JSON report, or a local reply).
A connection error gives {"error": "..."}.
"""
import http.client
import json
import sys


def main():
    addr, port, corpus = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    with open(corpus) as f:
        reqs = json.load(f)
    out = []
    for r in reqs:
        try:
            c = http.client.HTTPConnection(addr, port, timeout=5)
            c.putrequest(r["method"], r["path"], skip_host=True, skip_accept_encoding=True)
            c.putheader("Host", r["host"])
            for k, v in r["headers"]:
                c.putheader(k, v)
            c.endheaders()
            resp = c.getresponse()
            body = resp.read().decode("utf-8", "replace")
            out.append(
                {
                    "status": resp.status,
                    "headers": [[k.lower(), v] for k, v in resp.getheaders()],
                    "body": body,
                }
            )
            c.close()
        except Exception as e:  # reported, compared like any answer
            out.append({"error": f"{type(e).__name__}: {e}"})
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
