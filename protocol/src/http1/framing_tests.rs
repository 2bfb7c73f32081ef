//! Framing decisions from heads.

use super::*;
use crate::http1::Side;
use crate::http1::head::{Head, parse};

fn headers(lines: &str) -> Headers {
    let head = format!("GET / HTTP/1.1\r\n{lines}\r\n");
    match parse(Side::Request, head.as_bytes()) {
        Some(Head::Request(r)) => r.headers,
        other => panic!("{other:?}"),
    }
}

#[test]
fn content_length_values_must_agree() {
    let ok = [
        ("", None),
        ("Content-Length: 0\r\n", Some(0)),
        ("Content-Length: 12\r\nContent-Length: 12\r\n", Some(12)),
        ("Content-Length: 7, 7\r\n", Some(7)),
        ("content-length:  18446744073709551615 \r\n", Some(u64::MAX)),
    ];
    for (lines, want) in ok {
        assert_eq!(content_length(&headers(lines)), Ok(want), "{lines}");
    }
    for lines in [
        "Content-Length: 1\r\nContent-Length: 2\r\n",
        "Content-Length: 3, 4\r\n",
        "Content-Length: -1\r\n",
        "Content-Length: +1\r\n",
        "Content-Length: 1 2\r\n",
        "Content-Length:\r\n",
        "Content-Length: 18446744073709551616\r\n",
        "Content-Length: 0x10\r\n",
    ] {
        assert_eq!(
            content_length(&headers(lines)),
            Err(ErrorKind::InvalidContentLength),
            "{lines}"
        );
    }
}

#[test]
fn chunked_must_be_the_final_coding() {
    let cases = [
        ("", "none"),
        ("Transfer-Encoding: chunked\r\n", "chunked"),
        ("Transfer-Encoding: gzip, Chunked\r\n", "chunked"),
        (
            "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
            "chunked",
        ),
        ("Transfer-Encoding: chunked, gzip\r\n", "other"),
        (
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n",
            "other",
        ),
        ("Transfer-Encoding: gzip\r\n", "other"),
        ("Transfer-Encoding:\r\n", "other"),
    ];
    for (lines, want) in cases {
        let got = match transfer_coding(&headers(lines)) {
            Coding::None => "none",
            Coding::Chunked => "chunked",
            Coding::Other => "other",
        };
        assert_eq!(got, want, "{lines}");
    }
    let te_and_cl = headers("Transfer-Encoding: chunked\r\nContent-Length: 5\r\n");
    assert_eq!(
        request_framing(&te_and_cl),
        Ok(Framing::Chunked),
        "TE wins over CL"
    );
    assert_eq!(
        request_framing(&headers("Transfer-Encoding: gzip\r\n")),
        Err(ErrorKind::InvalidTransferEncoding)
    );
    assert_eq!(request_framing(&headers("")), Ok(Framing::Empty));
}
