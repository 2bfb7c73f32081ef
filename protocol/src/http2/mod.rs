//! HTTP/2 (RFC 9113) with HPACK (RFC 7541) for a passive observer: both directions of one TCP
//! connection in, one exchange per stream out, with exact stream offsets.
//!
//! The observer's problems are HTTP/1's (it sees bytes late, sometimes not at all, and must
//! never guess) plus two of HTTP/2's own. Frames are found by length, so a capture gap that
//! swallows a frame header loses the frame boundaries of that direction; and header fields are
//! compressed against a dynamic table built from every header block of the direction, so a
//! missed block, or joining a connection in the middle, leaves some fields undecodable. The
//! parser therefore:
//!
//! - skips gaps inside a DATA payload by length (the frame header said how long) and counts
//!   them as uncaptured body bytes;
//! - on any other loss of frame sync, waits for a `data` call (a syscall's bytes, which usually
//!   start at a frame boundary) that starts with a plausible frame header, judged strictly
//!   (`frame::check`) and, where the call holds it, by the frame header that follows;
//! - decodes every header block it can, and reports the fields whose dynamic-table entry it
//!   cannot know as *unrecovered* ([`Headers::unrecovered`]), never with a guessed value. The
//!   rule for what it can know is in `hpack/table.rs`: after a missed block it forgets the
//!   table, and trusts the entries it sees inserted from then on, since HPACK indices count
//!   from the newest entry.
//!
//! ```text
//! request side   preface SETTINGS HEADERS(1) DATA(1,ES) HEADERS(3,ES) ...
//! response side  SETTINGS HEADERS(1) DATA(1) HEADERS(3) DATA(3,ES) HEADERS(1,trailers,ES)
//!                            │                              │              │
//! streams        1: request ended ── response ended ─────────────────────► Exchange(1)
//!                3: request ended ── response ended ──────► Exchange(3)
//! ```
//!
//! An exchange is emitted when its stream is done: both END_STREAMs (or the response's, when a
//! capture loss may have hidden the request's), a RST_STREAM, a GOAWAY that refused it, or the
//! connection's end ([`H2Conn::close`]). Module map: `frame` (wire formats), `reader` (one
//! direction: bytes to frames and header blocks, sync), `hpack`, `stream` (the per-stream state
//! machine), `conn` (the public face), `upgrade` (h2c after HTTP/1.1 `Upgrade`).

mod conn;
mod error;
pub mod frame;
mod headers;
pub mod hpack;
mod reader;
mod stream;
mod upgrade;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_sync;

pub use crate::http1::{EndReason, Side};
pub use conn::H2Conn;
pub use error::{ErrorKind, ParseError};
pub use frame::ErrorCode;
pub use headers::{Headers, MAX_LISTED_UNRECOVERED, RequestHead, ResponseHead, Unrecovered};
pub use reader::plausible_frame_start;
pub use upgrade::{H2cUpgrade, UpgradeRequest};

use crate::grpc::Messages;

/// Bounds on what one connection may hold. Worst case per connection: two header block buffers
/// of `max_header_block_bytes`, two dynamic tables of `max_table_bytes`, `max_header_bytes` of
/// kept header fields and `max_streams` small stream records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Streams tracked at once; past it the oldest is dropped (default 1000, at least 1).
    pub max_streams: usize,
    /// Bytes of one encoded header block, HEADERS or PUSH_PROMISE plus its CONTINUATION frames
    /// (default 64 KiB). Longer blocks are skipped (CONTINUATION floods), costing that
    /// direction's HPACK state. Also the most a direction ever buffers.
    pub max_header_block_bytes: usize,
    /// What one block may decode to, as HPACK sizes (name + value + 32 per field; default
    /// 64 KiB). Fields past it are decoded for the table's sake, not kept (HPACK bombs).
    pub max_header_list_bytes: usize,
    /// Longest decoded HPACK string kept (default 16 KiB); a longer one's field is unrecovered.
    pub max_string_bytes: usize,
    /// Most each direction's dynamic table keeps (default 64 KiB); an encoder using more costs
    /// recoverable fields, never wrong ones.
    pub max_table_bytes: usize,
    /// Header field bytes kept per stream, all its blocks together (default 32 KiB).
    pub max_stream_header_bytes: usize,
    /// Header field bytes kept per connection, all streams together (default 2 MiB).
    pub max_header_bytes: usize,
    /// Interim (1xx) responses kept per stream (default 8); more are parsed, not kept.
    pub max_interim: usize,
    /// Report server-pushed streams as exchanges (default false: they are only counted in
    /// [`Stats::pushed_streams`]).
    pub report_pushed: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_streams: 1000,
            max_header_block_bytes: 64 * 1024,
            max_header_list_bytes: 64 * 1024,
            max_string_bytes: 16 * 1024,
            max_table_bytes: 64 * 1024,
            max_stream_header_bytes: 32 * 1024,
            max_header_bytes: 2 * 1024 * 1024,
            max_interim: 8,
            report_pushed: false,
        }
    }
}

/// Where one direction of an exchange lies in its side's stream, and what its body was.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Extent {
    /// Stream offset of the first byte of the HEADERS frame (its frame header) that started
    /// it; when that frame was not captured (a gap hid it), of the first frame seen.
    pub first: u64,
    /// Stream offset of its last byte: the end of the frame that carried END_STREAM (or of
    /// the last CONTINUATION of that header block). When it did not end, the last byte seen.
    pub last: u64,
    /// DATA content bytes (padding excluded), bytes in capture gaps included.
    pub body_len: u64,
    /// Of which were in capture gaps: counted, never seen.
    pub uncaptured: u64,
    /// END_STREAM was seen.
    pub complete: bool,
    /// A capture loss on this side while it was in progress may have hidden some of its frames:
    /// `body_len` and `messages` are then lower bounds (and `complete` may be false only
    /// because END_STREAM was hidden).
    pub lost: bool,
    /// gRPC messages counted in its DATA, when the exchange is gRPC.
    pub messages: Option<Messages>,
}

/// An interim (1xx) response received before the final one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Interim {
    /// Status code, 100–199.
    pub status: u16,
    /// Stream offset of its HEADERS frame's first byte (response side).
    pub first: u64,
    /// Stream offset of its last byte.
    pub last: u64,
}

/// A RST_STREAM seen on a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Reset {
    /// The side that sent it.
    pub by: Side,
    /// Its error code.
    pub code: ErrorCode,
    /// Stream offset of the RST_STREAM frame on that side.
    pub offset: u64,
}

/// Why an exchange has no complete response.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Incomplete {
    /// A RST_STREAM ended the stream before its response did.
    StreamReset {
        /// The side that reset it.
        by: Side,
        /// The error code, e.g. CANCEL.
        code: ErrorCode,
    },
    /// The server's GOAWAY said it never processed the stream (its id is above the last
    /// stream id), so the request may be retried elsewhere.
    Refused {
        /// The GOAWAY's error code.
        code: ErrorCode,
    },
    /// The connection closed before the response started.
    ConnectionClosed,
    /// The connection was reset before the response started.
    ConnectionReset,
    /// The caller stopped tracking the connection before the response started.
    Evicted,
    /// The process exited before the response started.
    ProcessExited,
    /// The response started and did not end (the connection ended inside it, or a capture
    /// loss hid its end).
    ResponseTruncated,
    /// The response was never seen, and a capture loss on the response side may have hidden
    /// it.
    ResponseNotCaptured,
}

impl Incomplete {
    /// A stable `snake_case` label.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::StreamReset { .. } => "stream_reset",
            Self::Refused { .. } => "refused",
            Self::ConnectionClosed => "connection_closed",
            Self::ConnectionReset => "connection_reset",
            Self::Evicted => "evicted",
            Self::ProcessExited => "process_exited",
            Self::ResponseTruncated => "response_truncated",
            Self::ResponseNotCaptured => "response_not_captured",
        }
    }
}

impl From<EndReason> for Incomplete {
    fn from(reason: EndReason) -> Self {
        match reason {
            EndReason::Closed => Self::ConnectionClosed,
            EndReason::Reset => Self::ConnectionReset,
            EndReason::Evicted => Self::Evicted,
            EndReason::ProcessExited => Self::ProcessExited,
        }
    }
}

/// One stream: a request and what answered it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct H2Exchange {
    /// The stream identifier.
    pub stream_id: u32,
    /// A server-pushed stream: its request came in a PUSH_PROMISE on the response side.
    pub pushed: bool,
    /// The request head; `None` when its HEADERS were never seen (the observer joined later, or
    /// a gap hid them). Its fields may be partly unrecovered: see [`RequestHead::headers`].
    pub request: Option<RequestHead>,
    /// Where the request lies in the request side's stream (`None` if it was not seen there).
    pub request_extent: Option<Extent>,
    /// Request trailers.
    pub request_trailers: Option<Headers>,
    /// Interim responses, in order (at most `Limits::max_interim`).
    pub interim: Vec<Interim>,
    /// The final response head, if seen.
    pub response: Option<ResponseHead>,
    /// Where the final response lies in the response side's stream, if it started.
    pub response_extent: Option<Extent>,
    /// Response trailers (gRPC's status travels here).
    pub response_trailers: Option<Headers>,
    /// The RST_STREAM that ended the stream, if any (also after a complete response, e.g. a
    /// server's NO_ERROR telling the client to stop sending).
    pub reset: Option<Reset>,
    /// Why there is no complete response; `None` when there is one.
    pub incomplete: Option<Incomplete>,
}

impl H2Exchange {
    /// The final response's `:status`.
    pub fn status(&self) -> Option<u16> {
        self.response.as_ref().and_then(|r| r.status)
    }

    /// The request's `:method`.
    pub fn method(&self) -> Option<&str> {
        self.request.as_ref().and_then(|r| r.method.as_deref())
    }

    /// The request's `:path`.
    pub fn path(&self) -> Option<&str> {
        self.request.as_ref().and_then(|r| r.path.as_deref())
    }

    /// Offset of the first response byte of any kind: the first interim response if there was
    /// one, else the final response.
    pub fn first_response_byte(&self) -> Option<u64> {
        self.interim
            .first()
            .map(|i| i.first)
            .or(self.response_extent.map(|e| e.first))
    }

    /// Header fields of this exchange, all blocks together, that could not be recovered.
    pub fn unrecovered(&self) -> u32 {
        self.blocks().map(Headers::unrecovered_count).sum()
    }

    /// Some header block of this exchange is missing fields beyond the unrecovered ones (cut by
    /// a gap, undecodable, over a limit).
    pub fn headers_incomplete(&self) -> bool {
        self.blocks().any(Headers::is_incomplete)
    }

    /// A pseudo-header field the request or response needs (`:method`, `:path`, `:scheme`,
    /// `:status`) is unknown: absent from a block that could not be fully recovered.
    pub fn pseudo_unknown(&self) -> bool {
        self.request
            .as_ref()
            .is_some_and(RequestHead::pseudo_unknown)
            || self
                .response
                .as_ref()
                .is_some_and(ResponseHead::pseudo_unknown)
    }

    fn blocks(&self) -> impl Iterator<Item = &Headers> {
        [
            self.request.as_ref().map(|r| &r.headers),
            self.request_trailers.as_ref(),
            self.response.as_ref().map(|r| &r.headers),
            self.response_trailers.as_ref(),
        ]
        .into_iter()
        .flatten()
    }
}

/// What the parser reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum H2Event {
    /// A stream is done.
    Exchange(Box<H2Exchange>),
    /// A parse error or loss; parsing goes on (see [`ErrorKind`] for what each one costs).
    Error(ParseError),
}

/// Counters of one connection (errors are events; these count what is not an error, and what
/// errors cost).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Frames parsed (both sides).
    pub frames: u64,
    /// Header blocks completed (decoded or lost).
    pub header_blocks: u64,
    /// Header fields that could not be recovered (unknown dynamic entries, strings over the
    /// limit).
    pub unrecovered_fields: u64,
    /// Times a direction's HPACK dynamic table was forgotten.
    pub hpack_resets: u64,
    /// Times a direction lost frame sync.
    pub sync_losses: u64,
    /// Times a direction found frame sync again.
    pub resyncs: u64,
    /// Bytes skipped while looking for a frame start.
    pub resync_skipped_bytes: u64,
    /// Frames on streams not tracked: closed, dropped, or opened before the observer joined.
    pub orphan_frames: u64,
    /// PUSH_PROMISE frames.
    pub pushed_streams: u64,
    /// Exchanges emitted.
    pub exchanges: u64,
}
