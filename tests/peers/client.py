"""Scripted TCP clients for sonde's capture tests. Each mode prints what it did, so the test
can compare the bytes sonde captured with the bytes the program really sent and received.

modes:
  exchange HOST PORT HEXREQ      send the request, read the HTTP response; print
                                 "local PORT", "fd N", then "recv HEX"
  reuse HOST PORT                two connections one after the other, same fd number; prints
                                 "conn FD LOCALPORT" for each
  preexisting HOST PORT          connect, print "connected FD LOCALPORT", wait for a line on
                                 stdin, then send a GET /hello and print "recv HEX"
  iov HOST PORT                  sendmsg/writev with several buffers to an echo server, read
                                 back with recvmsg_into/readv into several buffers;
                                 prints "sent HEX" and "recv HEX"
  tiny HOST PORT N               N one-byte sends to an echo server, read all back
  garbage HOST PORT N SEED       N random bytes in random-sized writes to an echo server
  big HOST PORT N                send N bytes in one write to an echo server, read them back
  noise DIR UDPPORT              file, pipe, unix socket and UDP traffic (no TCP at all)
  pidreuse HOST PORT             two forked children with the same pid (through the root pid
                                 namespace's ns_last_pid; needs root): the first writes to a
                                 file at fd 50 and exits without closing it, the second inherits
                                 a TCP connection at fd 50 and sends a GET /pid-reuse on it;
                                 prints "pid P", then "recv HEX"
"""
import os
import random
import socket
import sys


def connect(host, port):
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.connect((host, int(port)))
    return s


def read_http_response(s):
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            return buf
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    n = 0
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            n = int(v.strip())
    while len(body) < n:
        chunk = s.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def gather(bufs, n):
    out = b""
    for b in bufs:
        take = min(len(b), n - len(out))
        out += bytes(b[:take])
        if len(out) == n:
            break
    return out


def recv_exact(s, n):
    out = b""
    while len(out) < n:
        chunk = s.recv(65536)
        if not chunk:
            break
        out += chunk
    return out


PID_REUSE_FD = 50


def fork_with_pid(pid, child):
    """Forks `child()` as process `pid`: ns_last_pid says which pid the next fork takes, and
    another process (tests run in parallel) may take it first, so retry while it is free.
    Returns the child's exit code, or None when another process holds the pid now."""
    for _ in range(100):
        if os.path.exists(f"/proc/{pid}"):
            return None
        with open("/proc/sys/kernel/ns_last_pid", "w") as f:
            f.write(str(pid - 1))
        got = os.fork()
        if got == 0:
            code = 1
            try:
                if os.getpid() == pid:
                    child()
                    code = 0
                else:
                    code = 3
            finally:
                os._exit(code)
        _, status = os.waitpid(got, 0)
        if got == pid:
            return os.waitstatus_to_exitcode(status)
    return None


def free_pid():
    """A pid that no process has, away from the ones being handed out now."""
    with open("/proc/sys/kernel/pid_max") as f:
        pid_max = int(f.read())
    for i in range(pid_max):
        pid = (os.getpid() + pid_max // 2 + i) % pid_max
        if pid > 300 and not os.path.exists(f"/proc/{pid}"):
            return pid
    sys.exit("no free pid")


def main():
    mode = sys.argv[1]
    if mode == "exchange":
        host, port, req = sys.argv[2], sys.argv[3], bytes.fromhex(sys.argv[4])
        s = connect(host, port)
        print("local", s.getsockname()[1], flush=True)
        print("fd", s.fileno(), flush=True)
        s.sendall(req)
        print("recv", read_http_response(s).hex(), flush=True)
        s.close()
    elif mode == "reuse":
        host, port = sys.argv[2], sys.argv[3]
        for word in (b"one", b"two"):
            s = connect(host, port)
            print("conn", s.fileno(), s.getsockname()[1], flush=True)
            s.sendall(word)
            assert recv_exact(s, len(word)) == word
            s.close()
    elif mode == "preexisting":
        host, port = sys.argv[2], sys.argv[3]
        s = connect(host, port)
        print("connected", s.fileno(), s.getsockname()[1], flush=True)
        sys.stdin.readline()
        s.sendall(b"GET /hello HTTP/1.1\r\nHost: test\r\n\r\n")
        print("recv", read_http_response(s).hex(), flush=True)
        s.close()
    elif mode == "iov":
        host, port = sys.argv[2], sys.argv[3]
        s = connect(host, port)
        parts = [b"alpha-", b"beta-", b"", b"gamma-"]
        s.sendmsg(parts)
        os.writev(s.fileno(), [b"delta-", b"epsilon"])
        sent = b"".join(parts) + b"delta-epsilon"
        print("sent", sent.hex(), flush=True)
        got = b""
        use_readv = False
        while len(got) < len(sent):
            bufs = [bytearray(5), bytearray(7), bytearray(64)]
            if use_readv:
                n = os.readv(s.fileno(), bufs)
            else:
                n = s.recvmsg_into(bufs)[0]
            use_readv = not use_readv
            if n == 0:
                break
            got += gather(bufs, n)
        print("recv", got.hex(), flush=True)
        s.close()
    elif mode == "tiny":
        host, port, n = sys.argv[2], sys.argv[3], int(sys.argv[4])
        s = connect(host, port)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(n):
            s.send(bytes([48 + i % 10]))
        got = recv_exact(s, n)
        assert len(got) == n
        s.close()
    elif mode == "garbage":
        host, port, n, seed = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
        rnd = random.Random(seed)
        data = bytes(rnd.getrandbits(8) for _ in range(n))
        s = connect(host, port)
        i = 0
        while i < n:
            k = rnd.randint(1, 700)
            s.sendall(data[i : i + k])
            i += k
        got = recv_exact(s, n)
        assert got == data
        print("sent", data.hex(), flush=True)
        s.close()
    elif mode == "big":
        host, port, n = sys.argv[2], sys.argv[3], int(sys.argv[4])
        s = connect(host, port)
        data = bytes((i * 7) % 256 for i in range(n))
        s.sendall(data)
        got = recv_exact(s, n)
        assert got == data
        s.close()
    elif mode == "noise":
        d, udp_port = sys.argv[2], int(sys.argv[3])
        with open(os.path.join(d, "file.txt"), "wb") as f:
            f.write(b"GET /file HTTP/1.1\r\n\r\n" * 10)
        with open(os.path.join(d, "file.txt"), "rb") as f:
            f.read()
        r, w = os.pipe()
        os.write(w, b"GET /pipe HTTP/1.1\r\n\r\n")
        os.read(r, 100)
        a, b = socket.socketpair()
        a.sendall(b"GET /unix HTTP/1.1\r\n\r\n")
        b.recv(100)
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.bind(("127.0.0.1", 0))
        u.sendto(b"GET /udp HTTP/1.1\r\n\r\n", ("127.0.0.1", udp_port))
        print("done", flush=True)
    elif mode == "pidreuse":
        host, port = sys.argv[2], sys.argv[3]

        def first():
            # Written through a data syscall of a traced process at fd 50: the kernel notes
            # "(pid, 50) is not a TCP socket", and the fd is closed by exit, not by close().
            f = os.open("/dev/null", os.O_WRONLY)
            os.dup2(f, PID_REUSE_FD)
            for _ in range(3):
                os.write(PID_REUSE_FD, b"GET /not-tcp HTTP/1.1\r\n\r\n")

        s = connect(host, port)
        os.dup2(s.fileno(), PID_REUSE_FD)
        s.close()
        r, w = os.pipe()

        def second():
            # The same pid and fd number, now a TCP connection sonde never saw being opened.
            os.write(PID_REUSE_FD, b"GET /pid-reuse HTTP/1.1\r\nHost: test\r\n\r\n")
            os.write(w, os.read(PID_REUSE_FD, 65536))

        # Another process may take the pid between the two children: start again elsewhere
        # (a child that did not get its pid exits without touching fd 50).
        for _ in range(50):
            pid = free_pid()
            if fork_with_pid(pid, first) != 0:
                continue
            code = fork_with_pid(pid, second)
            if code is None:
                continue
            assert code == 0
            break
        else:
            sys.exit("could not fork two processes with one pid")
        os.close(w)
        resp = os.read(r, 65536)
        print(f"pid {pid}", flush=True)
        print("recv " + resp.hex(), flush=True)
    else:
        sys.exit("unknown mode " + mode)


if __name__ == "__main__":
    main()
