#!/usr/bin/env python3
"""A resetting proxy for ci/bench.sh (issue 22): listens on 127.0.0.1:PORT, forwards to
127.0.0.1:UPSTREAM, and resets the connection (RST, both sides) half-way through the body of
the first GET of every object; later GETs of the same object (dr's Range requests that
resume it) pass whole. The e2e tests' proxy (tests/e2e/support/proxy.rs) does the same
inside the test binary; this one runs beside a release binary.

    python3 ci/bench-proxy.py PORT UPSTREAM STATS_FILE

It reads HTTP/1.1 just enough to know where each body starts and ends (Content-Length or
chunked; no body for HEAD, 1xx, 204 and 304), so the connections it leaves alone stay
usable. On SIGTERM it writes "requests resets" to STATS_FILE.
"""

import asyncio
import signal
import socket
import struct
import sys

seen = set()
stats = {"requests": 0, "resets": 0}


class Reset(Exception):
    pass


async def read_head(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    return head, lines[0], headers


async def copy_body(reader, writer, headers, no_body, cut_half):
    """Forward one body; with cut_half, reset once half of a Content-Length body is sent."""
    if no_body:
        return
    if "chunked" in headers.get("transfer-encoding", "").lower():
        while True:
            line = await reader.readuntil(b"\r\n")
            writer.write(line)
            size = int(line.split(b";")[0].strip(), 16)
            if size == 0:
                while True:  # trailers, then the empty line
                    t = await reader.readuntil(b"\r\n")
                    writer.write(t)
                    if t == b"\r\n":
                        break
                await writer.drain()
                return
            writer.write(await reader.readexactly(size + 2))
            await writer.drain()
    left = int(headers.get("content-length", "0"))
    stop = left // 2 if cut_half and left >= 2 else None
    sent = 0
    while left > 0:
        n = min(left, 1 << 16)
        if stop is not None:
            n = min(n, stop - sent) if sent < stop else n
        data = await reader.readexactly(n)
        writer.write(data)
        await writer.drain()
        sent += n
        left -= n
        if stop is not None and sent >= stop:
            raise Reset()


def reset(writer):
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    writer.transport.abort()


async def handle(client_r, client_w, upstream):
    try:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", upstream)
    except OSError:
        reset(client_w)
        return
    try:
        while True:
            head, line, headers = await read_head(client_r)
            method, target = line.split(" ")[:2]
            stats["requests"] += 1
            server_w.write(head)
            await copy_body(client_r, server_w, headers, False, False)
            await server_w.drain()
            path, _, query = target.partition("?")
            is_object_get = (
                method == "GET"
                and "/" in path.lstrip("/")
                and query in ("", "x-id=GetObject")
            )
            cut = is_object_get and path not in seen
            if cut:
                seen.add(path)
            rhead, status_line, rheaders = await read_head(server_r)
            client_w.write(rhead)
            status = int(status_line.split(" ")[1])
            no_body = method == "HEAD" or status < 200 or status in (204, 304)
            try:
                await copy_body(server_r, client_w, rheaders, no_body, cut and status == 200)
            except Reset:
                stats["resets"] += 1
                reset(client_w)
                reset(server_w)
                return
            await client_w.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError, ValueError, IndexError):
        pass
    finally:
        for w in (client_w, server_w):
            try:
                w.close()
            except Exception:
                pass


async def main():
    port, upstream, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    server = await asyncio.start_server(
        lambda r, w: handle(r, w, upstream), "127.0.0.1", port, limit=1 << 20
    )
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, done.set)
    loop.add_signal_handler(signal.SIGINT, done.set)
    async with server:
        await done.wait()
    with open(out, "w") as f:
        f.write("%d %d\n" % (stats["requests"], stats["resets"]))


if __name__ == "__main__":
    asyncio.run(main())
