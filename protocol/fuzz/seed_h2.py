#!/usr/bin/env python3
"""Writes the HTTP/2 fixture traces as seed corpora for the `h2_conn` and `hpack` targets.
h2_conn (fuzz_targets/h2_conn.rs): per data record, chunks of <= 255 bytes as `side len bytes`,
the request side's preface left out (the target adds it). hpack (fuzz_targets/hpack.rs): a
decode-mode input from each direction's header blocks, walked by length.
Usage: python3 seed_h2.py   (from this directory; writes corpus/h2_conn/ and corpus/hpack/)"""
import glob
import os

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
os.makedirs("corpus/h2_conn", exist_ok=True)
os.makedirs("corpus/hpack", exist_ok=True)
for path in glob.glob("../tests/fixtures/h2/*.trace"):
    name = os.path.basename(path)[: -len(".trace")]
    t, out, sides = open(path, "rb").read(), b"", {0: b"", 1: b""}
    while t:
        nl = t.index(b"\n")
        words = t[:nl].decode("latin1").split(" ")
        t = t[nl + 1 :]
        if words[0] in ("req", "resp"):
            n = int(words[1])
            data, t = t[:n], t[n + 1 :]
            side = 0 if words[0] == "req" else 1
            if side == 0 and not sides[0] and data.startswith(PREFACE):
                data = data[len(PREFACE) :]
            sides[side] += data
            for i in range(0, len(data), 255):
                chunk = data[i : i + 255]
                out += bytes([side, len(chunk)]) + chunk
    open(f"corpus/h2_conn/{name}", "wb").write(out)
    for side, data in sides.items():
        blocks, i = b"\x00", 0
        while i + 9 <= len(data):
            n = int.from_bytes(data[i : i + 3], "big")
            if data[i + 3] in (1, 9) and 0 < n <= 255 and not data[i + 4] & 0x28:
                blocks += bytes([n]) + data[i + 9 : i + 9 + n]
            i += 9 + n
        open(f"corpus/hpack/{name}.{side}", "wb").write(blocks)
