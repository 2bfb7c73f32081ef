"""A traced process that maps hostile ELF files executable, where sonde's TLS probes look
(/proc/<pid>/maps), and serves and sends HTTP requests meanwhile.

Usage: hostile_elf.py DIR REQUESTS
Writes into DIR:
  many-sections.so  an ELF header declaring 2^32 section headers (extended numbering)
  dwarf-bomb        a Go binary in miniature (crypto/tls.(*Conn).Write/Read, .go.buildinfo)
                    whose zlib-compressed .debug_info declares 4 GiB and inflates to 1 GiB
  truncated.so      the system libssl cut in half (its section headers are gone)
maps each with PROT_READ|PROT_EXEC, prints "ready", then makes REQUESTS HTTP requests to its own
server, 10 a second (each TCP connection lets sonde scan the process's maps again), and prints
"done N" with the requests answered.
"""
import http.client
import http.server
import mmap
import os
import shutil
import struct
import sys
import threading
import time
import zlib

SHT_PROGBITS, SHT_SYMTAB, SHT_STRTAB = 1, 2, 3
SHF_ALLOC, SHF_EXECINSTR, SHF_COMPRESSED = 0x2, 0x4, 0x800
TEXT_ADDR = 0x401000


def elf(sections):
    """A 64-bit little-endian executable: sections = [(name, type, flags, addr, data, link,
    entsize)], after the null section, then .shstrtab."""
    shstrtab = b"\0"
    names = []
    for name in [s[0] for s in sections] + [".shstrtab"]:
        names.append(len(shstrtab))
        shstrtab += name.encode() + b"\0"
    out = bytearray(64)
    offsets = []
    for s in sections:
        out += b"\0" * (-len(out) % 16)
        offsets.append(len(out))
        out += s[4]
    shstr_off = len(out)
    out += shstrtab
    out += b"\0" * (-len(out) % 8)
    shoff = len(out)
    out += b"\0" * 64
    for i, (name, kind, flags, addr, data, link, entsize) in enumerate(sections):
        out += struct.pack("<IIQQQQIIQQ", names[i], kind, flags, addr, offsets[i], len(data), link, 0, 16, entsize)
    out += struct.pack("<IIQQQQIIQQ", names[-1], SHT_STRTAB, 0, 0, shstr_off, len(shstrtab), 0, 0, 1, 0)
    shnum = len(sections) + 2
    out[0:64] = struct.pack(
        "<4sBBBB8xHHIQQQIHHHHHH", b"\x7fELF", 2, 1, 1, 0, 2, 62, 1, 0, 0, shoff, 0, 64, 0, 0, 64, shnum, shnum - 1
    )
    return out


def go_binary_with_dwarf_bomb():
    strtab = b"\0"
    symtab = b"\0" * 24
    for i, name in enumerate([b"crypto/tls.(*Conn).Write", b"crypto/tls.(*Conn).Read"]):
        symtab += struct.pack("<IBBHQQ", len(strtab), 0x12, 0, 1, TEXT_ADDR + 2 * i, 2)
        strtab += name + b"\0"
    z = zlib.compressobj(9)
    chunk = b"\0" * (1 << 20)
    bomb = b"".join(z.compress(chunk) for _ in range(1024)) + z.flush()
    debug_info = struct.pack("<IIQQ", 1, 0, 4 << 30, 1) + bomb
    return elf([
        (".text", SHT_PROGBITS, SHF_ALLOC | SHF_EXECINSTR, TEXT_ADDR, b"\x90\xc3\x90\xc3", 0, 0),
        (".go.buildinfo", SHT_PROGBITS, 0, 0, b"\xff Go buildinf:\x08\x02" + b"\0" * 14 + b"\x08go1.21.13", 0, 0),
        (".symtab", SHT_SYMTAB, 0, 0, symtab, 4, 24),
        (".strtab", SHT_STRTAB, 0, 0, strtab, 0, 0),
        (".debug_info", SHT_PROGBITS, SHF_COMPRESSED, 0, debug_info, 0, 0),
    ])


def many_sections():
    out = elf([(".data", SHT_PROGBITS, 0, 0, b"\1" * 64, 0, 0)])
    shoff = struct.unpack_from("<Q", out, 0x28)[0]
    struct.pack_into("<H", out, 0x3C, 0)  # e_shnum 0: the count is section 0's sh_size
    struct.pack_into("<Q", out, shoff + 32, 1 << 32)
    return out


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = b"ok\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def main():
    d, requests = sys.argv[1], int(sys.argv[2])
    os.makedirs(d, exist_ok=True)
    files = {
        "many-sections.so": many_sections(),
        "dwarf-bomb": go_binary_with_dwarf_bomb(),
    }
    for name, data in files.items():
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
    libssl = "/usr/lib/x86_64-linux-gnu/libssl.so.3"
    truncated = os.path.join(d, "truncated.so")
    shutil.copyfile(libssl, truncated)
    os.truncate(truncated, os.path.getsize(libssl) // 2)
    maps = []
    for name in list(files) + ["truncated.so"]:
        fd = os.open(os.path.join(d, name), os.O_RDONLY)
        maps.append(mmap.mmap(fd, 0, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_EXEC))
        os.close(fd)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    print("ready", flush=True)
    answered = 0
    for _ in range(requests):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        c.request("GET", "/hostile")
        if c.getresponse().read() == b"ok\n":
            answered += 1
        c.close()
        time.sleep(0.1)
    print("done", answered, flush=True)
    server.shutdown()


if __name__ == "__main__":
    main()
