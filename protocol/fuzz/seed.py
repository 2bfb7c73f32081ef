#!/usr/bin/env python3
"""Writes the fixture traces as a seed corpus for the `http1` target, in its input format
(fuzz_targets/http1.rs): per data record, chunks of <= 255 bytes as `side len bytes`.
Usage: python3 seed.py   (from this directory; writes corpus/http1/)"""
import glob
import os

os.makedirs("corpus/http1", exist_ok=True)
for path in glob.glob("../tests/fixtures/*.trace"):
    t, out = open(path, "rb").read(), b""
    while t:
        nl = t.index(b"\n")
        words = t[:nl].decode("latin1").split(" ")
        t = t[nl + 1 :]
        if words[0] in ("req", "resp"):
            n = int(words[1])
            data, t = t[:n], t[n + 1 :]
            side = 0 if words[0] == "req" else 1
            for i in range(0, len(data), 255):
                chunk = data[i : i + 255]
                out += bytes([side, len(chunk)]) + chunk
    name = os.path.basename(path)[: -len(".trace")]
    open(f"corpus/http1/{name}", "wb").write(out)
