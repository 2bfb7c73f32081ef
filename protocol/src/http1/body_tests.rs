//! Unit tests of the HTTP/1 body framing.

use super::*;

fn limits() -> Limits {
    Limits::default()
}

/// Feeds `data` in pieces of `step` bytes; returns (consumed bytes when done, body length).
fn run(framing: Framing, data: &[u8], step: usize) -> Result<(Option<usize>, u64), BodyError> {
    let mut body = Body::new(framing).expect("framing with a body");
    let mut off = 0;
    while off < data.len() {
        let end = (off + step).min(data.len());
        match body.feed(&data[off..end], &limits()) {
            Ok(Feed::Done(n)) => return Ok((Some(off + n), body.len())),
            Ok(Feed::More) => off = end,
            Err(e) => {
                return Err(BodyError {
                    kind: e.kind,
                    at: off + e.at,
                });
            }
        }
    }
    Ok((None, body.len()))
}

const CHUNKED: &[u8] =
    b"5\r\nhello\r\n1A;name=\"v\" ; x\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-T: 1\r\n\r\nNEXT";

#[test]
fn chunked_body_with_extensions_and_trailers() {
    let end = CHUNKED.len() - 4;
    for step in [1, 2, 3, 7, 64] {
        assert_eq!(
            run(Framing::Chunked, CHUNKED, step),
            Ok((Some(end), 31)),
            "step {step}"
        );
    }
}

#[test]
fn every_prefix_of_a_chunked_body_needs_more() {
    let end = CHUNKED.len() - 4;
    for n in 0..end {
        assert_eq!(
            run(Framing::Chunked, &CHUNKED[..n], 1000).map(|r| r.0),
            Ok(None),
            "{n}"
        );
    }
}

#[test]
fn chunked_variants_that_are_valid() {
    let cases: &[(&[u8], bool, u64)] = &[
        (b"0\r\n\r\n", true, 0),
        (b"000\r\n\r\n", true, 0),
        (b"0\n\n", true, 0),
        (b"3\nabc\n0\n\n", true, 3),
        (b"a \r\n0123456789\r\n0\r\n\r\n", true, 10),
        (
            b"F\t;ext\r\n0123456789abcde\r\n0;last\r\nA: b\r\nC: d\r\n\r\n",
            true,
            15,
        ),
        (b"ffffffffffffffff\r\n", false, 0),
    ];
    for &(data, done, len) in cases {
        let done = done.then_some(data.len());
        assert_eq!(
            run(Framing::Chunked, data, 1000),
            Ok((done, len)),
            "{data:?}"
        );
    }
}

#[test]
fn chunked_framing_errors_point_at_the_byte() {
    let cases: &[(&[u8], ErrorKind, usize)] = &[
        (b"\r\n", ErrorKind::InvalidChunk, 0),
        (b"x\r\n", ErrorKind::InvalidChunk, 0),
        (b"5x\r\n", ErrorKind::InvalidChunk, 1),
        (b"-1\r\n", ErrorKind::InvalidChunk, 0),
        (b"10000000000000000\r\n", ErrorKind::InvalidChunk, 16),
        (b"3\r\nabcX", ErrorKind::InvalidChunk, 6),
        (b"3\r\nabc\rX", ErrorKind::InvalidChunk, 7),
        (b"3\rX", ErrorKind::InvalidChunk, 2),
        (b"3;a\x01\r\n", ErrorKind::InvalidChunk, 3),
        (b"0\r\nA: \x00\r\n", ErrorKind::InvalidChunk, 6),
        (b"0\r\n\rX", ErrorKind::InvalidChunk, 4),
    ];
    for &(data, kind, at) in cases {
        assert_eq!(
            run(Framing::Chunked, data, 1000),
            Err(BodyError { kind, at }),
            "{data:?}"
        );
        assert_eq!(
            run(Framing::Chunked, data, 1),
            Err(BodyError { kind, at }),
            "{data:?} by 1"
        );
    }
}

#[test]
fn chunk_extensions_and_trailers_are_bounded() {
    let l = limits();
    let mut long_ext = b"1;".to_vec();
    long_ext.resize(l.max_chunk_line_bytes + 1, b'x');
    assert_eq!(
        run(Framing::Chunked, &long_ext, 100).map_err(|e| e.kind),
        Ok((None, 0)),
        "exactly at the limit"
    );
    long_ext.push(b'x');
    assert_eq!(
        run(Framing::Chunked, &long_ext, 100).map_err(|e| e.kind),
        Err(ErrorKind::InvalidChunk)
    );

    let mut many = b"0\r\n".to_vec();
    for _ in 0..=l.max_headers {
        many.extend_from_slice(b"T: v\r\n");
    }
    assert_eq!(
        run(Framing::Chunked, &many, 100).map_err(|e| e.kind),
        Err(ErrorKind::TrailerTooLarge)
    );
    let mut big = b"0\r\nT: ".to_vec();
    big.resize(l.max_head_bytes + 10, b'v');
    assert_eq!(
        run(Framing::Chunked, &big, 4096).map_err(|e| e.kind),
        Err(ErrorKind::TrailerTooLarge)
    );
}

#[test]
fn length_body_stops_at_its_length() {
    assert_eq!(run(Framing::Length(3), b"abcGET", 1), Ok((Some(3), 3)));
    assert_eq!(run(Framing::Length(3), b"abcGET", 100), Ok((Some(3), 3)));
    assert_eq!(run(Framing::Length(10), b"abc", 100), Ok((None, 3)));
    assert_eq!(run(Framing::UntilClose, b"abc", 2), Ok((None, 3)));
    assert!(Body::new(Framing::Length(0)).is_none());
    assert!(Body::new(Framing::Empty).is_none());
}

#[test]
fn gaps_inside_known_lengths_are_skipped() {
    let mut b = Body::new(Framing::Length(10)).unwrap();
    assert_eq!(b.feed(b"ab", &limits()), Ok(Feed::More));
    assert_eq!(b.gap(5), GapOutcome::Inside);
    assert_eq!(b.gap(7), GapOutcome::Ended { used: 3 });
    assert_eq!((b.len(), b.uncaptured()), (10, 8));

    let mut b = Body::new(Framing::Chunked).unwrap();
    assert_eq!(b.feed(b"8\r\nab", &limits()), Ok(Feed::More));
    assert_eq!(
        b.gap(6),
        GapOutcome::Inside,
        "exactly the rest of the chunk"
    );
    assert_eq!(b.feed(b"\r\n0\r\n\r\n", &limits()), Ok(Feed::Done(7)));
    assert_eq!((b.len(), b.uncaptured()), (8, 6));

    let mut b = Body::new(Framing::Chunked).unwrap();
    assert_eq!(b.feed(b"8\r\nab", &limits()), Ok(Feed::More));
    assert_eq!(b.gap(7), GapOutcome::Broken, "crosses the chunk's CRLF");
    let mut b = Body::new(Framing::Chunked).unwrap();
    assert_eq!(b.feed(b"8", &limits()), Ok(Feed::More));
    assert_eq!(b.gap(1), GapOutcome::Broken, "inside the size line");

    let mut b = Body::new(Framing::UntilClose).unwrap();
    assert_eq!(b.gap(1 << 40), GapOutcome::Inside);
    assert_eq!(b.uncaptured(), 1 << 40);
    assert!(b.until_close());
}
