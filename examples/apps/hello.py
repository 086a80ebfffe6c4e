#!/usr/bin/env python3
"""Example app for tideway: an HTTP page and a WebSocket echo that say which replica answered.

Standard library only. Listens on 127.0.0.1:$PORT (or --port). WebSocket at /ws: every text message is
echoed back prefixed with the replica name; the message "whoami" gets just the name.
"""

import argparse
import base64
import hashlib
import os
import socket
import struct
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>hello from {name}</title></head>
<body style="font-family: sans-serif">
<h1>hello from replica <code>{name}</code></h1>
<p>WebSocket: <span id="state">connecting</span></p>
<pre id="log"></pre>
<script>
const log = (t) => document.getElementById("log").textContent += t + "\\n";
const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "{prefix}/ws");
ws.onopen = () => {{ document.getElementById("state").textContent = "open"; ws.send("whoami"); }};
ws.onmessage = (e) => log("session held by replica " + e.data);
ws.onclose = (e) => {{ document.getElementById("state").textContent = "closed (" + e.code + ")"; }};
</script>
</body></html>
"""


def replica_name(port):
    return os.environ.get("TIDEWAY_REPLICA", "hello-%d" % port)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        sys.stderr.write("%s %s\n" % (self.server.name, fmt % args))

    def do_GET(self):
        if self.path.rstrip("/").endswith("/ws") and self.headers.get("Upgrade", "").lower() == "websocket":
            return self.websocket()
        prefix = self.headers.get("X-Forwarded-Prefix", "")
        body = PAGE.format(name=self.server.name, prefix=prefix).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Replica", self.server.name)
        self.end_headers()
        self.wfile.write(body)

    def websocket(self):
        key = self.headers.get("Sec-WebSocket-Key", "")
        accept = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.end_headers()
        self.wfile.flush()
        self.close_connection = True
        try:
            self.echo_frames()
        except (ConnectionError, OSError, EOFError):
            pass

    def read_exact(self, n):
        data = self.rfile.read(n)
        if len(data) < n:
            raise EOFError
        return data

    def send_frame(self, opcode, payload):
        header = bytes([0x80 | opcode])
        if len(payload) < 126:
            header += bytes([len(payload)])
        elif len(payload) < 65536:
            header += bytes([126]) + struct.pack("!H", len(payload))
        else:
            header += bytes([127]) + struct.pack("!Q", len(payload))
        self.wfile.write(header + payload)
        self.wfile.flush()

    def echo_frames(self):
        while True:
            b0, b1 = self.read_exact(2)
            opcode, length = b0 & 0x0F, b1 & 0x7F
            if length == 126:
                length = struct.unpack("!H", self.read_exact(2))[0]
            elif length == 127:
                length = struct.unpack("!Q", self.read_exact(8))[0]
            mask = self.read_exact(4) if b1 & 0x80 else b"\0\0\0\0"
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(self.read_exact(length)))
            if opcode == 0x8:
                self.send_frame(0x8, payload[:2])
                return
            if opcode == 0x9:
                self.send_frame(0xA, payload)
            elif opcode == 0x1:
                text = payload.decode("utf-8", "replace")
                reply = self.server.name if text == "whoami" else "%s: %s" % (self.server.name, text)
                self.send_frame(0x1, reply.encode())
            elif opcode == 0x2:
                self.send_frame(0x2, payload)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    server.name = replica_name(args.port)
    server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sys.stderr.write("%s listening on 127.0.0.1:%d\n" % (server.name, args.port))
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
