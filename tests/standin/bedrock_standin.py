#!/usr/bin/env python3
"""A local HTTPS stand-in for the Amazon Bedrock runtime API, for bedrock-keyd's tests.

Python 3.11 standard library only (ThreadingHTTPServer + ssl, HTTP/1.1 keep-alive); the
certificate comes from `openssl req -x509`. It verifies every `Authorization: Bearer
bedrock-api-key-…` on its own, with an independent SigV4 implementation (hmac/hashlib),
so a test that passes here proves the key would be accepted for its signature, scope and
validity, not merely that some header was sent.

    python3 tests/standin/bedrock_standin.py --dir DIR --secret-key SECRET \
        [--access-key-id AKID] [--plain-http]

Writes DIR/cert.pem (the CA bundle for clients), DIR/requests.jsonl (one JSON line per
request, flushed: method, path, status, key_fingerprint = first 16 hex of the sha256 of
the bearer value, `why` on rejection) and, last and atomically, DIR/port.

Routes (POST): /model/{id}/converse, /model/{id}/converse-stream (eventstream),
/model/{id}/invoke, /model/{id}/invoke-with-response-stream (eventstream `chunk`s),
/openai/v1/chat/completions (JSON or server-sent events). GET /_standin/stats (no auth).
Knobs (request headers): x-standin-chunks, x-standin-interval-ms, x-standin-reset-after,
x-standin-delay-ms, x-standin-status.

Never prints a key: only fingerprints reach the log.
"""
import argparse
import base64
import binascii
import datetime
import hashlib
import hmac
import json
import os
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

KEY_PREFIX = "bedrock-api-key-"
KEY_HOST = "bedrock.amazonaws.com"
# A client's clock may run ahead of ours by this much (the key's X-Amz-Date in the future).
CLOCK_SKEW = 300


class Rejected(Exception):
    """A key the real service would refuse; the message says why (never the key)."""


def fingerprint(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:16]


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def verify_key(key: str, secret: str, access_key_id, now: float) -> None:
    """Raises Rejected unless `key` is a valid, current Bedrock API key signed with `secret`."""
    if not key.startswith(KEY_PREFIX):
        raise Rejected("not a bedrock api key (prefix)")
    try:
        url = base64.b64decode(key[len(KEY_PREFIX):], validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise Rejected("not a bedrock api key (base64)")
    host, sep, query = url.partition("/?")
    if host != KEY_HOST or not sep:
        raise Rejected("not a bedrock api key (host)")
    if not query.endswith("&Version=1"):
        raise Rejected("not a bedrock api key (version)")
    pairs = urllib.parse.parse_qsl(query[: -len("&Version=1")], keep_blank_values=True, strict_parsing=True)
    params = dict(pairs)
    if len(params) != len(pairs):
        raise Rejected("duplicate parameter")
    for name in ("Action", "X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires",
                 "X-Amz-SignedHeaders", "X-Amz-Signature"):
        if name not in params:
            raise Rejected(f"missing {name}")
    if params["Action"] != "CallWithBearerToken":
        raise Rejected("wrong action")
    if params["X-Amz-Algorithm"] != "AWS4-HMAC-SHA256":
        raise Rejected("wrong algorithm")
    if params["X-Amz-SignedHeaders"] != "host":
        raise Rejected("wrong signed headers")
    cred = params["X-Amz-Credential"].split("/")
    if len(cred) != 5 or cred[3] != "bedrock" or cred[4] != "aws4_request":
        raise Rejected("wrong credential scope (service must be bedrock)")
    akid, day, region = cred[0], cred[1], cred[2]
    if access_key_id is not None and akid != access_key_id:
        raise Rejected("unknown access key id")
    try:
        signed_at = datetime.datetime.strptime(params["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(
            tzinfo=datetime.timezone.utc).timestamp()
        expires = int(params["X-Amz-Expires"])
    except ValueError:
        raise Rejected("bad date or expiry")
    if params["X-Amz-Date"][:8] != day:
        raise Rejected("credential date does not match X-Amz-Date")
    if not 1 <= expires <= 43200:
        raise Rejected("expiry out of range")
    if "X-Amz-Security-Token" in params:
        pass  # signed like any other parameter; the stand-in knows no sessions to check it against
    # The signature first: "expired" must only ever be said of a genuine key.
    canonical_query = "&".join(
        f"{urllib.parse.quote(k, safe='-_.~')}={urllib.parse.quote(v, safe='-_.~')}"
        for k, v in sorted(pairs) if k != "X-Amz-Signature")
    canonical_request = "\n".join([
        "POST", "/", canonical_query, f"host:{KEY_HOST}\n", "host", hashlib.sha256(b"").hexdigest()])
    scope = f"{day}/{region}/bedrock/aws4_request"
    string_to_sign = "\n".join([
        "AWS4-HMAC-SHA256", params["X-Amz-Date"], scope,
        hashlib.sha256(canonical_request.encode()).hexdigest()])
    k = _hmac(("AWS4" + secret).encode(), day)
    k = _hmac(k, region)
    k = _hmac(k, "bedrock")
    k = _hmac(k, "aws4_request")
    expected = hmac.new(k, string_to_sign.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, params["X-Amz-Signature"]):
        raise Rejected("bad signature")
    if signed_at > now + CLOCK_SKEW:
        raise Rejected("signed in the future")
    if signed_at + expires <= now:
        raise Rejected("expired")


# --- application/vnd.amazon.eventstream -------------------------------------------------

def _header(name: str, value: str) -> bytes:
    n, v = name.encode(), value.encode()
    return struct.pack("!B", len(n)) + n + b"\x07" + struct.pack("!H", len(v)) + v


def event_frame(event_type: str, payload: dict, message_type: str = "event") -> bytes:
    headers = (_header(":event-type", event_type) + _header(":content-type", "application/json")
               + _header(":message-type", message_type))
    body = json.dumps(payload).encode()
    total = 12 + len(headers) + len(body) + 4
    prelude = struct.pack("!II", total, len(headers))
    prelude += struct.pack("!I", binascii.crc32(prelude))
    msg = prelude + headers + body
    return msg + struct.pack("!I", binascii.crc32(msg))


# --- the server -------------------------------------------------------------------------

class Stats:
    def __init__(self, path: str):
        self.lock = threading.Lock()
        self.requests = 0
        self.by_status: dict = {}
        self.log = open(path, "a", buffering=1)

    def record(self, entry: dict) -> None:
        with self.lock:
            self.requests += 1
            key = str(entry["status"])
            self.by_status[key] = self.by_status.get(key, 0) + 1
            self.log.write(json.dumps(entry) + "\n")
            self.log.flush()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "bedrock-standin/1"

    def setup(self):
        # The handshake runs here, in the connection's thread, not in the accept loop.
        if isinstance(self.request, ssl.SSLSocket):
            self.request.settimeout(10)
            self.request.do_handshake()
            self.request.settimeout(None)
        super().setup()

    def log_message(self, fmt, *args):  # requests.jsonl is the log; keep stderr quiet
        pass

    # -- helpers
    def _entry(self, status: int, fp, why=None) -> None:
        e = {"method": self.command, "path": self.path, "status": status, "key_fingerprint": fp,
             "time": time.time()}
        if why:
            e["why"] = why
        self.server.stats.record(e)

    def _send_json(self, status: int, obj, extra=None) -> None:
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-amzn-RequestId", "standin-" + os.urandom(6).hex())
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def _knob(self, name: str, default: int) -> int:
        try:
            return int(self.headers.get(name, default))
        except ValueError:
            return default

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _reset(self) -> None:
        """Abort the connection with a TCP RST (SO_LINGER 0, then close)."""
        sock = self.connection
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.close_connection = True
        try:
            # rfile holds a reference that would defer the close (and so the RST).
            self.rfile.close()
            sock.close()
        except OSError:
            pass

    # -- streaming bodies: chunked transfer, each piece flushed on its own
    def _start_stream(self, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("x-amzn-RequestId", "standin-" + os.urandom(6).hex())
        self.end_headers()
        self.wfile.flush()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _end_stream(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _stream(self, content_type: str, pieces) -> bool:
        """Sends `pieces` honouring the interval and reset knobs; False when reset."""
        interval = self._knob("x-standin-interval-ms", 0) / 1000
        reset_after = self._knob("x-standin-reset-after", -1)
        self._start_stream(content_type)
        for i, piece in enumerate(pieces):
            if i == reset_after:
                self._reset()
                return False
            if i and interval:
                time.sleep(interval)
            self._chunk(piece)
        self._end_stream()
        return True

    # -- verbs
    def do_GET(self):
        if self.path == "/_standin/stats":
            with self.server.stats.lock:
                obj = {"requests": self.server.stats.requests, "by_status": dict(self.server.stats.by_status)}
            self._send_json(200, obj)
            return
        self._read_body()
        self._entry(404, None, "no such route")
        self._send_json(404, {"message": "no such route"})

    def do_POST(self):
        body = self._read_body()
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            self._entry(403, None, "missing bearer token")
            self._send_json(403, {"message": "Authorization header is missing a bearer token"})
            return
        key = auth[len("Bearer "):]
        fp = fingerprint(key)
        try:
            verify_key(key, self.server.secret, self.server.access_key_id, time.time())
        except Rejected as e:
            self._entry(403, fp, str(e))
            self._send_json(403, {"message": f"Bearer token rejected: {e}"})
            return
        delay = self._knob("x-standin-delay-ms", 0)
        if delay:
            time.sleep(delay / 1000)
        status = self._knob("x-standin-status", 0)
        if status:
            self._entry(status, fp, "x-standin-status")
            self._send_json(status, {"message": f"stand-in answered {status} as asked"})
            return
        try:
            req = json.loads(body or b"{}")
        except ValueError:
            req = {}
        n = max(1, self._knob("x-standin-chunks", 3))
        path = urllib.parse.urlsplit(self.path).path
        parts = path.split("/")
        route = parts[3] if len(parts) == 4 and parts[1] == "model" else None
        model = urllib.parse.unquote(parts[2]) if route else None
        if route == "converse":
            self._entry(200, fp)
            self._send_json(200, {
                "output": {"message": {"role": "assistant", "content": [{"text": "hello from the stand-in"}]}},
                "stopReason": "end_turn",
                "usage": {"inputTokens": 3, "outputTokens": 5, "totalTokens": 8},
                "metrics": {"latencyMs": 1},
            })
        elif route == "converse-stream":
            frames = [event_frame("messageStart", {"role": "assistant"})]
            frames += [event_frame("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": f"chunk {i} "}})
                       for i in range(n)]
            frames += [event_frame("contentBlockStop", {"contentBlockIndex": 0}),
                       event_frame("messageStop", {"stopReason": "end_turn"}),
                       event_frame("metadata", {"usage": {"inputTokens": 3, "outputTokens": n, "totalTokens": 3 + n},
                                                "metrics": {"latencyMs": 1}})]
            # The knobs count content chunks: frame 0 is messageStart, sent with the first.
            pieces = [frames[0] + frames[1]] + frames[2:2 + n - 1] + [b"".join(frames[1 + n:])]
            ok = self._stream("application/vnd.amazon.eventstream", pieces)
            self._entry(200 if ok else 599, fp, None if ok else "reset as asked")
        elif route == "invoke":
            self._entry(200, fp)
            if "anthropic_version" in req:
                self._send_json(200, anthropic_message(model, "hello from the stand-in"))
            else:
                self._send_json(200, {"output": "hello from the stand-in", "model": model})
        elif route == "invoke-with-response-stream":
            events = anthropic_stream_events(model, n) if "anthropic_version" in req else [
                {"type": "chunk", "index": i, "text": f"chunk {i} "} for i in range(n)]
            frames = [event_frame("chunk", {"bytes": base64.b64encode(json.dumps(ev).encode()).decode()})
                      for ev in events]
            if "anthropic_version" in req:
                # message_start + content_block_start ride with the first delta, the tail with the last.
                pieces = [b"".join(frames[:3])] + frames[3:3 + n - 1] + [b"".join(frames[2 + n:])]
            else:
                pieces = frames
            ok = self._stream("application/vnd.amazon.eventstream", pieces)
            self._entry(200 if ok else 599, fp, None if ok else "reset as asked")
        elif path == "/openai/v1/chat/completions":
            if req.get("stream"):
                pieces = [b"data: " + json.dumps({
                    "id": "chatcmpl-standin", "object": "chat.completion.chunk", "model": req.get("model", ""),
                    "choices": [{"index": 0, "delta": {"content": f"chunk {i} "}, "finish_reason": None}],
                }).encode() + b"\n\n" for i in range(n)]
                pieces[-1] += b"data: [DONE]\n\n"
                ok = self._stream("text/event-stream", pieces)
                self._entry(200 if ok else 599, fp, None if ok else "reset as asked")
            else:
                self._entry(200, fp)
                self._send_json(200, {
                    "id": "chatcmpl-standin", "object": "chat.completion", "model": req.get("model", ""),
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello from the stand-in"},
                                 "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8},
                })
        else:
            self._entry(404, fp, "no such route")
            self._send_json(404, {"message": "no such route"})


def anthropic_message(model, text: str) -> dict:
    return {"id": "msg_standin", "type": "message", "role": "assistant", "model": model or "",
            "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": 3, "output_tokens": 5}}


def anthropic_stream_events(model, n: int) -> list:
    start = anthropic_message(model, "")
    start["content"] = []
    return ([{"type": "message_start", "message": start},
             {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}]
            + [{"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": f"chunk {i} "}}
               for i in range(n)]
            + [{"type": "content_block_stop", "index": 0},
               {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": n}},
               {"type": "message_stop"}])


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024


def make_cert(directory: str) -> tuple:
    cert, key = os.path.join(directory, "cert.pem"), os.path.join(directory, "cert.key")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
         "-addext", "basicConstraints=critical,CA:TRUE"],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return cert, key


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", required=True)
    ap.add_argument("--secret-key", required=True)
    ap.add_argument("--access-key-id")
    ap.add_argument("--plain-http", action="store_true")
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    server = Server(("127.0.0.1", args.port), Handler)
    server.secret = args.secret_key
    server.access_key_id = args.access_key_id
    server.stats = Stats(os.path.join(args.dir, "requests.jsonl"))
    if not args.plain_http:
        cert, key = make_cert(args.dir)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        ctx.set_alpn_protocols(["http/1.1"])
        server.socket = ctx.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
    port_file = os.path.join(args.dir, "port")
    with open(port_file + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    os.replace(port_file + ".tmp", port_file)
    try:
        server.serve_forever(poll_interval=0.1)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
