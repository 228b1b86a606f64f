#!/usr/bin/python3
"""Kernel-TCP upstream servers for the proxy's end-to-end tests.

usage:
  upstream.py echo ADDR PORT    echo every connection's bytes back; close after the client's FIN
  upstream.py sink ADDR PORT    read a connection to its FIN, answer the sha256 (hex) of what
                                came, then close
  upstream.py hold ADDR PORT    accept and keep connections open, sending nothing, until the
                                client closes
Prints "ready" once listening; runs until killed. asyncio, one thread: thousands of
connections are fine (the file limit is raised to its hard maximum).
"""
import asyncio
import hashlib
import resource
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


async def main():
    mode, addr, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    handler = {"echo": echo, "sink": sink, "hold": hold}[mode]
    server = await asyncio.start_server(handler, addr, port, backlog=4096, reuse_address=True)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


asyncio.run(main())
