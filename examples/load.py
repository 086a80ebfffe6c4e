#!/usr/bin/env python3
"""Opens N WebSocket sessions through tideway, shows which replica holds each, holds them, then closes.

Standard library only. Example (with examples/tideway.toml running):

    python3 examples/load.py --sessions 10 --hold 20

Watch tideway's log: replicas start as sessions cross the spawn threshold, and drain back to
min_instances once the sessions are closed and scale_down_delay has passed.
"""

import argparse
import asyncio
import base64
import collections
import os
import struct
import time


async def open_session(host, port, vhost, path):
    reader, writer = await asyncio.open_connection(host, port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            f"GET {path} HTTP/1.1\r\nHost: {vhost}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    status = await reader.readline()
    if b" 101 " not in status:
        writer.close()
        raise RuntimeError(status.decode(errors="replace").strip() or "connection closed")
    while (await reader.readline()) not in (b"\r\n", b""):
        pass
    send_frame(writer, 0x1, b"whoami")
    opcode, payload = await read_frame(reader)
    return reader, writer, payload.decode(errors="replace") if opcode == 0x1 else "?"


def send_frame(writer, opcode, payload):
    mask = os.urandom(4)
    header = bytes([0x80 | opcode, 0x80 | len(payload)])
    writer.write(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))


async def read_frame(reader):
    b0, b1 = await reader.readexactly(2)
    length = b1 & 0x7F
    if length == 126:
        length = struct.unpack("!H", await reader.readexactly(2))[0]
    elif length == 127:
        length = struct.unpack("!Q", await reader.readexactly(8))[0]
    return b0 & 0x0F, await reader.readexactly(length)


async def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--address", default="127.0.0.1:8080", help="tideway's listen address")
    parser.add_argument("--host", default="hello.localhost", help="Host header of the app")
    parser.add_argument("--path", default="/ws")
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--hold", type=float, default=20.0, help="seconds to keep the sessions open")
    parser.add_argument("--interval", type=float, default=0.3, help="seconds between new sessions")
    args = parser.parse_args()
    host, port = args.address.rsplit(":", 1)

    sessions = []
    started = time.monotonic()
    for n in range(1, args.sessions + 1):
        try:
            session = await asyncio.wait_for(open_session(host, int(port), args.host, args.path), 60)
        except Exception as error:  # noqa: BLE001 - report and go on: this is a load tool
            print(f"session {n:3}: failed: {error}")
            continue
        sessions.append(session)
        print(f"session {n:3}: held by {session[2]}  (+{time.monotonic() - started:.1f}s)")
        await asyncio.sleep(args.interval)

    spread = collections.Counter(s[2] for s in sessions)
    print("sessions per replica:", ", ".join(f"{r}={c}" for r, c in sorted(spread.items())))
    print(f"holding {len(sessions)} sessions for {args.hold:.0f}s ...")
    await asyncio.sleep(args.hold)
    for reader, writer, _ in sessions:
        send_frame(writer, 0x8, struct.pack("!H", 1000))
        writer.close()
    print("closed; replicas drain back after scale_down_delay")


if __name__ == "__main__":
    asyncio.run(main())
