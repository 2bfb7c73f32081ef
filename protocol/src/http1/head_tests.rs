//! Unit tests of the HTTP/1 head parser.

use super::*;

const REQ: &[u8] =
    b"GET /a?b=1 HTTP/1.1\r\nHost: example.com\r\nAccept:  */*  \r\nX-Empty:\r\n\r\n";
const RESP: &[u8] = b"HTTP/1.0 404 Not Found\r\nContent-Length: 3\r\n\r\n";

fn scan_all(side: Side, data: &[u8]) -> Result<Scan, ScanError> {
    HeadScanner::new(side, false).scan(data, 100, 64 * 1024)
}

fn request(data: &[u8]) -> RequestHead {
    match parse(Side::Request, data) {
        Some(Head::Request(r)) => r,
        other => panic!("not a request: {other:?}"),
    }
}

#[test]
fn parses_a_request_head() {
    assert_eq!(scan_all(Side::Request, REQ), Ok(Scan::Complete(REQ.len())));
    let r = request(REQ);
    assert_eq!(r.method, "GET");
    assert_eq!(r.target, "/a?b=1");
    assert_eq!(r.minor_version, 1);
    let fields: Vec<(&str, &[u8])> = r.headers.iter().collect();
    assert_eq!(
        fields,
        [
            ("Host", &b"example.com"[..]),
            ("Accept", b"*/*"),
            ("X-Empty", b""),
        ]
    );
}

#[test]
fn parses_a_response_head() {
    assert_eq!(
        scan_all(Side::Response, RESP),
        Ok(Scan::Complete(RESP.len()))
    );
    let Some(Head::Response(r)) = parse(Side::Response, RESP) else {
        panic!("not a response")
    };
    assert_eq!((r.minor_version, r.status), (0, 404));
    assert_eq!(r.reason, "Not Found");
    assert_eq!(r.headers.get_str("content-length"), Some("3"));
}

#[test]
fn status_line_reason_is_optional() {
    for (line, reason) in [
        (&b"HTTP/1.1 200\r\n\r\n"[..], ""),
        (b"HTTP/1.1 200 \r\n\r\n", ""),
        (b"HTTP/1.1 599 Very  Odd\r\n\r\n", "Very  Odd"),
    ] {
        assert_eq!(
            scan_all(Side::Response, line),
            Ok(Scan::Complete(line.len()))
        );
        let Some(Head::Response(r)) = parse(Side::Response, line) else {
            panic!("{line:?}")
        };
        assert_eq!(r.reason, reason);
    }
}

#[test]
fn every_prefix_needs_more_then_completes_the_same() {
    for (side, full) in [(Side::Request, REQ), (Side::Response, RESP)] {
        // One scanner fed a growing buffer, as the connection does.
        let mut resumed = HeadScanner::new(side, false);
        for n in 0..full.len() {
            let prefix = &full[..n];
            assert_eq!(
                scan_all(side, prefix),
                Ok(Scan::NeedMore),
                "fresh, {n} bytes"
            );
            assert_eq!(
                resumed.scan(prefix, 100, 1 << 16),
                Ok(Scan::NeedMore),
                "resumed, {n} bytes"
            );
        }
        assert_eq!(
            resumed.scan(full, 100, 1 << 16),
            Ok(Scan::Complete(full.len()))
        );
        // Bytes after the head are not part of it.
        let mut more = full.to_vec();
        more.extend_from_slice(b"GET / HTTP/1.1\r\n");
        assert_eq!(scan_all(side, &more), Ok(Scan::Complete(full.len())));
    }
}

#[test]
fn bare_lf_line_endings_are_accepted() {
    let head = b"POST /x HTTP/1.0\nContent-Length: 2\n\n";
    assert_eq!(
        scan_all(Side::Request, head),
        Ok(Scan::Complete(head.len()))
    );
    let r = request(head);
    assert_eq!(r.headers.get("content-length"), Some(&b"2"[..]));
    assert_eq!(r.minor_version, 0);
}

#[test]
fn obs_fold_is_replaced_by_spaces() {
    let head = b"GET / HTTP/1.1\r\nX-Long: one\r\n  two\r\n\tthree \r\nX-Next: n\r\n\r\n";
    assert_eq!(
        scan_all(Side::Request, head),
        Ok(Scan::Complete(head.len()))
    );
    let r = request(head);
    assert_eq!(
        r.headers.get_str("x-long"),
        Some("one    two  \tthree"),
        "CRLF and the indentation become spaces"
    );
    assert_eq!(r.headers.get_str("x-next"), Some("n"));
    let empty_first = b"GET / HTTP/1.1\r\nX:\r\n z\r\n\r\n";
    assert_eq!(request(empty_first).headers.get_str("x"), Some("z"));
}

fn err(side: Side, data: &[u8]) -> (ErrorKind, usize) {
    match scan_all(side, data) {
        Err(e) => (e.kind, e.resume),
        Ok(s) => panic!("{:?} scanned as {s:?}", String::from_utf8_lossy(data)),
    }
}

#[test]
fn malformed_heads_are_rejected_with_resume_points() {
    use ErrorKind::*;
    let req = Side::Request;
    let cases: &[(Side, &[u8], ErrorKind, usize)] = &[
        // Not a message at all: the first impossible byte.
        (req, b"GEX / HTTP/1.1\r\n", Desync, 2),
        (req, b"\x16\x03\x01", Desync, 0),
        (Side::Response, b"HTTP/2 200\r\n", Desync, 5),
        // A wrong start line fails at its first wrong byte.
        (req, b"GET /a HTTP/1.2\r\n\r\n", MalformedRequestLine, 14),
        (req, b"GET  /a HTTP/1.1\r\n\r\n", MalformedRequestLine, 4),
        (req, b"GET /a\r\n\r\n", MalformedRequestLine, 6),
        (req, b"GET /a HTTP/1.1 x\r\n", MalformedRequestLine, 15),
        (req, b"GET /\x01 HTTP", MalformedRequestLine, 5),
        (
            Side::Response,
            b"HTTP/1.1 200OK\r\n",
            MalformedStatusLine,
            12,
        ),
        (
            Side::Response,
            b"HTTP/1.1 200 O\rK\r\n",
            MalformedStatusLine,
            15,
        ),
        // A status below 100 is only known wrong at the line end: its LF.
        (
            Side::Response,
            b"HTTP/1.1 099 x\r\n",
            MalformedStatusLine,
            15,
        ),
        // A wrong field line: its LF.
        (
            req,
            b"GET / HTTP/1.1\r\nBad Name: x\r\n",
            MalformedHeader,
            28,
        ),
        (req, b"GET / HTTP/1.1\r\nHost : x\r\n", MalformedHeader, 25),
        (req, b"GET / HTTP/1.1\r\nNoColon\r\n", MalformedHeader, 24),
        (req, b"GET / HTTP/1.1\r\n: empty\r\n", MalformedHeader, 24),
        (
            req,
            b"GET / HTTP/1.1\r\n folded-first\r\n",
            MalformedHeader,
            30,
        ),
        (req, b"GET / HTTP/1.1\r\nA: b\rc\r\n", MalformedHeader, 23),
        // A control byte fails at once, wherever the line ends.
        (req, b"GET / HTTP/1.1\r\nA: \x00", MalformedHeader, 19),
    ];
    for &(side, data, kind, resume) in cases {
        assert_eq!(
            err(side, data),
            (kind, resume),
            "{:?}",
            String::from_utf8_lossy(data)
        );
    }
}

#[test]
fn tentative_status_lines_have_a_short_reason() {
    let mut line = b"HTTP/1.1 200 ".to_vec();
    line.resize(13 + 300, b'x');
    assert_eq!(
        HeadScanner::new(Side::Response, false).scan(&line, 100, 1 << 16),
        Ok(Scan::NeedMore)
    );
    let e = HeadScanner::new(Side::Response, true)
        .scan(&line, 100, 1 << 16)
        .unwrap_err();
    assert_eq!(
        (e.kind, e.resume),
        (ErrorKind::MalformedStatusLine, 13 + 256)
    );
}

#[test]
fn limits_on_fields_and_size() {
    let mut head = b"GET / HTTP/1.1\r\n".to_vec();
    for i in 0..3 {
        head.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
    }
    head.extend_from_slice(b"\r\n");
    let mut s = HeadScanner::new(Side::Request, false);
    assert_eq!(s.scan(&head, 3, 1000), Ok(Scan::Complete(head.len())));
    let mut s = HeadScanner::new(Side::Request, false);
    let e = s.scan(&head, 2, 1000).unwrap_err();
    // The third field line's LF: 16 + 2 * 8 + 7.
    assert_eq!((e.kind, e.resume), (ErrorKind::TooManyHeaders, 39));

    let mut s = HeadScanner::new(Side::Request, false);
    assert_eq!(
        s.scan(&head, 100, head.len()),
        Ok(Scan::Complete(head.len()))
    );
    let mut s = HeadScanner::new(Side::Request, false);
    let short = head.len() - 1;
    assert_eq!(s.scan(&head[..20], 100, short), Ok(Scan::NeedMore));
    let e = s.scan(&head, 100, short).unwrap_err();
    assert_eq!((e.kind, e.resume), (ErrorKind::HeadTooLarge, short));
}

#[test]
fn parse_rejects_what_scan_rejects() {
    assert_eq!(
        parse(Side::Request, b"GET / HTTP/1.1\r\nNoColon\r\n\r\n"),
        None
    );
    assert_eq!(
        parse(Side::Request, b"GET / HTTP/1.1\r\nA: b\r\n"),
        None,
        "no blank line"
    );
    assert_eq!(parse(Side::Response, b"HTTP/1.1 20 OK\r\n\r\n"), None);
    assert_eq!(parse(Side::Request, b"GET / HTTP/1.1\r\n x\r\n\r\n"), None);
}

#[test]
fn non_utf8_target_and_reason_are_replaced() {
    let r = request(b"GET /caf\xe9 HTTP/1.1\r\n\r\n");
    assert_eq!(r.target, "/caf\u{fffd}");
    let Some(Head::Response(r)) = parse(Side::Response, b"HTTP/1.1 200 \xffK\r\n\r\n") else {
        panic!()
    };
    assert_eq!(r.reason, "\u{fffd}K");
}
