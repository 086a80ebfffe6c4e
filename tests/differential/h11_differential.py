#!/usr/bin/env python3
"""Differential framing test of tideway's HTTP/1.1 relay against h11, an independent strict parser.

This script is both ends of the proxy. As the replica it parses, with h11, everything tideway forwards,
answers each request with a digest of what it parsed (method, target, body), and for `/resp/...` targets
sends a generated response as raw bytes instead. As the client it sends generated requests — valid,
invalid and borderline framing, several pipelined on one connection — as raw bytes, and parses, with h11,
everything tideway sends back.

It checks that:
- whatever tideway forwards to the replica h11 parses, into exactly the messages the client sent: each
  answer from the replica carries the digest of the message it answers, in order, and the replica parsed no
  message the client did not get an answer for (nothing smuggled);
- whatever tideway relays back h11 parses, with exactly the body the replica meant;
- a message every parser must take is never refused, and one every parser must refuse is never forwarded.

Protocol with the test that runs it: it prints `replica PORT` once listening, reads `proxy HOST:PORT` from
standard input, runs `--cases` cases from `--seed`, prints a JSON summary and exits 0 when nothing failed.
Traffic goes to 127.0.0.1 only.
"""

import argparse
import hashlib
import json
import random
import socket
import sys
import threading

import h11

HOST = "diff.test"
ALPHABET = b"abcdefghijklmnopqrstuvwxyz0123456789 -_.\r\n"
# h11 reads at most 20 hex digits of a chunk size (RFC 9112 sets no limit): leading zeros stay within it.
MAX_SIZE_DIGITS = 20
TIMEOUT = 10.0


class Case:
    """One generated message: what it means, its bytes, and whether every parser must take it."""

    def __init__(self, method, target, body, wire, expect, mutation):
        self.method = method
        self.target = target
        self.body = body
        self.wire = wire
        # "valid": must be forwarded whole; "invalid": must be refused; "either": must only be consistent.
        self.expect = expect
        self.mutation = mutation

    def digest(self):
        return {
            "method": self.method,
            "target": self.target,
            "body": hashlib.sha256(self.body).hexdigest(),
        }


class Replica:
    """The replica behind tideway: parses with h11, answers with what it parsed."""

    def __init__(self):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.answered = 0
        self.failures = []
        self.responses = {}

    def start(self):
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            sock, _ = self.listener.accept()
            threading.Thread(target=self.serve, args=(sock,), daemon=True).start()

    def fail(self, text):
        with self.lock:
            self.failures.append(text)

    def serve(self, sock):
        sock.settimeout(TIMEOUT)
        conn = h11.Connection(h11.SERVER)
        seen = bytearray()
        request, body = None, bytearray()
        try:
            while True:
                try:
                    event = conn.next_event()
                except h11.RemoteProtocolError as error:
                    if "without sending complete message body" not in str(error):
                        self.fail(f"h11 refused what tideway forwarded ({error}): {bytes(seen[-400:])!r}")
                    return
                if event is h11.NEED_DATA:
                    try:
                        data = sock.recv(65536)
                    except OSError:
                        return
                    seen += data
                    conn.receive_data(data)
                elif isinstance(event, h11.Request):
                    request, body = event, bytearray()
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    target = request.target.decode("latin-1")
                    raw = self.responses.get(target)
                    if raw is not None:
                        sock.sendall(raw)
                        return
                    self.answer(sock, conn, request, bytes(body))
                    if conn.our_state is h11.MUST_CLOSE:
                        return
                    conn.start_next_cycle()
                else:
                    return
        finally:
            sock.close()

    def answer(self, sock, conn, request, body):
        digest = json.dumps(
            {
                "method": request.method.decode("latin-1"),
                "target": request.target.decode("latin-1"),
                "body": hashlib.sha256(body).hexdigest(),
            }
        ).encode()
        headers = [("content-length", str(len(digest))), ("x-seen", "1")]
        # Counted before it is sent: the client may read the answer, and the run end, before this thread
        # runs again.
        with self.lock:
            self.answered += 1
        sock.sendall(
            conn.send(h11.Response(status_code=200, headers=headers))
            + conn.send(h11.Data(data=digest))
            + conn.send(h11.EndOfMessage())
        )


def size_line(rng, size):
    """A valid chunk-size line for `size`, in one of its many spellings."""
    digits = format(size, "x")
    if rng.random() < 0.3:
        digits = digits.upper()
    if rng.random() < 0.3:
        digits = "0" * rng.randint(1, MAX_SIZE_DIGITS - len(digits)) + digits
    extension = rng.choice(["", "", "", ";a", ";name=value", ';q="a quoted value"', ";a;b=c"])
    space = rng.choice(["", "", "", " ", "\t", "  "])
    return (digits + extension + space).encode() + b"\r\n"


def chunked(rng, body):
    """`body` in random chunks, with spellings and trailers every parser must take."""
    out = bytearray()
    at = 0
    while at < len(body):
        size = rng.randint(1, max(1, len(body) - at))
        out += size_line(rng, size) + body[at : at + size] + b"\r\n"
        at += size
    out += size_line(rng, 0)
    if rng.random() < 0.3:
        out += b"X-Checksum: " + str(len(body)).encode() + b"\r\n"
    out += b"\r\n"
    return bytes(out)


# Chunked framing every parser must refuse: (name, what replaces the first size line, or a function of
# the encoded body).
BAD_SIZE_LINES = [
    ("hex prefix", b"0x5\r\n"),
    ("junk after size", b"5 zz\r\n"),
    ("underscore", b"0_5\r\n"),
    ("colon", b"5: 1\r\n"),
    ("sign", b"+5\r\n"),
    ("negative", b"-5\r\n"),
    ("space before extension", b"5 ;a\r\n"),
    ("bare line feed", b"5\n"),
    ("huge", b"FFFFFFFFFFFFFFFFF\r\n"),
    ("control byte in extension", b"5;a=\x01\r\n"),
    ("empty", b"\r\n"),
]


def bad_chunked(rng, body):
    """A chunked body of five bytes at least, broken one way; returns (name, wire)."""
    kind = rng.randrange(len(BAD_SIZE_LINES) + 4)
    data = (body + b"hello")[:5]
    rest = b"0\r\n\r\n"
    if kind < len(BAD_SIZE_LINES):
        name, line = BAD_SIZE_LINES[kind]
        return name, line + data + b"\r\n" + rest
    kind -= len(BAD_SIZE_LINES)
    if kind == 0:
        return "data longer than its size", b"3\r\n" + data + b"\r\n" + rest
    if kind == 1:
        return "no line end after data", b"5\r\n" + data + b"XX" + rest
    if kind == 2:
        return "trailer without a colon", b"5\r\n" + data + b"\r\n0\r\nno colon here\r\n\r\n"
    return "bare line feed ending the body", b"5\r\n" + data + b"\r\n0\r\n\n"


def request_cases(rng, number):
    """One to three pipelined requests, one of them possibly broken."""
    cases = []
    for i in range(rng.randint(1, 3)):
        method = rng.choice(["GET", "GET", "POST", "PUT", "DELETE"])
        target = f"/req/{number}/{i}"
        with_body = method in ("POST", "PUT") or rng.random() < 0.1
        body = bytes(rng.choice(ALPHABET) for _ in range(rng.randint(5, 64))) if with_body else b""
        head = [f"{method} {target} HTTP/1.1", f"Host: {HOST}"]
        if rng.random() < 0.3:
            head.append("X-Filler: " + "v" * rng.randint(0, 40))
        expect, mutation = "valid", "none"
        if not body:
            wire = b""
        elif rng.random() < 0.5:
            head.append(f"Content-Length: {len(body)}")
            wire = body
        else:
            head.append(rng.choice(["Transfer-Encoding: chunked", "Transfer-Encoding: Chunked"]))
            wire = chunked(rng, body)
        cases.append([method, target, body, head, wire, expect, mutation])
    if rng.random() < 0.6:
        which = rng.randrange(len(cases))
        mutate(rng, cases[which], last=which == len(cases) - 1)
    built = []
    for method, target, body, head, wire, expect, mutation in cases:
        raw = ("\r\n".join(head) + "\r\n\r\n").encode() + wire
        built.append(Case(method, target, body, raw, expect, mutation))
    return built


def mutate(rng, case, last):
    """Breaks or bends one request's framing, saying whether every parser must refuse it. Only the last
    request of a connection may leave bytes behind, which would run into the next one."""
    method, target, body, head, wire, _, _ = case
    body = body or b"hello"
    length = f"Content-Length: {len(body)}"
    kind = rng.randrange(13)
    if kind == 9 and not last:
        kind = 10
    framing = [h for h in head if not h.lower().startswith(("content-length", "transfer-encoding"))]
    if kind == 0:
        name, wire = bad_chunked(rng, body)
        head, expect = framing + ["Transfer-Encoding: chunked"], "invalid"
    elif kind == 1:
        name, head, wire, expect = "length and chunked", framing + [length, "Transfer-Encoding: chunked"], chunked(rng, body), "invalid"
    elif kind == 2:
        name, head, wire, expect = "two lengths", framing + [length, f"Content-Length: {len(body) + 1}"], body, "invalid"
    elif kind == 3:
        name, head, wire, expect = "the same length twice", framing + [length, length], body, "either"
    elif kind == 4:
        coding = rng.choice(["gzip, chunked", "identity, chunked", "chunked, chunked", "chunked, gzip"])
        name, head, wire, expect = f"coding {coding}", framing + [f"Transfer-Encoding: {coding}"], chunked(rng, body), "invalid"
    elif kind == 5:
        name, head, wire, expect = "signed length", framing + [f"Content-Length: +{len(body)}"], body, "invalid"
    elif kind == 6:
        name, head, wire, expect = "space before the colon", framing + [f"Content-Length : {len(body)}"], body, "invalid"
    elif kind == 7:
        # A server rejects it or unfolds it (RFC 9112 §5.2).
        name, head, wire, expect = "folded field", framing + [length, "X-Folded: a", " b"], body, "either"
    elif kind == 8:
        name, head, wire, expect = "length list", framing + [f"Content-Length: {len(body)}, {len(body)}"], body, "either"
    elif kind == 9:
        # What follows the announced length is the next message: here not HTTP, so it is refused.
        name, head, wire, expect = "body longer than its length", framing + [f"Content-Length: {len(body) - 2}"], body, "either"
        body = body[:-2]
    elif kind == 10:
        name, head, wire, expect = "length with spaces", framing + [f"Content-Length:   {len(body)}  "], body, "valid"
    elif kind == 11:
        name, head, wire, expect = "HTTP/1.2", [head[0].replace("HTTP/1.1", "HTTP/1.2")] + framing[1:] + [length], body, "valid"
    else:
        # A recipient may take a bare LF for a line end (RFC 9112 §2.2); tideway forwards CRLF either way.
        name, head, wire, expect = "bare line feed in the head", framing + [length], body, "either"
        head = [head[0] + "\n" + head[1]] + head[2:]
    case[2], case[3], case[4], case[5], case[6] = body, head, wire, expect, name


class Responses:
    """Reads the responses tideway sends on one connection with h11, one client state per response."""

    def __init__(self, sock):
        self.sock = sock
        self.buffer = b""
        self.closed = False

    def next(self, method):
        """(status, headers, body, error) of the next response; None once the connection is done."""
        conn = h11.Connection(h11.CLIENT)
        conn.send(h11.Request(method=method, target="/", headers=[("host", HOST)]))
        conn.send(h11.EndOfMessage())
        if self.buffer or self.closed:
            conn.receive_data(self.buffer)
            self.buffer = b""
        if self.closed:
            conn.receive_data(b"")
        response, body = None, bytearray()
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as error:
                if response is None and self.closed and not body:
                    return None
                return (response.status_code if response else None, response, bytes(body), str(error))
            if event is h11.NEED_DATA:
                try:
                    data = self.sock.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    self.closed = True
                conn.receive_data(data)
            elif isinstance(event, h11.Response):
                response = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                self.buffer, closed = conn.trailing_data
                self.closed = self.closed or closed
                return (response.status_code, response, bytes(body), None)
            elif isinstance(event, h11.ConnectionClosed):
                return None


def header(response, name):
    for key, value in response.headers:
        if key == name:
            return value
    return None


def run_requests(proxy, rng, number, replica, report):
    cases = request_cases(rng, number)
    with socket.create_connection(proxy, timeout=TIMEOUT) as sock:
        sock.sendall(b"".join(case.wire for case in cases))
        responses = Responses(sock)
        refused = False
        for case in cases:
            got = responses.next(case.method)
            if got is None:
                if case.expect == "valid" and not refused:
                    report.fail(number, case, "a valid request got no answer")
                continue
            status, response, body, error = got
            if error is not None:
                report.fail(number, case, f"h11 refused tideway's answer: {error}")
                return
            if refused:
                report.fail(number, case, f"answered ({status}) after an earlier refusal")
                continue
            if header(response, b"x-seen") is None:
                refused = True
                if case.expect == "valid":
                    report.fail(number, case, f"a valid request was refused: {status} {body!r}")
                continue
            report.forwarded += 1
            report.answered_requests += 1
            if case.expect == "invalid":
                report.fail(number, case, "a request every parser must refuse was forwarded")
            if json.loads(body) != case.digest():
                report.fail(number, case, f"the replica parsed another message: {body!r}")


def response_case(rng, number):
    """A raw response the replica sends, the body it means, and what every parser must make of it."""
    payload = bytes(rng.choice(ALPHABET) for _ in range(rng.randint(0, 64)))
    # The replica closes the connection after it, and says so, as a server must that means to close: a
    # close it did not announce could meet a request tideway is sending on the connection just then.
    head = ["HTTP/1.1 200 OK", f"X-Case: {number}", "Connection: close"]
    kind = rng.randrange(10)
    expect, name = "valid", "length"
    if kind < 3:
        head.append(f"Content-Length: {len(payload)}")
        wire = payload
    elif kind < 6:
        head.append("Transfer-Encoding: chunked")
        wire, name = chunked(rng, payload), "chunked"
    elif kind == 6:
        wire, name = payload, "until close"
    elif kind == 7:
        name, wire = bad_chunked(rng, payload)
        head.append("Transfer-Encoding: chunked")
        expect = "invalid"
    elif kind == 8:
        head += [f"Content-Length: {len(payload)}", f"Content-Length: {len(payload) + 1}"]
        wire, name, expect = payload, "two lengths", "invalid"
    else:
        head.append("Transfer-Encoding: gzip, chunked")
        wire, name, expect = chunked(rng, payload), "coding gzip, chunked", "invalid"
    raw = ("\r\n".join(head) + "\r\n\r\n").encode() + wire
    return Case("GET", f"/resp/{number}", payload, raw, expect, name)


def run_response(proxy, rng, number, replica, report):
    case = response_case(rng, number)
    replica.responses[case.target] = case.wire
    with socket.create_connection(proxy, timeout=TIMEOUT) as sock:
        sock.sendall(f"GET {case.target} HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
        got = Responses(sock).next("GET")
    if got is None:
        report.fail(number, case, "no answer at all")
        return
    status, response, body, error = got
    relayed = response is not None and header(response, b"x-case") is not None
    if error is not None:
        # A body whose framing breaks after its head was relayed is cut: the client sees it end early.
        cut = "without sending complete message body" in error
        if not (relayed and cut and case.expect != "valid"):
            report.fail(number, case, f"h11 refused what tideway relayed: {error}")
        return
    if not relayed:
        if case.expect == "valid":
            report.fail(number, case, f"a valid response was replaced by {status} {body!r}")
        return
    report.forwarded += 1
    if case.expect == "invalid":
        report.fail(number, case, "a response every parser must refuse was relayed whole")
    elif body != case.body:
        report.fail(number, case, f"the client got another body: {body!r}")


class Report:
    def __init__(self):
        self.failures = []
        self.forwarded = 0
        self.answered_requests = 0

    def fail(self, number, case, text):
        self.failures.append(
            {"case": number, "mutation": case.mutation, "problem": text, "sent": case.wire.decode("latin-1")}
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=20261202)
    parser.add_argument("--cases", type=int, default=400)
    args = parser.parse_args()

    replica = Replica()
    replica.start()
    print(f"replica {replica.port}", flush=True)
    line = sys.stdin.readline().split()
    if len(line) != 2 or line[0] != "proxy":
        print(f"expected `proxy HOST:PORT` on standard input, got {line!r}", file=sys.stderr)
        return 2
    address, port = line[1].rsplit(":", 1)
    proxy = (address, int(port))

    rng = random.Random(args.seed)
    report = Report()
    for number in range(args.cases):
        if rng.random() < 0.7:
            run_requests(proxy, rng, number, replica, report)
        else:
            run_response(proxy, rng, number, replica, report)
    with replica.lock:
        answered = replica.answered
        failures = list(replica.failures)
    if answered != report.answered_requests:
        failures.append(
            f"the replica answered {answered} requests, the clients got {report.answered_requests} of those "
            "answers: a message was smuggled past the framing"
        )
    summary = {
        "seed": args.seed,
        "cases": args.cases,
        "forwarded": report.forwarded,
        "replica_answered": answered,
        "failures": report.failures + [{"problem": text} for text in failures],
    }
    print(json.dumps(summary, indent=1))
    return 1 if summary["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
