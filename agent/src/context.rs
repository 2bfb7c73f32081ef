//! W3C Trace Context (`traceparent`, `tracestate`) parsing: pure, `&str` in, values out.
//!
//! ```text
//! traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01
//!              ^^ ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^ ^^^^^^^^^^^^^^^^ ^^
//!         version trace-id (32 lower hex)          parent-id (16)   flags
//! ```
//!
//! Per the specification (Level 1, §3.2): lower-case hex only; all-zero trace or parent ids are
//! invalid; version `ff` is invalid; version `00` is exactly 55 characters; a higher version is
//! parsed by its first 55 characters if what follows starts with `-`. Invalid values are
//! ignored (the request then starts a new trace), never repaired. `tracestate` is kept only
//! with a valid `traceparent`, as up to 32 list members and 512 characters.

use sonde_model::{SpanId, TraceId};

/// A valid `traceparent`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceParent {
    pub version: u8,
    pub trace_id: TraceId,
    /// The caller's span: the parent of the span that receives this header.
    pub parent_id: SpanId,
    pub flags: u8,
}

fn hex_bytes<const N: usize>(s: &str) -> Option<[u8; N]> {
    let b = s.as_bytes();
    if b.len() != 2 * N {
        return None;
    }
    let val = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; N];
    for i in 0..N {
        out[i] = val(b[2 * i])? << 4 | val(b[2 * i + 1])?;
    }
    Some(out)
}

/// Parses a `traceparent` header value.
pub fn parse_traceparent(value: &str) -> Option<TraceParent> {
    let v = value.trim_matches([' ', '\t']);
    if v.len() < 55 || !v.is_char_boundary(55) {
        return None;
    }
    let version = hex_bytes::<1>(&v[0..2])?[0];
    if version == 0xff {
        return None;
    }
    if version == 0 && v.len() != 55 {
        return None;
    }
    if version > 0 && v.len() > 55 && !v[55..].starts_with('-') {
        return None;
    }
    let b = v.as_bytes();
    if b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
        return None;
    }
    let trace_id = TraceId(hex_bytes::<16>(&v[3..35])?);
    let parent_id = SpanId(hex_bytes::<8>(&v[36..52])?);
    let flags = hex_bytes::<1>(&v[53..55])?[0];
    if !trace_id.is_valid() || !parent_id.is_valid() {
        return None;
    }
    Some(TraceParent {
        version,
        trace_id,
        parent_id,
        flags,
    })
}

/// Most list members of `tracestate` kept.
pub const MAX_TRACESTATE_MEMBERS: usize = 32;
/// Longest `tracestate` kept.
pub const MAX_TRACESTATE_LEN: usize = 512;

/// Normalises `tracestate` values (several header lines are one list): empty members dropped,
/// at most 32 members and 512 characters; `None` if nothing valid is left.
pub fn parse_tracestate<'a>(values: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let mut members: Vec<&str> = Vec::new();
    for v in values {
        for m in v.split(',') {
            let m = m.trim_matches([' ', '\t']);
            if m.is_empty() {
                continue;
            }
            // key=value with a non-empty key and value, printable ASCII only.
            let (k, val) = m.split_once('=')?;
            if k.is_empty()
                || val.is_empty()
                || !m.bytes().all(|c| (0x20..0x7f).contains(&c) && c != b',')
            {
                return None;
            }
            members.push(m);
        }
    }
    if members.is_empty() || members.len() > MAX_TRACESTATE_MEMBERS {
        return None;
    }
    let s = members.join(",");
    (s.len() <= MAX_TRACESTATE_LEN).then_some(s)
}

/// Formats a `traceparent` value (version 00).
pub fn format_traceparent(trace_id: &TraceId, span_id: &SpanId, flags: u8) -> String {
    format!("00-{trace_id}-{span_id}-{flags:02x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_specification_example() {
        let tp = parse_traceparent(VALID).unwrap();
        assert_eq!(tp.version, 0);
        assert_eq!(tp.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(tp.parent_id.to_string(), "00f067aa0ba902b7");
        assert_eq!(tp.flags, 1);
        assert_eq!(
            format_traceparent(&tp.trace_id, &tp.parent_id, tp.flags),
            VALID
        );
        // Surrounding whitespace (OWS) is allowed.
        assert!(parse_traceparent(&format!(" {VALID}\t")).is_some());
        // Not sampled.
        let tp =
            parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap();
        assert_eq!(tp.flags, 0);
    }

    #[test]
    fn invalid_values_are_ignored() {
        for bad in [
            "",
            "00",
            // upper-case hex
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",
            // all-zero trace id, all-zero parent id
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            // version ff is forbidden
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            // version 00 with trailing data
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            // wrong separators and lengths
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            // non-hex
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            // multi-byte characters where hex belongs
            "00-4bf92f3577b34da6a3ce929d0e0e47é-00f067aa0ba902b7-01",
        ] {
            assert_eq!(parse_traceparent(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn future_versions_are_read_by_their_first_55_characters() {
        let v = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-holds";
        let tp = parse_traceparent(v).unwrap();
        assert_eq!(tp.version, 0xcc);
        assert_eq!(tp.flags, 1);
        // ...but only if what follows is a new field.
        assert_eq!(
            parse_traceparent("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01xyz"),
            None
        );
        assert!(
            parse_traceparent("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").is_some()
        );
    }

    #[test]
    fn tracestate_lists() {
        assert_eq!(
            parse_tracestate(["congo=t61rcWkgMzE", " rojo=00f067aa0ba902b7 ,"]).as_deref(),
            Some("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7")
        );
        assert_eq!(parse_tracestate(["", " , "]), None);
        assert_eq!(parse_tracestate(["novalue"]), None);
        let many: Vec<String> = (0..33).map(|i| format!("k{i}=v")).collect();
        assert_eq!(parse_tracestate(many.iter().map(String::as_str)), None);
    }
}
