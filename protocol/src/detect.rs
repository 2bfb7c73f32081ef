//! Which protocol does one direction of a connection speak?
//!
//! Detection only looks at the first bytes of a direction and never consumes them: the parser
//! that wins is then fed the same bytes from the start (deepflow's `check_payload` before
//! `parse_payload`). It is deliberately strict, a known method token rather than any token, so
//! that binary protocols are not mistaken for HTTP and so the HTTP/1 parser can use the same
//! rule to find the next message after it lost its place.
//!
//! ```text
//! request   METHOD SP ...                       METHOD from METHODS, e.g. "GET "
//! response  "HTTP/1." ("0" | "1") SP 3DIGIT ...  e.g. "HTTP/1.1 200"
//! h2        "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"   the 24-byte client connection preface
//! databases PostgreSQL startup, MySQL greeting, Redis `*N\r\n$` (see `db.rs`; the port is
//!           only a hint: `db::port_hint`)
//! ```

/// What the first bytes of one direction of a connection look like.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Detected {
    /// An HTTP/1.x request: a known method token followed by SP.
    Http1Request,
    /// An HTTP/1.x response: `HTTP/1.0 ` or `HTTP/1.1 ` and a 3-digit status code.
    Http1Response,
    /// The HTTP/2 client connection preface ([`HTTP2_PREFACE`]), complete.
    Http2Preface,
    /// A PostgreSQL startup, SSL, GSSAPI or cancel request packet (client's first bytes).
    PostgresStartup,
    /// A MySQL/MariaDB protocol-10 greeting (server's first bytes).
    MysqlGreeting,
    /// A Redis command array, `*N\r\n$` (client's first bytes).
    RedisCommand,
    /// The bytes so far are a proper prefix of one of the above: ask again with more bytes.
    NeedMore,
    /// None of the above.
    Unknown,
}

/// The HTTP/2 client connection preface (RFC 9113 §3.4).
pub const HTTP2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Request methods recognised at the start of a request: RFC 9110, PATCH, the WebDAV family
/// (RFC 4918, 3253, 3744, 4791, 5323, 5842), QUERY and the cache `PURGE` of nginx and Varnish.
pub const METHODS: &[&str] = &[
    "GET",
    "HEAD",
    "POST",
    "PUT",
    "DELETE",
    "CONNECT",
    "OPTIONS",
    "TRACE",
    "PATCH",
    "QUERY",
    "PURGE",
    "PROPFIND",
    "PROPPATCH",
    "MKCOL",
    "COPY",
    "MOVE",
    "LOCK",
    "UNLOCK",
    "SEARCH",
    "REPORT",
    "MKCALENDAR",
    "MKACTIVITY",
    "MKWORKSPACE",
    "CHECKOUT",
    "CHECKIN",
    "UNCHECKOUT",
    "VERSION-CONTROL",
    "BASELINE-CONTROL",
    "MERGE",
    "UPDATE",
    "LABEL",
    "ACL",
    "BIND",
    "UNBIND",
    "REBIND",
    "ORDERPATCH",
];

/// Classifies the first bytes of one direction of a connection.
///
/// `bytes` must start at the first byte of the direction (or of a message). An empty slice
/// gives [`Detected::NeedMore`].
pub fn detect(bytes: &[u8]) -> Detected {
    let mut need_more = false;
    for (prefix, detected) in [
        (request_start(bytes), Detected::Http1Request),
        (response_start(bytes), Detected::Http1Response),
        (literal(bytes, HTTP2_PREFACE), Detected::Http2Preface),
        (postgres_startup(bytes), Detected::PostgresStartup),
        (mysql_greeting(bytes), Detected::MysqlGreeting),
        (redis_command(bytes), Detected::RedisCommand),
    ] {
        match prefix {
            Prefix::Match(_) => return detected,
            Prefix::Partial => need_more = true,
            Prefix::Mismatch(_) => {}
        }
    }
    if need_more {
        Detected::NeedMore
    } else {
        Detected::Unknown
    }
}

/// How `bytes` compare with the start of a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Prefix {
    /// The first `n` bytes are a complete message start.
    Match(usize),
    /// All of `bytes` is a proper prefix of a message start.
    Partial,
    /// `bytes[i]` is the first byte that cannot continue any message start.
    Mismatch(usize),
}

/// Whether `b` is the first byte of a method in [`METHODS`].
pub(crate) fn is_method_initial(b: u8) -> bool {
    METHOD_INITIALS[usize::from(b)]
}

const METHOD_INITIALS: [bool; 256] = {
    let mut table = [false; 256];
    let mut i = 0;
    while i < METHODS.len() {
        table[METHODS[i].as_bytes()[0] as usize] = true;
        i += 1;
    }
    table
};

/// `METHOD SP` with a method from [`METHODS`].
pub(crate) fn request_start(bytes: &[u8]) -> Prefix {
    let mut furthest = 0;
    for method in METHODS {
        match literal_parts(bytes, &[method.as_bytes(), b" "]) {
            Prefix::Match(n) => return Prefix::Match(n),
            Prefix::Partial => return Prefix::Partial,
            Prefix::Mismatch(i) => furthest = furthest.max(i),
        }
    }
    Prefix::Mismatch(furthest)
}

/// `HTTP/1.0 ` or `HTTP/1.1 `, then three digits.
pub(crate) fn response_start(bytes: &[u8]) -> Prefix {
    const LEN: usize = 12;
    for i in 0..LEN {
        let Some(&b) = bytes.get(i) else {
            return Prefix::Partial;
        };
        let ok = match i {
            0..=6 => b == b"HTTP/1."[i],
            7 => b == b'0' || b == b'1',
            8 => b == b' ',
            _ => b.is_ascii_digit(),
        };
        if !ok {
            return Prefix::Mismatch(i);
        }
    }
    Prefix::Match(LEN)
}

fn literal(bytes: &[u8], lit: &[u8]) -> Prefix {
    literal_parts(bytes, &[lit])
}

/// Compares `bytes` with the concatenation of `parts`.
fn literal_parts(bytes: &[u8], parts: &[&[u8]]) -> Prefix {
    let mut i = 0;
    for &expected in parts.iter().flat_map(|p| p.iter()) {
        match bytes.get(i) {
            None => return Prefix::Partial,
            Some(&b) if b != expected => return Prefix::Mismatch(i),
            Some(_) => i += 1,
        }
    }
    Prefix::Match(i)
}

/// A PostgreSQL startup packet (client's first bytes): a length in 8..=10000 and the v3
/// protocol code, or the SSLRequest, GSSENCRequest or CancelRequest code.
///
/// ```text
/// 00 00 00 4f  00 03 00 00   StartupMessage v3.0 (79 bytes)
/// 00 00 00 08  04 d2 16 2f   SSLRequest          (04d2 162f = 80877103)
/// ```
pub(crate) fn postgres_startup(b: &[u8]) -> Prefix {
    let codes: [[u8; 4]; 4] = [
        [0, 3, 0, 0],
        [0x04, 0xd2, 0x16, 0x2e],
        [0x04, 0xd2, 0x16, 0x2f],
        [0x04, 0xd2, 0x16, 0x30],
    ];
    for i in 0..8 {
        let Some(&x) = b.get(i) else {
            return Prefix::Partial;
        };
        let ok = match i {
            0 | 1 => x == 0,
            2 => x <= 0x27,
            3 => b[2] > 0 || x >= 8,
            _ => codes.iter().any(|c| c[..=i - 4] == b[4..=i]),
        };
        if !ok {
            return Prefix::Mismatch(i);
        }
    }
    let len = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    if len > 10_000 {
        return Prefix::Mismatch(2);
    }
    Prefix::Match(8)
}

/// A MySQL/MariaDB server greeting (server's first bytes): sequence 0, protocol 10, and a
/// version string starting with a digit.
///
/// ```text
/// 64 00 00  00  0a  35 2e 35 2e 35 2d ...   length 100, seq 0, protocol 10, "5.5.5-..."
/// ```
pub(crate) fn mysql_greeting(b: &[u8]) -> Prefix {
    for i in 0..6 {
        let Some(&x) = b.get(i) else {
            return Prefix::Partial;
        };
        let ok = match i {
            0 | 1 => true,
            2 => x == 0 && (b[0] > 0 || b[1] > 0),
            3 => x == 0,
            4 => x == 10,
            _ => x.is_ascii_digit(),
        };
        if !ok {
            return Prefix::Mismatch(i);
        }
    }
    Prefix::Match(6)
}

/// A Redis command as an array of bulk strings: `*` digits CRLF `$`.
pub(crate) fn redis_command(b: &[u8]) -> Prefix {
    let mut i = 0;
    let mut digits = 0;
    loop {
        let Some(&x) = b.get(i) else {
            return Prefix::Partial;
        };
        let ok = match i {
            0 => x == b'*',
            _ if digits < 6 && x.is_ascii_digit() && (digits > 0 || x != b'0') => {
                digits += 1;
                true
            }
            _ if digits == 0 => false,
            _ => {
                let tail = b"\r\n$";
                let k = i - 1 - digits;
                if tail[k] != x {
                    return Prefix::Mismatch(i);
                }
                if k == 2 {
                    return Prefix::Match(i + 1);
                }
                true
            }
        };
        if !ok {
            return Prefix::Mismatch(i);
        }
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_complete_starts() {
        let cases: &[(&[u8], Detected)] = &[
            (b"GET / HTTP/1.1\r\n", Detected::Http1Request),
            (b"POST ", Detected::Http1Request),
            (b"PROPFIND /dav HTTP/1.1\r\n", Detected::Http1Request),
            (b"VERSION-CONTROL /x HTTP/1.1", Detected::Http1Request),
            (b"HTTP/1.1 200 OK\r\n", Detected::Http1Response),
            (b"HTTP/1.0 404", Detected::Http1Response),
            (HTTP2_PREFACE, Detected::Http2Preface),
            (
                b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\x12\x04",
                Detected::Http2Preface,
            ),
            (b"", Detected::NeedMore),
            (b"G", Detected::NeedMore),
            (b"GET", Detected::NeedMore),
            (b"P", Detected::NeedMore),
            (b"PRI * HTTP/2", Detected::NeedMore),
            (b"HTTP/1.1 20", Detected::NeedMore),
            (b"GETX / HTTP/1.1", Detected::Unknown),
            (b"get / HTTP/1.1", Detected::Unknown),
            (b"HTTP/2 200", Detected::Unknown),
            (b"HTTP/1.1 2x0", Detected::Unknown),
            (b"HTTP/1.2 200", Detected::Unknown),
            (b"FOO / HTTP/1.1", Detected::Unknown),
            (b"\x16\x03\x01\x02\x00", Detected::Unknown),
            (b"\0\0\x12\x04\0\0\0\0\0", Detected::Unknown),
            (b"PRI / HTTP/1.1", Detected::Unknown),
        ];
        for (bytes, want) in cases {
            assert_eq!(detect(bytes), *want, "{:?}", String::from_utf8_lossy(bytes));
        }
    }

    #[test]
    fn every_proper_prefix_needs_more() {
        let starts: &[(&[u8], Detected)] = &[
            (b"OPTIONS ", Detected::Http1Request),
            (b"DELETE ", Detected::Http1Request),
            (b"HTTP/1.0 304", Detected::Http1Response),
            (HTTP2_PREFACE, Detected::Http2Preface),
        ];
        for (full, want) in starts {
            for n in 0..full.len() {
                assert_eq!(detect(&full[..n]), Detected::NeedMore, "{n} of {full:?}");
            }
            assert_eq!(detect(full), *want);
        }
    }

    #[test]
    fn method_initials_match_the_list() {
        for b in 0..=255u8 {
            let want = METHODS.iter().any(|m| m.as_bytes()[0] == b);
            assert_eq!(is_method_initial(b), want, "{b}");
        }
        assert!(is_method_initial(b'G') && is_method_initial(b'V') && !is_method_initial(b'g'));
    }

    #[test]
    fn mismatch_points_at_the_first_impossible_byte() {
        assert_eq!(request_start(b"GEX"), Prefix::Mismatch(2));
        assert_eq!(request_start(b"PROPFINX"), Prefix::Mismatch(7));
        assert_eq!(request_start(b"\n"), Prefix::Mismatch(0));
        assert_eq!(request_start(b"GET /"), Prefix::Match(4));
        assert_eq!(response_start(b"HTTP/1.1 2a"), Prefix::Mismatch(10));
        assert_eq!(response_start(b"HTTP/1.1 200 OK"), Prefix::Match(12));
    }
}
