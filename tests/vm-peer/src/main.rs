//! `sonde-vm-peer`: the traced peers of the kernel matrix (`cargo xtask vm-test`).
//!
//! The VMs boot a busybox initramfs with no libc, no Python and no curl, so the peers are one
//! static binary of the standard library alone: an HTTP/1.1 and h2c (prior knowledge) server,
//! and a client for each. The server logs the `traceparent` it received, so the matrix checks
//! the injection on the wire as well as in the spans.
//!
//! ```text
//! sonde-vm-peer serve PORTFILE          listen on 127.0.0.1:0, write the port, serve forever
//! sonde-vm-peer get ADDR PATH           one HTTP/1.1 GET; exit 0 on 200
//! sonde-vm-peer h2get ADDR PATH         one h2c GET (prior knowledge); exit 0 on :status 200
//! sonde-vm-peer wait-ready ADDR SECS PID   poll GET /readyz until it says 200, while PID lives
//! sonde-vm-peer wait-file PATH SECS     wait until PATH holds a whole line and print it
//! sonde-vm-peer wait-lines PATH TEXT N SECS   wait until N lines of PATH contain TEXT
//! ```

use std::{
    io::{self, BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    process::ExitCode,
    thread,
    time::{Duration, Instant},
};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = match args.as_slice() {
        ["serve", portfile] => serve(portfile),
        ["get", addr, path] => h1_get(addr, path).and_then(|s| expect_200("GET", s)),
        ["h2get", addr, path] => h2_get(addr, path).and_then(|s| expect_200("h2 GET", s)),
        ["wait-ready", addr, secs, pid] => wait_ready(addr, secs, pid),
        ["wait-file", path, secs] => wait_file(path, secs),
        ["wait-lines", path, text, n, secs] => wait_lines(path, text, n, secs),
        _ => Err(io::Error::other(
            "usage: sonde-vm-peer serve PORTFILE | get ADDR PATH | h2get ADDR PATH | \
             wait-ready ADDR SECS PID | wait-file PATH SECS | wait-lines PATH TEXT N SECS",
        )),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sonde-vm-peer: {e}");
            ExitCode::FAILURE
        }
    }
}

fn expect_200(what: &str, status: u16) -> io::Result<()> {
    println!("{what} status {status}");
    if status == 200 {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "{what}: status {status}, not 200"
        )))
    }
}

fn secs(s: &str) -> io::Result<Duration> {
    s.parse()
        .map(Duration::from_secs)
        .map_err(|_| io::Error::other(format!("not a number of seconds: {s:?}")))
}

/// Whether `pid` runs (exists and is not a zombie).
fn alive(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(") ")
            .is_some_and(|(_, r)| !r.starts_with('Z'))
    })
}

fn wait_ready(addr: &str, s: &str, pid: &str) -> io::Result<()> {
    let deadline = Instant::now() + secs(s)?;
    loop {
        match h1_get(addr, "/readyz") {
            Ok(200) => return Ok(()),
            _ if !alive(pid) => {
                return Err(io::Error::other(format!(
                    "process {pid} ended before http://{addr}/readyz said 200"
                )));
            }
            r if Instant::now() > deadline => {
                return Err(io::Error::other(format!(
                    "http://{addr}/readyz did not say 200 in {s} s (last: {r:?})"
                )));
            }
            _ => thread::sleep(Duration::from_millis(100)),
        }
    }
}

fn wait_file(path: &str, s: &str) -> io::Result<()> {
    let deadline = Instant::now() + secs(s)?;
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && text.ends_with('\n')
        {
            print!("{text}");
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(io::Error::other(format!("{path} stayed empty for {s} s")));
        }
        thread::sleep(Duration::from_millis(50));
    }
}

fn wait_lines(path: &str, text: &str, n: &str, s: &str) -> io::Result<()> {
    let n: usize = n
        .parse()
        .map_err(|_| io::Error::other(format!("not a count: {n:?}")))?;
    let deadline = Instant::now() + secs(s)?;
    loop {
        let text_now = std::fs::read_to_string(path).unwrap_or_default();
        let got = text_now.lines().filter(|l| l.contains(text)).count();
        if got >= n {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(io::Error::other(format!(
                "{path}: {got} lines contain {text:?} after {s} s, wanted {n}"
            )));
        }
        thread::sleep(Duration::from_millis(100));
    }
}

// ---------------------------------------------------------------------------------------------
// Server

fn serve(portfile: &str) -> io::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    std::fs::write(portfile, format!("{port}\n"))?;
    for conn in listener.incoming() {
        let conn = conn?;
        thread::spawn(move || {
            if let Err(e) = serve_conn(conn) {
                log(&format!("error {e}"));
            }
        });
    }
    Ok(())
}

/// One line per request on stdout, flushed at once (the matrix reads it after the run).
fn log(line: &str) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn serve_conn(mut conn: TcpStream) -> io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    // Enough bytes to tell the two protocols apart: the preface, or an HTTP/1 request head.
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while head.len() < PREFACE.len() && !contains(&head, b"\r\n\r\n") {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    if head.starts_with(PREFACE) {
        h2_serve(conn, head.split_off(PREFACE.len()))
    } else {
        h1_serve(conn, head)
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn h1_serve(mut conn: TcpStream, mut head: Vec<u8>) -> io::Result<()> {
    let mut buf = [0u8; 4096];
    while !contains(&head, b"\r\n\r\n") {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            return Err(io::Error::other("connection closed inside a request head"));
        }
        head.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&head);
    let mut lines = text.split("\r\n");
    let path = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .unwrap_or("?")
        .to_owned();
    let tp = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case("traceparent"))
        .map_or("-".to_owned(), |(_, v)| v.trim().to_owned());
    log(&format!("h1 path={path} traceparent={tp}"));
    conn.write_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 6\r\n\
          Connection: close\r\n\r\nhello\n",
    )
}

// HTTP/2 frames, as far as one GET needs them.
//
// ```text
// | length (24) | type (8) | flags (8) | R | stream id (31) | payload ... |
// ```
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

fn read_frame(r: &mut impl Read) -> io::Result<Option<Frame>> {
    let mut h = [0u8; 9];
    match r.read_exact(&mut h) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = (h[0] as usize) << 16 | (h[1] as usize) << 8 | h[2] as usize;
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload)?;
    Ok(Some(Frame {
        kind: h[3],
        flags: h[4],
        stream: u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff,
        payload,
    }))
}

fn h2_serve(conn: TcpStream, rest: Vec<u8>) -> io::Result<()> {
    // Reads and writes go through one fd: sonde tracks a connection per (process, fd), so a
    // `try_clone` (a dup) would split the exchange into two half-connections.
    let mut conn = &conn;
    conn.write_all(&frame(SETTINGS, 0, 0, &[]))?;
    let mut r = io::Cursor::new(rest).chain(conn);
    while let Some(f) = read_frame(&mut r)? {
        match f.kind {
            SETTINGS if f.flags & ACK == 0 => conn.write_all(&frame(SETTINGS, ACK, 0, &[]))?,
            PING if f.flags & ACK == 0 => conn.write_all(&frame(PING, ACK, 0, &f.payload))?,
            HEADERS => {
                if f.flags & END_HEADERS == 0 {
                    return Err(io::Error::other("CONTINUATION frames are not supported"));
                }
                let fields = hpack_decode(&f.payload)?;
                let get = |name: &str| {
                    fields
                        .iter()
                        .find(|(k, _)| k == name)
                        .map_or("-".to_owned(), |(_, v)| v.clone())
                };
                log(&format!(
                    "h2 path={} traceparent={}",
                    get(":path"),
                    get("traceparent")
                ));
                // :status 200 is entry 8 of the static table.
                let mut out = frame(HEADERS, END_HEADERS, f.stream, &[0x88]);
                out.extend(frame(DATA, END_STREAM, f.stream, b"hello\n"));
                conn.write_all(&out)?;
            }
            GOAWAY => return Ok(()),
            _ => {}
        }
    }
    Ok(())
}

/// Names and values of the first static table entries (RFC 7541, appendix A): the ones a GET
/// uses. Other indices decode to a placeholder name.
const STATIC: &[(&str, &str)] = &[
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
];

fn static_entry(i: usize) -> (String, String) {
    match STATIC.get(i.wrapping_sub(1)) {
        Some((n, v)) => ((*n).to_owned(), (*v).to_owned()),
        None => (format!("static-or-dynamic-{i}"), String::new()),
    }
}

/// An HPACK integer with an `n`-bit prefix.
fn hpack_int(b: &[u8], pos: &mut usize, n: u8) -> io::Result<usize> {
    let bad = || io::Error::other("truncated HPACK integer");
    let max = (1usize << n) - 1;
    let mut v = (*b.get(*pos).ok_or_else(bad)? as usize) & max;
    *pos += 1;
    if v < max {
        return Ok(v);
    }
    let mut shift = 0;
    loop {
        let byte = *b.get(*pos).ok_or_else(bad)?;
        *pos += 1;
        v += ((byte & 0x7f) as usize) << shift;
        shift += 7;
        if byte & 0x80 == 0 || shift > 28 {
            return Ok(v);
        }
    }
}

fn hpack_str(b: &[u8], pos: &mut usize) -> io::Result<String> {
    let huffman = b.get(*pos).is_some_and(|x| x & 0x80 != 0);
    let len = hpack_int(b, pos, 7)?;
    let s = b
        .get(*pos..*pos + len)
        .ok_or_else(|| io::Error::other("truncated HPACK string"))?;
    *pos += len;
    Ok(if huffman {
        "<huffman>".to_owned()
    } else {
        String::from_utf8_lossy(s).into_owned()
    })
}

/// Decodes a header block (indexed fields and literals; Huffman strings are not decoded and
/// the dynamic table is not kept: the client and the injected field use neither).
fn hpack_decode(b: &[u8]) -> io::Result<Vec<(String, String)>> {
    let mut fields = Vec::new();
    let mut pos = 0;
    while pos < b.len() {
        let first = b[pos];
        if first & 0x80 != 0 {
            fields.push(static_entry(hpack_int(b, &mut pos, 7)?));
            continue;
        }
        if first & 0xe0 == 0x20 {
            hpack_int(b, &mut pos, 5)?; // dynamic table size update
            continue;
        }
        let prefix = if first & 0x40 != 0 { 6 } else { 4 };
        let idx = hpack_int(b, &mut pos, prefix)?;
        let name = if idx == 0 {
            hpack_str(b, &mut pos)?
        } else {
            static_entry(idx).0
        };
        let value = hpack_str(b, &mut pos)?;
        fields.push((name, value));
    }
    Ok(fields)
}

// ---------------------------------------------------------------------------------------------
// Clients

/// One GET in one write, `Connection: close`; returns the status code.
fn h1_get(addr: &str, path: &str) -> io::Result<u16> {
    let mut conn = TcpStream::connect(addr)?;
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    conn.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )?;
    let mut status = String::new();
    let mut r = BufReader::new(conn);
    r.read_line(&mut status)?;
    let mut rest = Vec::new();
    r.read_to_end(&mut rest)?;
    status
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other(format!("bad status line {status:?}")))
}

/// The preface and SETTINGS in the first write (as real clients do, and as the kernel's h2
/// follower expects), one HEADERS frame opening stream 1 in the second; returns `:status`.
fn h2_get(addr: &str, path: &str) -> io::Result<u16> {
    let mut conn = TcpStream::connect(addr)?;
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut first = PREFACE.to_vec();
    first.extend(frame(SETTINGS, 0, 0, &[]));
    conn.write_all(&first)?;
    // :method GET, :scheme http (static 2 and 6), then :path and :authority as literals
    // without indexing of static names 4 and 1.
    let mut block = vec![0x82, 0x86];
    for (idx, value) in [(4u8, path), (1u8, addr)] {
        block.push(idx);
        block.push(value.len() as u8);
        block.extend_from_slice(value.as_bytes());
    }
    conn.write_all(&frame(HEADERS, END_HEADERS | END_STREAM, 1, &block))?;
    let mut status = None;
    // One fd for reads and writes, as in `h2_serve`.
    while let Some(f) = read_frame(&mut &conn)? {
        match f.kind {
            SETTINGS if f.flags & ACK == 0 => conn.write_all(&frame(SETTINGS, ACK, 0, &[]))?,
            HEADERS if f.stream == 1 => {
                let fields = hpack_decode(&f.payload)?;
                status = fields
                    .iter()
                    .find(|(k, _)| k == ":status")
                    .and_then(|(_, v)| v.parse().ok());
                if f.flags & END_STREAM != 0 {
                    break;
                }
            }
            DATA if f.stream == 1 && f.flags & END_STREAM != 0 => break,
            GOAWAY => break,
            _ => {}
        }
    }
    // A polite end: GOAWAY with last stream 0 and NO_ERROR.
    let _ = conn.write_all(&frame(GOAWAY, 0, 0, &[0; 8]));
    status.ok_or_else(|| io::Error::other("the response had no :status"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_clients_block_and_an_injected_field() {
        let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let mut block = vec![0x82, 0x86, 0x04, 3, b'/', b'h', b'2'];
        block.extend([0x00, 11]);
        block.extend(b"traceparent");
        block.push(tp.len() as u8);
        block.extend(tp.as_bytes());
        let f = hpack_decode(&block).unwrap();
        assert_eq!(
            f,
            vec![
                (":method".into(), "GET".into()),
                (":scheme".into(), "http".into()),
                (":path".into(), "/h2".into()),
                ("traceparent".into(), tp.into()),
            ]
        );
    }

    #[test]
    fn multi_byte_integers_and_frames() {
        let mut pos = 0;
        // 1337 with a 5-bit prefix (RFC 7541 C.1.2).
        assert_eq!(hpack_int(&[0x1f, 0x9a, 0x0a], &mut pos, 5).unwrap(), 1337);
        assert_eq!(pos, 3);
        let f = frame(HEADERS, END_HEADERS, 3, &[0x88]);
        let got = read_frame(&mut io::Cursor::new(f)).unwrap().unwrap();
        assert_eq!(
            (got.kind, got.flags, got.stream, got.payload),
            (HEADERS, END_HEADERS, 3, vec![0x88])
        );
    }

    #[test]
    fn serves_both_protocols_on_one_port() {
        let dir = std::env::temp_dir().join(format!("sonde-vm-peer-{}", std::process::id()));
        let portfile = dir.to_string_lossy().into_owned();
        thread::spawn({
            let p = portfile.clone();
            move || serve(&p)
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        let port = loop {
            if let Ok(p) = std::fs::read_to_string(&portfile)
                && let Ok(p) = p.trim().parse::<u16>()
            {
                break p;
            }
            assert!(Instant::now() < deadline, "the server wrote no port");
            thread::sleep(Duration::from_millis(20));
        };
        let addr = format!("127.0.0.1:{port}");
        assert_eq!(h1_get(&addr, "/one").unwrap(), 200);
        assert_eq!(h2_get(&addr, "/two").unwrap(), 200);
        let _ = std::fs::remove_file(&portfile);
    }
}
