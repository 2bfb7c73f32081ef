//! HTTP/1.0 and HTTP/1.1 for a passive observer: both directions of one TCP connection in,
//! request/response exchanges with exact stream offsets out.
//!
//! An observer is not a server: it cannot ask the peer to slow down, it sees bytes late and
//! sometimes not at all (capture limits, lost records), and it must never guess. So the parser
//! is incremental on both sides, buffers only an incomplete head (bodies are counted, never
//! kept), treats a gap in a body of known length as a skip, and treats any other gap or garbage
//! as a loss of sync: it says so, never glues bytes across a gap, and waits for the next
//! plausible message start. Pairing survives this because every message that *started* keeps
//! its place in the queue, even when it could not be parsed.
//!
//! The grammar followed (RFC 9112; see `head` and `body` for the details):
//!
//! ```text
//! HTTP-message = start-line CRLF *( field-line CRLF ) CRLF [ message-body ]
//! start-line   = request-line / status-line
//! request-line = method SP request-target SP HTTP-version      method: detect::METHODS
//! status-line  = HTTP-version SP 3DIGIT [ SP reason-phrase ]
//! HTTP-version = "HTTP/1.0" / "HTTP/1.1"
//! field-line   = field-name ":" OWS field-value OWS            obs-fold replaced by SP
//! message-body = Content-Length octets / chunked-body / octets until close (responses)
//! ```
//!
//! How the two directions pair up:
//!
//! ```text
//! request side    [GET /a][POST /b ........][GET /c]         each request that starts
//!                    │         │                │              takes the next queue slot
//! queue           ┌─ 1 ─┬──── 2 ────┬── 3 ──┐
//! response side   [100][200 /a]  [201 /b][404 /c]             a response answers the oldest
//!                  └─ interim of 1                            slot without a final response
//! ```
//!
//! An exchange is emitted when both its request and its final response have ended (or on
//! [`Http1Conn::close`], with [`Exchange::incomplete`] saying what is missing).

mod body;
mod conn;
mod error;
mod head;
mod headers;
mod pairing;
#[cfg(test)]
mod render;
mod stream;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_recovery;

use std::fmt;

pub use conn::Http1Conn;
pub use error::{ErrorKind, ParseError};
pub use headers::{Headers, RequestHead, ResponseHead};

/// One direction of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// The direction that carries requests (client to server).
    Request,
    /// The direction that carries responses (server to client).
    Response,
}

impl Side {
    /// `"request"` or `"response"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Request => "request",
            Self::Response => "response",
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Bounds on what one connection may hold. Worst case per connection: two head buffers of
/// `max_head_bytes` plus `max_pending` parsed requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Header fields in one head, and trailer fields in one chunked body (default 100).
    pub max_headers: usize,
    /// Bytes of one head, start line and blank line included, and of one trailer section
    /// (default 64 KiB, capped at 16 MiB). Also the most a direction ever buffers.
    pub max_head_bytes: usize,
    /// Requests awaiting a response (pipelining); past it the oldest is dropped (default 64,
    /// at least 1).
    pub max_pending: usize,
    /// Interim (1xx) responses kept per exchange (default 8); more are parsed, not kept.
    pub max_interim: usize,
    /// Bytes of a chunk-size line's extensions (default 4 KiB).
    pub max_chunk_line_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_headers: 100,
            max_head_bytes: 64 * 1024,
            max_pending: 64,
            max_interim: 8,
            max_chunk_line_bytes: 4096,
        }
    }
}

/// Why a connection ended, as the caller knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EndReason {
    /// An orderly close (FIN, `close()`).
    Closed,
    /// The connection was reset.
    Reset,
    /// The caller stopped tracking it (idle timeout, table full).
    Evicted,
    /// The process that owned the socket exited.
    ProcessExited,
}

/// Why an exchange has no complete final response.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Incomplete {
    /// The connection closed before a final response started.
    ConnectionClosed,
    /// The connection was reset before a final response started.
    Reset,
    /// The connection was evicted before a final response started.
    Evicted,
    /// The process exited before a final response started.
    ProcessExited,
    /// The final response started but did not end: the connection ended inside it, or a gap or
    /// malformed framing cut its body. [`Exchange::response`] holds the head if it was seen.
    ResponseTruncated,
    /// A capture gap hid the start of the response: it was there, it could not be read.
    ResponseNotCaptured,
    /// The response head was malformed or over a limit, or its length was invalid.
    ResponseMalformed,
}

impl Incomplete {
    /// A stable `snake_case` label.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::ConnectionClosed => "connection_closed",
            Self::Reset => "reset",
            Self::Evicted => "evicted",
            Self::ProcessExited => "process_exited",
            Self::ResponseTruncated => "response_truncated",
            Self::ResponseNotCaptured => "response_not_captured",
            Self::ResponseMalformed => "response_malformed",
        }
    }
}

impl From<EndReason> for Incomplete {
    fn from(reason: EndReason) -> Self {
        match reason {
            EndReason::Closed => Self::ConnectionClosed,
            EndReason::Reset => Self::Reset,
            EndReason::Evicted => Self::Evicted,
            EndReason::ProcessExited => Self::ProcessExited,
        }
    }
}

/// Why parsing of a connection stopped for good.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum StopReason {
    /// `101 Switching Protocols`; `protocol` is the response's `Upgrade` value (`websocket`,
    /// `h2c`, ...), if it sent one.
    Upgrade {
        /// The response's `Upgrade` field value.
        protocol: Option<String>,
    },
    /// A 2xx answer to `CONNECT`: the connection is now a tunnel.
    Connect,
}

/// Where a message lies in its direction's stream, and what its body was.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Extent {
    /// Stream offset of the message's first byte (its start line).
    pub first: u64,
    /// Stream offset of its last byte: the end of the body, or of the head when it has none.
    /// For a message cut short, the last byte seen (or skipped in a gap).
    pub last: u64,
    /// Body bytes, chunked framing excluded, bytes in gaps included.
    pub body_len: u64,
    /// Body bytes that were in capture gaps: counted, never seen.
    pub uncaptured: u64,
    /// The body used chunked transfer coding.
    pub chunked: bool,
    /// The message ended where its framing says. False when the connection ended first, or a
    /// gap or invalid framing made its end unknowable.
    pub complete: bool,
}

/// An interim (1xx) response received before the final one, e.g. `100 Continue`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Interim {
    /// Status code, 100–199 (never 101, which stops parsing).
    pub status: u16,
    /// Stream offset of its first byte (response side).
    pub first: u64,
    /// Stream offset of its last byte.
    pub last: u64,
}

/// A request and what answered it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exchange {
    /// The request head.
    pub request: RequestHead,
    /// Where the request lies in the request stream.
    pub request_extent: Extent,
    /// The final response head, if one was parsed.
    pub response: Option<ResponseHead>,
    /// Where the final response lies in the response stream, if it started.
    pub response_extent: Option<Extent>,
    /// Interim responses, in order (at most `Limits::max_interim`).
    pub interim: Vec<Interim>,
    /// Why there is no complete final response; `None` when there is one.
    pub incomplete: Option<Incomplete>,
}

impl Exchange {
    /// Offset of the first response byte of any kind: the first interim response if there was
    /// one, else the final response.
    pub fn first_response_byte(&self) -> Option<u64> {
        self.interim
            .first()
            .map(|i| i.first)
            .or(self.response_extent.map(|e| e.first))
    }

    /// The final response's status code, if a final response head was parsed.
    pub fn status(&self) -> Option<u16> {
        self.response.as_ref().map(|r| r.status)
    }
}

/// What the parser reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Http1Event {
    /// A request and its final response (or why there is none).
    Exchange(Box<Exchange>),
    /// A parse error; parsing goes on (see [`ErrorKind`] for what each one costs).
    Error(ParseError),
    /// The connection switched protocol; nothing more is parsed. Emitted right after the
    /// exchange that switched. The offsets are where the new protocol's bytes start.
    Stopped {
        /// Why parsing stopped.
        reason: StopReason,
        /// Request-side offset just past the request that switched (`None` if that request
        /// was not parsed).
        request_offset: Option<u64>,
        /// Response-side offset just past the head of the response that switched.
        response_offset: u64,
    },
}
