"""Generates echo_pb2*.py next to this file on first import (grpc_tools, from the peers venv),
so the generated code never needs to be committed."""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "..", "..", "target", "peers", "grpc-gen")


def load():
    os.makedirs(OUT, exist_ok=True)
    if not os.path.exists(os.path.join(OUT, "echo_pb2_grpc.py")):
        from grpc_tools import protoc

        tmp = OUT + f".tmp{os.getpid()}"
        os.makedirs(tmp, exist_ok=True)
        rc = protoc.main(
            ["protoc", f"-I{HERE}", f"--python_out={tmp}", f"--grpc_python_out={tmp}", "echo.proto"]
        )
        if rc != 0:
            sys.exit(f"protoc failed: {rc}")
        for f in sorted(os.listdir(tmp)):  # echo_pb2.py lands before echo_pb2_grpc.py
            os.replace(os.path.join(tmp, f), os.path.join(OUT, f))
        os.rmdir(tmp)
    sys.path.insert(0, OUT)
    import echo_pb2
    import echo_pb2_grpc

    return echo_pb2, echo_pb2_grpc
