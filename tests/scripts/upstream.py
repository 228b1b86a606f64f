#!/usr/bin/python3
"""Kernel-TCP upstream servers for the proxy's end-to-end tests.

usage:
  upstream.py echo ADDR PORT    echo every connection's bytes back; close after the client's FIN
  upstream.py echo-rst ADDR PORT
                                echo, and a connection the process leaves by dying (SIGKILL)
                                is reset, never closed with a FIN (SO_LINGER 0 until its
                                graceful end)
  upstream.py sink ADDR PORT    read a connection to its FIN, answer the sha256 (hex) of what
                                came, then close
  upstream.py hold ADDR PORT    accept and keep connections open, sending nothing, until the
                                client closes
  upstream.py finfirst ADDR PORT FILE
                                wait 0.5 s without reading, half-close (our FIN first), wait
                                1 s more, then read the client's bytes to its FIN and append
                                "<sha256> <length>" to FILE. Its receive buffers are tiny
                                (4 kB socket buffer, 1 kB stream buffer), so that what it does
                                not read stays with the sender
  upstream.py name ADDR PORT NAME
                                send NAME and a newline, then echo like `echo`: a client can
                                tell which upstream it reached
Prints "ready" once listening; runs until killed. asyncio, one thread: thousands of
connections are fine (the file limit is raised to its hard maximum).
"""
import asyncio
import hashlib
import resource
import socket
import struct
import sys


async def echo(r, w):
    try:
        while True:
            b = await r.read(1 << 16)
            if not b:
                break
            w.write(b)
            await w.drain()
        w.write_eof()
        await w.drain()
    except ConnectionError:
        pass
    finally:
        w.close()


LINGER_RST = struct.pack("ii", 1, 0)
LINGER_OFF = struct.pack("ii", 0, 0)


async def echo_rst(r, w):
    """echo, but a connection this process leaves by dying is reset (SO_LINGER
    0 until the graceful end), never closed with a FIN that would look like a
    complete answer."""
    sock = w.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RST)
    try:
        while True:
            b = await r.read(1 << 16)
            if not b:
                break
            w.write(b)
            await w.drain()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_OFF)
        w.write_eof()
        await w.drain()
    except ConnectionError:
        pass
    finally:
        w.close()


async def sink(r, w):
    h = hashlib.sha256()
    try:
        while True:
            b = await r.read(1 << 20)
            if not b:
                break
            h.update(b)
        w.write(h.hexdigest().encode())
        await w.drain()
    except ConnectionError:
        pass
    finally:
        w.close()


async def hold(r, w):
    try:
        while await r.read(1 << 16):
            pass
    except ConnectionError:
        pass
    finally:
        w.close()


async def finfirst(r, w):
    h = hashlib.sha256()
    n = 0
    try:
        await asyncio.sleep(0.5)
        w.write_eof()
        await w.drain()
        await asyncio.sleep(1)
        while True:
            b = await r.read(1 << 20)
            if not b:
                break
            h.update(b)
            n += len(b)
        with open(sys.argv[4], "a") as f:
            f.write(f"{h.hexdigest()} {n}\n")
    except ConnectionError:
        pass
    finally:
        w.close()


async def name(r, w):
    w.write((sys.argv[4] + "\n").encode())
    await echo(r, w)


async def main():
    mode, addr, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    handler = {"echo": echo, "echo-rst": echo_rst, "sink": sink, "hold": hold, "finfirst": finfirst, "name": name}[mode]
    if mode == "finfirst":
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.bind((addr, port))
        sock.listen(64)
        server = await asyncio.start_server(handler, sock=sock, limit=1024)
    else:
        server = await asyncio.start_server(handler, addr, port, backlog=4096, reuse_address=True)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


asyncio.run(main())
