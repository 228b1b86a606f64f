#!/usr/bin/python3
"""Kernel-TCP clients for the data plane's test services (end-to-end tests).

usage:
  tcp_client.py echo    HOST PORT BYTES        send random bytes, read them back, compare sha256
  tcp_client.py source  HOST PORT BYTES [LOCALPORT [RATE]]
                                               read BYTES, check the i % 251 pattern, close
                                               (from LOCALPORT if given, at most RATE bytes/s
                                               if given)
  tcp_client.py discard HOST PORT BYTES        send BYTES, half-close, expect a clean close
  tcp_client.py upload  HOST PORT BYTES        send BYTES of random data, half-close, expect the
                                               sha256 (hex) of what was sent back (upstream.py sink)
  tcp_client.py hold    HOST PORT CONNS SECONDS  open CONNS connections, wait SECONDS, and count
                                               those the far end closed or reset ("closed") and
                                               those still open ("open"); always "ok"
  tcp_client.py stall   HOST PORT BYTES SECONDS  like source, with a small receive buffer left unread
                                               for SECONDS first (the sender's window shuts)
  tcp_client.py keepalive HOST PORT CONNS SECONDS [IDLE]
                                               (first IDLE connections with one GET each, left
                                               idle: "idle_closed" or "idle_kept" by SECONDS
                                               after the burst) then
                                               open CONNS HTTP/1.1 connections at once, one GET
                                               on each, then wait up to SECONDS for the far end
                                               to close them; outcomes counted ("refused",
                                               "closed" after the response, "kept" open, ...);
                                               then one new connection with two requests
                                               ("after": "keepalive" if both came on it)
  tcp_client.py soak    HOST PORT SECONDS CONCURRENCY MAXBYTES
                                               CONCURRENCY loops of echo transfers (random
                                               sizes up to MAXBYTES, random bytes) for SECONDS;
                                               each transfer is "ok" (every byte back, equal),
                                               "corrupt" (a byte differs), "short" (a clean
                                               close before every byte came back), "reset",
                                               "refused", "timeout" or "connect_error" (the
                                               connect), or "stalled" (no progress for 20 s);
                                               a failed loop waits 0.1 s; "ok" if none is
                                               corrupt or short
  tcp_client.py steady  HOST PORT SECONDS RATE BYTES
                                               open RATE echo connections per second for SECONDS,
                                               each with a 1 s connect timeout, echoing BYTES;
                                               counts outcomes and connect times (always "ok")
  tcp_client.py many    HOST PORT CONNS BYTES [burst]
                                               CONNS concurrent echo connections of BYTES each;
                                               "burst" opens them all at once (no staggering)
Prints one JSON object; exits 1 if anything did not match.
"""
import asyncio
import hashlib
import json
import os
import socket
import sys
import threading
import time


def echo(host, port, size):
    data = os.urandom(size)
    s = socket.create_connection((host, port), timeout=30)
    got = bytearray()

    def reader():
        while True:
            b = s.recv(1 << 16)
            if not b:
                break
            got.extend(b)

    t0 = time.time()
    th = threading.Thread(target=reader)
    th.start()
    s.sendall(data)
    s.shutdown(socket.SHUT_WR)
    th.join()
    ok = hashlib.sha256(data).digest() == hashlib.sha256(bytes(got)).digest()
    return {"ok": ok, "sent": size, "received": len(got), "seconds": time.time() - t0}


def source(host, port, size, local_port=0, rate=0.0):
    s = socket.create_connection((host, port), timeout=30,
                                 source_address=("", local_port) if local_port else None)
    got = bytearray()
    t0 = time.time()
    while len(got) < size:
        b = s.recv(1 << 16)
        if not b:
            break
        got.extend(b)
        if rate:
            ahead = len(got) / rate - (time.time() - t0)
            if ahead > 0:
                time.sleep(ahead)
    s.close()
    want = bytes(i % 251 for i in range(251)) * (size // 251 + 1)
    return {"ok": bytes(got[:size]) == want[:size], "received": len(got)}


def stall(host, port, size, seconds):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    s.settimeout(30)
    s.connect((host, port))
    time.sleep(seconds)
    t0 = time.time()
    got = bytearray()
    while len(got) < size:
        b = s.recv(1 << 16)
        if not b:
            break
        got.extend(b)
    s.close()
    want = bytes(i % 251 for i in range(251)) * (size // 251 + 1)
    return {"ok": bytes(got[:size]) == want[:size], "received": len(got),
            "seconds_after_stall": time.time() - t0}


def discard(host, port, size):
    s = socket.create_connection((host, port), timeout=30)
    s.sendall(os.urandom(size))
    s.shutdown(socket.SHUT_WR)
    return {"ok": s.recv(1) == b"", "sent": size}


def upload(host, port, size):
    s = socket.create_connection((host, port), timeout=60)
    h = hashlib.sha256()
    t0 = time.time()
    left = size
    while left > 0:
        chunk = os.urandom(min(left, 1 << 20))
        h.update(chunk)
        s.sendall(chunk)
        left -= len(chunk)
    s.shutdown(socket.SHUT_WR)
    got = bytearray()
    while True:
        b = s.recv(1 << 16)
        if not b:
            break
        got.extend(b)
    want = h.hexdigest()
    return {"ok": got.decode(errors="replace") == want, "sent": size, "sha256": want,
            "answer": got.decode(errors="replace"), "seconds": time.time() - t0}


def hold(host, port, conns, seconds):
    socks = []
    refused = 0
    for _ in range(conns):
        try:
            socks.append(socket.create_connection((host, port), timeout=5))
        except OSError:
            refused += 1
    time.sleep(seconds)
    closed = 0
    for s in socks:
        s.setblocking(False)
        try:
            if s.recv(1) == b"":
                closed += 1
        except BlockingIOError:
            pass  # nothing to read: still open
        except OSError:
            closed += 1
        s.close()
    return {"ok": True, "open": len(socks) - closed, "closed": closed + refused}


async def one(host, port, size, i):
    data = os.urandom(size)
    r, w = await asyncio.wait_for(asyncio.open_connection(host, port), 30)
    w.write(data)
    await w.drain()
    w.write_eof()
    got = await asyncio.wait_for(r.read(), 60)
    w.close()
    return got == data


async def many(host, port, conns, size, burst):
    # Unless asked for a burst, stagger the opens a little so the listener's
    # backlog is not the test.
    tasks = []
    for i in range(conns):
        tasks.append(asyncio.create_task(one(host, port, size, i)))
        if not burst and i % 100 == 99:
            await asyncio.sleep(0.01)
    res = await asyncio.gather(*tasks, return_exceptions=True)
    good = sum(1 for x in res if x is True)
    errors = [repr(x) for x in res if x is not True][:5]
    return {"ok": good == conns, "good": good, "conns": conns, "errors": errors}


async def steady(host, port, seconds, rate, size):
    async def one_timed():
        t0 = time.time()
        try:
            r, w = await asyncio.wait_for(asyncio.open_connection(host, port), 1.0)
        except Exception as e:  # noqa: BLE001 - every failure is an outcome
            return "connect", repr(e), None
        connect = time.time() - t0
        try:
            data = os.urandom(size)
            w.write(data)
            await w.drain()
            w.write_eof()
            got = await asyncio.wait_for(r.read(), 10)
            w.close()
            return ("ok" if got == data else "data"), None, connect
        except Exception as e:  # noqa: BLE001
            return "io", repr(e), connect

    n = int(seconds * rate)
    start = time.time()
    tasks = []
    for i in range(n):
        delay = start + i / rate - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one_timed()))
    res = await asyncio.gather(*tasks)
    outcomes = {}
    for kind, _, _ in res:
        outcomes[kind] = outcomes.get(kind, 0) + 1
    times = sorted(c for _, _, c in res if c is not None)
    pct = lambda q: round(1000 * times[min(len(times) - 1, int(q * len(times)))], 2) if times else None
    return {"ok": True, "conns": n, "good": outcomes.get("ok", 0), "outcomes": outcomes,
            "errors": [e for _, e, _ in res if e][:5], "connect_ms_p50": pct(0.5),
            "connect_ms_p99": pct(0.99), "connect_ms_max": pct(1.0)}


async def http_exchange(r, w):
    """One GET on an open connection: (status, head bytes) once the body is read."""
    w.write(b"GET /keepalive HTTP/1.1\r\nHost: keepalive.test\r\n\r\n")
    await w.drain()
    head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 5)
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await asyncio.wait_for(r.readexactly(length), 5)
    return int(head.split()[1]), head.lower()


async def keepalive(host, port, conns, seconds, idle=0):
    async def held(r, w):
        try:
            more = await asyncio.wait_for(r.read(1), seconds + 1)
            return "idle_closed" if more == b"" else "data"
        except asyncio.TimeoutError:
            return "idle_kept"
        except OSError:
            return "reset"
        finally:
            w.close()

    warm = []
    for _ in range(idle):
        r, w = await asyncio.open_connection(host, port)
        status, head = await http_exchange(r, w)
        if status != 200 or b"connection: close" in head:
            return {"ok": False, "warm": status}
        warm.append(held(r, w))

    async def one():
        try:
            r, w = await asyncio.wait_for(asyncio.open_connection(host, port), 2)
        except ConnectionRefusedError:
            return "refused"
        except (OSError, asyncio.TimeoutError):
            return "connect"
        try:
            status, head = await http_exchange(r, w)
            if status != 200:
                return f"status {status}"
            more = await asyncio.wait_for(r.read(1), seconds)
            return "closed" if more == b"" else "data"
        except asyncio.TimeoutError:
            return "kept"
        except asyncio.IncompleteReadError:
            return "truncated"
        except OSError:
            return "reset"
        finally:
            w.close()

    outcomes = {}
    for o in await asyncio.gather(*warm, *(one() for _ in range(conns))):
        outcomes[o] = outcomes.get(o, 0) + 1
    # Accepting and keep-alive again once the pressure is gone.
    after = "refused"
    for _ in range(50):
        try:
            r, w = await asyncio.open_connection(host, port)
        except ConnectionRefusedError:
            await asyncio.sleep(0.1)
            continue
        _, head = await http_exchange(r, w)
        after = "close" if b"connection: close" in head else "keepalive"
        if after == "keepalive":
            await http_exchange(r, w)
        w.close()
        break
    good = ("refused", "closed", "kept", "idle_closed", "idle_kept")
    bad = sum(v for k, v in outcomes.items() if k not in good)
    return {"ok": bad == 0, "outcomes": outcomes, "after": after}


async def soak(host, port, seconds, concurrency, max_bytes):
    import random
    rng = random.Random(seconds * 1000 + concurrency)
    deadline = time.time() + seconds
    outcomes, durations = {}, []
    sent_total = [0]

    async def transfer(size):
        data = os.urandom(size)
        try:
            r, w = await asyncio.wait_for(asyncio.open_connection(host, port), 5)
        except ConnectionRefusedError:
            return "refused"
        except asyncio.TimeoutError:
            return "timeout"
        except OSError:
            return "connect_error"
        t0 = time.time()

        async def send():
            for i in range(0, size, 1 << 16):
                w.write(data[i:i + (1 << 16)])
                await w.drain()
            w.write_eof()

        sender = asyncio.ensure_future(send())
        got = bytearray()
        try:
            while True:
                b = await asyncio.wait_for(r.read(1 << 16), 20)
                if not b:
                    break
                got.extend(b)
            if bytes(got) != data[:len(got)]:
                return "corrupt"
            if len(got) < size:
                return "short"
            await asyncio.wait_for(sender, 5)
            durations.append(time.time() - t0)
            sent_total[0] += size
            return "ok"
        except asyncio.TimeoutError:
            return "stalled"
        except OSError:
            return "corrupt" if bytes(got) != data[:len(got)] else "reset"
        finally:
            sender.cancel()
            w.close()

    async def loop():
        while time.time() < deadline:
            o = await transfer(rng.randint(1, max_bytes))
            outcomes[o] = outcomes.get(o, 0) + 1
            if o != "ok":
                await asyncio.sleep(0.1)

    await asyncio.gather(*(loop() for _ in range(concurrency)))
    durations.sort()
    p99 = durations[int(len(durations) * 0.99)] if durations else 0
    return {"ok": outcomes.get("corrupt", 0) == 0 and outcomes.get("short", 0) == 0,
            "outcomes": outcomes, "bytes_ok": sent_total[0],
            "transfer_ms_p50": round(durations[len(durations) // 2] * 1000, 1) if durations else 0,
            "transfer_ms_p99": round(p99 * 1000, 1)}


def main():
    mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if mode == "hold":
        out = hold(host, port, int(sys.argv[4]), float(sys.argv[5]))
    elif mode == "stall":
        out = stall(host, port, int(sys.argv[4]), float(sys.argv[5]))
    elif mode == "source" and len(sys.argv) > 5:
        out = source(host, port, int(sys.argv[4]), int(sys.argv[5]),
                     float(sys.argv[6]) if len(sys.argv) > 6 else 0.0)
    elif mode == "soak":
        out = asyncio.run(soak(host, port, float(sys.argv[4]), int(sys.argv[5]),
                               int(sys.argv[6])))
    elif mode == "keepalive":
        out = asyncio.run(keepalive(host, port, int(sys.argv[4]), float(sys.argv[5]),
                                    int(sys.argv[6]) if len(sys.argv) > 6 else 0))
    elif mode == "steady":
        out = asyncio.run(steady(host, port, float(sys.argv[4]), float(sys.argv[5]),
                                 int(sys.argv[6])))
    elif mode == "many":
        burst = len(sys.argv) > 6 and sys.argv[6] == "burst"
        out = asyncio.run(many(host, port, int(sys.argv[4]), int(sys.argv[5]), burst))
    else:
        modes = {"echo": echo, "source": source, "discard": discard, "upload": upload}
        out = modes[mode](host, port, int(sys.argv[4]))
    print(json.dumps(out))
    sys.exit(0 if out["ok"] else 1)


main()
