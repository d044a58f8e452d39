"""Smoke test of the polyglot plugins against a running gateway (examples/polyglot.toml),
with Python's standard library only: a minimal WebSocket client (RFC 6455, client
frames masked, no extensions).

    python3 plugins/py/tools/smoke.py [--url ws://127.0.0.1:8080/demo] [--lang js py]

For each language: /echo-<lang> returns a text and a binary message unchanged;
/chat-<lang>/{room} announces a join to the room, relays a text as a JSON message to the
others but not the sender, relays binary unchanged, keeps rooms apart, and announces a
leave. Exit status 1 on the first difference. Every wait has a timeout.
"""

import argparse
import base64
import json
import os
import socket
import struct
import sys
import time
from urllib.parse import urlparse

TIMEOUT = 5.0


class WebSocket:
    def __init__(self, url: str) -> None:
        parsed = urlparse(url)
        self.sock = socket.create_connection((parsed.hostname, parsed.port or 80), timeout=TIMEOUT)
        key = base64.b64encode(os.urandom(16)).decode()
        path = parsed.path + (f"?{parsed.query}" if parsed.query else "")
        request = (f"GET {path} HTTP/1.1\r\nHost: {parsed.netloc}\r\nUpgrade: websocket\r\n"
                   f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                   "Sec-WebSocket-Version: 13\r\n\r\n")
        self.sock.sendall(request.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError(f"{url}: closed during the upgrade: {head!r}")
            head += chunk
        head, self.buffer = head.split(b"\r\n\r\n", 1)
        status = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status + b" ":
            raise ConnectionError(f"{url}: {status.decode(errors='replace')}")

    def _read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed")
            self.buffer += chunk
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def send(self, payload, opcode=None) -> None:
        if opcode is None:
            opcode = 1 if isinstance(payload, str) else 2
        data = payload.encode() if isinstance(payload, str) else bytes(payload)
        header = bytes([0x80 | opcode])
        if len(data) < 126:
            header += bytes([0x80 | len(data)])
        elif len(data) < 65536:
            header += bytes([0x80 | 126]) + struct.pack(">H", len(data))
        else:
            header += bytes([0x80 | 127]) + struct.pack(">Q", len(data))
        mask = os.urandom(4)
        self.sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def recv(self, timeout: float = TIMEOUT):
        """The next data message: str (text) or bytes (binary); pings are answered."""
        self.sock.settimeout(timeout)
        while True:
            b0, b1 = self._read(2)
            opcode, length = b0 & 0x0F, b1 & 0x7F
            if length == 126:
                length = struct.unpack(">H", self._read(2))[0]
            elif length == 127:
                length = struct.unpack(">Q", self._read(8))[0]
            payload = self._read(length)
            if opcode == 1:
                return payload.decode()
            if opcode == 2:
                return payload
            if opcode == 8:
                raise ConnectionError(f"closed by the server: {payload!r}")
            if opcode == 9:
                self.send(payload, opcode=10)

    def expect_nothing(self, wait: float = 0.3) -> None:
        try:
            got = self.recv(timeout=wait)
        except (socket.timeout, TimeoutError):
            return
        raise AssertionError(f"expected nothing, got {got!r}")

    def close(self) -> None:
        try:
            self.send(struct.pack(">H", 1000), opcode=8)
            self.sock.settimeout(1.0)
            self.recv(timeout=1.0)
        except (ConnectionError, OSError):
            pass
        finally:
            self.sock.close()


def check(what: str, got, want) -> None:
    if got != want:
        raise AssertionError(f"{what}: got {got!r}, want {want!r}")
    print(f"  ok  {what}")


def echo(base: str, lang: str) -> None:
    ws = WebSocket(f"{base}/echo-{lang}")
    started = time.perf_counter()
    ws.send("hello, wsgate")
    check(f"echo-{lang}: text comes back", ws.recv(), "hello, wsgate")
    print(f"      first round trip {1000 * (time.perf_counter() - started):.1f} ms")
    ws.send(bytes([0, 1, 2, 255]))
    check(f"echo-{lang}: binary comes back", ws.recv(), bytes([0, 1, 2, 255]))
    ws.send("héllo ✓ \"quoted\"")
    check(f"echo-{lang}: unicode comes back", ws.recv(), "héllo ✓ \"quoted\"")
    started = time.perf_counter()
    for i in range(200):
        ws.send(f"m{i}")
        if ws.recv() != f"m{i}":
            raise AssertionError(f"echo-{lang}: message {i} wrong")
    elapsed = time.perf_counter() - started
    print(f"      200 sequential echoes: {1e6 * elapsed / 200:.0f} µs per round trip")
    ws.close()


def chat(base: str, lang: str) -> None:
    room = f"/chat-{lang}/lobby"
    alice = WebSocket(f"{base}{room}")
    bob = WebSocket(f"{base}{room}")
    joined = json.loads(alice.recv())
    check(f"chat-{lang}: alice sees a join", (joined["event"], joined["room"]), ("join", "lobby"))
    bob_id = joined["connection"]
    alice.send("hi bob")
    raw = bob.recv()
    message = json.loads(raw)
    check(f"chat-{lang}: bob gets alice's text", (message["event"], message["room"], message["text"]),
          ("message", "lobby", "hi bob"))
    alice_id = message["from"]
    check(f"chat-{lang}: frame bytes as the Rust chat's",
          raw, json.dumps({"event": "message", "from": alice_id, "room": "lobby", "text": "hi bob"},
                          separators=(",", ":")))
    # serde_json's escaping: quotes and backslashes, control characters as \u00XX
    # (\n and the like as such), non-ASCII as is.
    tricky = 'say "hé\\llo" ✓\n\x01\x7f'
    alice.send(tricky)
    check(f"chat-{lang}: escaping as serde_json's", bob.recv(),
          json.dumps({"event": "message", "from": alice_id, "room": "lobby", "text": tricky},
                     separators=(",", ":"), ensure_ascii=False))
    alice.expect_nothing()
    print(f"  ok  chat-{lang}: the sender does not get its own message")
    bob.send(b"\x00\x01bin")
    check(f"chat-{lang}: binary is relayed unchanged", alice.recv(), b"\x00\x01bin")
    other = WebSocket(f"{base}/chat-{lang}/other")
    other.send("elsewhere")
    alice.expect_nothing()
    bob.expect_nothing()
    print(f"  ok  chat-{lang}: rooms are apart")
    other.close()
    bob.close()
    left = alice.recv()
    check(f"chat-{lang}: alice sees bob leave", left,
          json.dumps({"connection": bob_id, "event": "leave", "room": "lobby"}, separators=(",", ":")))
    alice.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="ws://127.0.0.1:8080/demo")
    parser.add_argument("--lang", nargs="+", default=["js", "py"])
    args = parser.parse_args()
    try:
        for lang in args.lang:
            print(f"{lang}:")
            echo(args.url, lang)
            chat(args.url, lang)
    except (AssertionError, ConnectionError, OSError) as err:
        print(f"FAILED: {err}", file=sys.stderr)
        return 1
    print("all ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
