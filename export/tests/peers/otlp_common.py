"""Shared by the OTLP sinks: request → JSON record, scripted answers, google.rpc.Status bytes.

The sinks decode with the official `opentelemetry-proto` package, so what a test asserts is
what a real OTLP receiver would have decoded. Ids are written as lower-case hex (as OTLP/JSON
does); everything else is protobuf's JSON mapping (camelCase, 64-bit integers as strings).
"""

import base64
import json
import sys
import threading
import time

from google.protobuf import duration_pb2, json_format

ID_FIELDS = ("traceId", "spanId", "parentSpanId")


def request_to_dict(req):
    d = json_format.MessageToDict(req)
    for rs in d.get("resourceSpans", []):
        for ss in rs.get("scopeSpans", []):
            for span in ss.get("spans", []):
                for f in ID_FIELDS:
                    if f in span:
                        span[f] = base64.b64decode(span[f]).hex()
    return d


class Script:
    """Answers to give, in order ("unavailable", "partial:3", ...); then "ok" forever."""

    def __init__(self, text):
        self.actions = [a.strip() for a in (text or "").split(",") if a.strip()]
        self.lock = threading.Lock()
        self.seq = 0

    def next(self):
        with self.lock:
            self.seq += 1
            action = self.actions.pop(0) if self.actions else "ok"
            return self.seq, action


class Recorder:
    def __init__(self, path):
        self.lock = threading.Lock()
        self.out = open(path, "a", encoding="utf-8") if path else sys.stdout

    def write(self, record):
        record["time"] = time.time()
        line = json.dumps(record, sort_keys=True)
        with self.lock:
            self.out.write(line + "\n")
            self.out.flush()


def _varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field(num, wire, payload):
    key = _varint((num << 3) | wire)
    if wire == 0:
        return key + _varint(payload)
    return key + _varint(len(payload)) + payload


def rpc_status(code, message, retry_delay_seconds=None):
    """A serialized google.rpc.Status, with a google.rpc.RetryInfo detail when a delay is given.

    Hand-encoded (three small messages) because googleapis-common-protos is not a peer here.
    """
    body = b""
    if code:
        body += _field(1, 0, code)
    if message:
        body += _field(2, 2, message.encode())
    if retry_delay_seconds is not None:
        d = duration_pb2.Duration()
        d.FromNanoseconds(int(retry_delay_seconds * 1e9))
        retry_info = _field(1, 2, d.SerializeToString())
        any_msg = _field(1, 2, b"type.googleapis.com/google.rpc.RetryInfo") + _field(2, 2, retry_info)
        body += _field(3, 2, any_msg)
    return body


def announce(port):
    print(f"LISTENING {port}", flush=True)
