#!/usr/bin/python3
"""Send raw HTTP/1.1 byte strings, each on its own connection, and report the answer.

usage:
  raw_corpus.py ADDR PORT CORPUS.json

CORPUS.json is a list of strings (latin-1). Prints a JSON list, one entry per case:
{"status": N or null, "closed": bool, "reset": bool, "first_line": "..."}: the status of the
first response (null if none came within 2 s), whether the proxy then closed the connection
(within 0.3 s of the last bytes), whether it reset it.
"""
import json
import socket
import sys


def main():
    addr, port, corpus = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    with open(corpus) as f:
        cases = json.load(f)
    out = []
    for c in cases:
        s = socket.create_connection((addr, port), timeout=5)
        s.sendall(c.encode("latin-1"))
        s.settimeout(2)
        got, closed, reset = b"", False, False
        try:
            while True:
                b = s.recv(65536)
                if not b:
                    closed = True
                    break
                got += b
                # An answer has come: whether the connection then closes
                # shows at once, or never.
                s.settimeout(0.3)
        except socket.timeout:
            pass
        except ConnectionResetError:
            reset = True
        s.close()
        line = got.split(b"\r\n", 1)[0].decode("latin-1")
        status = None
        parts = line.split(" ")
        if len(parts) >= 2 and parts[0].startswith("HTTP/") and parts[1].isdigit():
            status = int(parts[1])
        out.append({"status": status, "closed": closed, "reset": reset, "first_line": line})
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
