#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/corpus/<target>/ from the byte vectors in
crates/protocol/tests/*.rs and crates/protocol/src/{handshake,negotiate}.rs.

Run from anywhere: python3 fuzz/seed_corpus.py (idempotent; file names are content hashes).
Stream targets take one configuration byte first (see fuzz/src/lib.rs): every seed is written
with config 0x00 (no limit, one chunk) and 0x45 (32 KiB limit, split into chunks).
"""
import hashlib
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
TESTS = ROOT / "crates/protocol/tests"
CORPUS = ROOT / "fuzz/corpus"


def rust_str(lit):
    """Decodes the escapes used in the test files' normal string literals."""
    out = bytearray()
    i = 0
    while i < len(lit):
        c = lit[i]
        if c == "\\" and i + 1 < len(lit):
            n = lit[i + 1]
            if n == "x":
                out.append(int(lit[i + 2:i + 4], 16))
                i += 4
                continue
            if n == "u":
                end = lit.index("}", i)
                out += chr(int(lit[i + 3:end], 16)).encode()
                i = end + 1
                continue
            out += {"n": b"\n", "r": b"\r", "t": b"\t", "0": b"\0", "\\": b"\\", '"': b'"', "'": b"'"}[n]
            i += 2
            continue
        out += c.encode()
        i += 1
    return bytes(out)


def varint(n):
    out = bytearray()
    while True:
        low = n & 0x7F
        n >>= 7
        if n == 0:
            out.append(low)
            return bytes(out)
        out.append(low | 0x80)


def read_varint(b):
    n = 0
    for i, byte in enumerate(b[:5]):
        n |= (byte & 0x7F) << (7 * i)
        if byte & 0x80 == 0:
            return n, i + 1
    return None


def write(target, data):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / hashlib.sha1(data).hexdigest()).write_bytes(data)


def stream_seed(target, data):
    write(target, b"\x00" + data)
    write(target, b"\x45" + data)


# JSON hub messages: raw strings and byte strings that look like records.
json_messages = set()
for path in TESTS.glob("*.rs"):
    text = path.read_text()
    for lit in re.findall(r'r#"(.*?)"#', text, re.S):
        if lit.lstrip().startswith(("{", "[")):
            json_messages.add(lit.encode())
    for lit in re.findall(r'b"((?:[^"\\]|\\.)*)"', text):
        raw = rust_str(lit)
        if raw.lstrip().startswith((b"{", b"[")):
            json_messages.add(raw)
for m in sorted(json_messages):
    framed = m if m.endswith(b"\x1e") else m + b"\x1e"
    stream_seed("json_decode", framed)
    if b'"protocol"' in m:
        stream_seed("handshake", framed)
# Several messages in one stream.
stream_seed("json_decode", b"".join(m if m.endswith(b"\x1e") else m + b"\x1e" for m in sorted(json_messages)[:8]))

# MessagePack: hex strings ("96 01 80 …"), framed unless they already carry their prefix.
msgpack_frames = []
text = (TESTS / "msgpack_vectors.rs").read_text()
for lit in re.findall(r'"([0-9a-fA-F ]{2,})"', text):
    digits = re.sub(r"[^0-9a-fA-F]", "", lit)
    if len(digits) % 2:
        continue
    raw = bytes.fromhex(digits)
    prefix = read_varint(raw)
    if prefix and prefix[0] == len(raw) - prefix[1] and len(raw) > 1:
        msgpack_frames.append(raw)
    else:
        msgpack_frames.append(varint(len(raw)) + raw)
for f in msgpack_frames:
    stream_seed("msgpack_decode", f)
stream_seed("msgpack_decode", b"".join(msgpack_frames[:8]))
# Huge declared lengths.
for prefix in ([0xFF, 0xFF, 0xFF, 0xFF, 0x07], [0xFF, 0xFF, 0xFF, 0xFF, 0x08], [0x80, 0x80, 0x02]):
    stream_seed("msgpack_decode", bytes(prefix) + b"\x96\x01")

# VarInt prefixes.
for n in (0, 53, 127, 128, 5248, 16383, 16384, 1 << 21, 0x7FFFFFFF):
    write("varint", varint(n))
for raw in ([0xFF, 0xFF, 0xFF, 0xFF, 0x08], [0x80] * 5, [0x80] * 6, [0x80, 0x00]):
    write("varint", bytes(raw))

# Handshake requests (from src/handshake.rs tests as well).
for h in (
    b'{"protocol":"json","version":1}\x1e',
    b'{"protocol":"messagepack","version":2}\x1e\x02\x91\x06',
    b'{"version":2,"extra":{"a":[1]},"protocol":"messagepack"}\x1e',
    b'{"protocol":"json","version":4294967296}\x1e',
    b'{"protocol":"json","version":1.5}\x1e',
    b'{"protocol":"xml","version":1}\x1e',
    b'{}\x1e{"type":6}\x1e',
    b'{"error":"nope"}\x1e',
):
    stream_seed("handshake", h)

# Negotiate versions (low bit of the first byte = minimum version).
for q in (b"1", b" 1 ", b"+1", b"7", b"-1", b"abc", b"", b"2147483648", b"negotiateVersion=1&id=x",
          b"NEGOTIATEVERSION=%2B1", b"negotiateVersion=&negotiateVersion=1"):
    write("negotiate", b"\x00" + q)
    write("negotiate", b"\x01" + q)

# Query strings.
for q in (b"id=abc&access_token=secret", b"ACCESS_TOKEN=a%20b&x=1", b"access_token=&access_token=t",
          b"access_token", b"a=1&&b=2", b"access_token=t+t%2B"):
    write("query", q)

# Payloads: JSON argument values and MessagePack values.
for v in (b'"hi"', b"42", b"-1.5e3", b"null", b'{"a":[1,-2,3.5,null,true,"x"]}', b"[[[[]]]]",
          b'{"user":"ann","count":2}', b'"\\ud83d\\ude00"', b"18446744073709551615", b"-9223372036854775808"):
    write("payload", b"\x00" + v)
for v in ("a26869", "2a", "c0", "82a178 03 a46e616d65 a161", "dc0000", "c4 02 0102", "d6ff 00000001",
          "cb 3ff8000000000000", "81 01 02", "91" * 20 + "01", "d9 01 ff"):
    write("payload", b"\x01" + bytes.fromhex(v.replace(" ", "")))

for d in sorted(CORPUS.iterdir()):
    print(d.name, len(list(d.iterdir())))
