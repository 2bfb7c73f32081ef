//! h2c: HTTP/2 that starts on a connection that spoke HTTP/1.1 first (RFC 7540 §3.2; RFC 9113
//! keeps only prior knowledge, but clients such as curl `--http2` still send the upgrade).
//!
//! ```text
//! request side   GET / HTTP/1.1 ... Upgrade: h2c, HTTP2-Settings: <base64url SETTINGS payload>
//!                └── stream 1's request ──┘ PRI * HTTP/2.0 ... (preface) SETTINGS ... frames
//!                                         ^ request_offset
//! response side  HTTP/1.1 101 Switching Protocols ... └ SETTINGS HEADERS(1) DATA(1) ...
//!                                                     ^ response_offset
//! ```
//!
//! The HTTP/1 parser reports the upgrade request as an exchange with status 101, then
//! `Http1Event::Stopped { reason: Upgrade { protocol: Some("h2c") }, request_offset,
//! response_offset }`. The caller then builds [`H2cUpgrade::from_http1`] from both and starts
//! [`super::H2Conn::upgraded`]: stream 1 begins with that request already complete, and its
//! response (the real status) arrives as HTTP/2 frames. The 101 exchange itself is not a call.

use super::Extent;
use super::headers::{Headers, RequestHead};
use crate::http1;

/// The HTTP/1.1 request that asked for the upgrade: HTTP/2 stream 1's request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpgradeRequest {
    /// Its head, in HTTP/2 form (`:authority` from `Host`, lower-case names, without the
    /// connection-specific fields HTTP/2 forbids).
    pub head: RequestHead,
    /// Where it lies in the request side's stream.
    pub extent: Extent,
}

/// Where HTTP/2 starts on a connection upgraded from HTTP/1.1, and what stream 1 asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct H2cUpgrade {
    /// Stream 1's request, if the HTTP/1 parser saw it.
    pub request: Option<UpgradeRequest>,
    /// Request-side offset where the client preface starts (`None`: unknown, the request side
    /// is then read as joined in the middle).
    pub request_offset: Option<u64>,
    /// Response-side offset where the server's first frame starts.
    pub response_offset: u64,
    /// The client's SETTINGS payload from its `HTTP2-Settings` field, decoded.
    pub client_settings: Option<Vec<u8>>,
}

impl H2cUpgrade {
    /// From the HTTP/1 exchange that switched (status 101) and the offsets of the
    /// `Http1Event::Stopped` that followed it.
    pub fn from_http1(
        exchange: &http1::Exchange,
        request_offset: Option<u64>,
        response_offset: u64,
    ) -> Self {
        let req = &exchange.request;
        let mut headers = Headers::default();
        for (name, value) in req.headers.iter() {
            let name = name.to_ascii_lowercase();
            if !matches!(
                name.as_str(),
                "host"
                    | "connection"
                    | "upgrade"
                    | "http2-settings"
                    | "keep-alive"
                    | "proxy-connection"
                    | "transfer-encoding"
            ) {
                headers.push(name.as_bytes(), value, false, usize::MAX);
            }
        }
        let e = exchange.request_extent;
        let head = RequestHead {
            method: Some(req.method.clone()),
            scheme: Some("http".to_string()),
            authority: req.headers.get_str("host").map(str::to_string),
            path: Some(req.target.clone()),
            protocol: None,
            headers,
        };
        Self {
            request: Some(UpgradeRequest {
                head,
                extent: Extent {
                    first: e.first,
                    last: e.last,
                    body_len: e.body_len,
                    uncaptured: e.uncaptured,
                    complete: e.complete,
                    lost: false,
                    messages: None,
                },
            }),
            request_offset,
            response_offset,
            client_settings: req.headers.get("http2-settings").and_then(base64url_decode),
        }
    }
}

/// Decodes base64url without padding (RFC 4648 §5), as `HTTP2-Settings` is sent; `=` padding
/// and surrounding whitespace are tolerated. `None` on any other character.
pub(crate) fn base64url_decode(s: &[u8]) -> Option<Vec<u8>> {
    let start = s
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    let s = &s[start..end];
    let s = s
        .strip_suffix(b"==")
        .or_else(|| s.strip_suffix(b"="))
        .unwrap_or(s);
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &c in s {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' | b'+' => 62,
            b'_' | b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url() {
        assert_eq!(
            base64url_decode(b"AAMAAABkAAQCAAAAAAIAAAAA"),
            Some(vec![0, 3, 0, 0, 0, 100, 0, 4, 2, 0, 0, 0, 0, 2, 0, 0, 0, 0])
        );
        assert_eq!(base64url_decode(b" _-8 "), Some(vec![0xff, 0xef]));
        assert_eq!(base64url_decode(b"AA=="), Some(vec![0]));
        assert_eq!(base64url_decode(b"A*"), None);
        assert_eq!(base64url_decode(b""), Some(vec![]));
    }
}
