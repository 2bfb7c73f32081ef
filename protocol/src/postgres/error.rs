//! Errors of the PostgreSQL parser. Like HTTP/1's, they are events: the parser reports one,
//! drops what it cannot pair any more, and finds its place again (see [`crate::db`]). Two are
//! limits reached, not places lost: [`ErrorKind::StatementEvicted`] and
//! [`ErrorKind::PortalEvicted`] count what the parser let go, and parsing goes on in place.

use crate::db::Side;

/// What went wrong; [`ErrorKind::as_str`] is a stable label for metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A message length below the 4 bytes of the length itself, or a startup packet outside
    /// 8..=10000 bytes.
    #[error("malformed message length {len}")]
    MalformedLength {
        /// The declared length.
        len: u32,
    },
    /// A declared length over `Limits::max_declared_len`.
    #[error("declared message length {len} over the limit")]
    TooLarge {
        /// The declared length.
        len: u64,
    },
    /// A type byte that this direction never carries.
    #[error("unknown message type {tag:#04x}")]
    UnknownMessage {
        /// The type byte.
        tag: u8,
    },
    /// A startup packet with an unknown protocol version or request code.
    #[error("unknown startup code {code:#010x}")]
    UnknownStartup {
        /// The 32-bit code after the length.
        code: u32,
    },
    /// A message that does not answer the request waiting for it (or nothing was waiting).
    #[error("response {tag:#04x} does not answer the pending request")]
    UnexpectedResponse {
        /// The response's type byte.
        tag: u8,
    },
    /// More requests waiting than `Limits::max_pending`.
    #[error("too many requests awaiting a response")]
    TooManyPending,
    /// The parser does not know where it is (joined midway, or lost its place): bytes are
    /// skipped up to the next quiet point.
    #[error("bytes that cannot be placed (lost sync)")]
    Desync,
    /// A capture gap cut a message that had to be read.
    #[error("capture gap inside a message")]
    Gap,
    /// The connection ended inside a message.
    #[error("connection ended inside a message")]
    Truncated,
    /// A prepared statement (or the text a portal kept of one) was let go to stay within
    /// `Limits::max_statements` or [`MAX_STATEMENT_BYTES`](crate::db::MAX_STATEMENT_BYTES),
    /// or was not kept; its executions report no text. Not a loss of place.
    #[error("prepared statement let go at the connection's limit")]
    StatementEvicted,
    /// A portal was let go to stay within `Limits::max_statements` portals. Not a loss of
    /// place.
    #[error("portal let go at the connection's limit")]
    PortalEvicted,
}

impl ErrorKind {
    /// Whether the parser lost its place (every kind but the limits reached, which let go of
    /// a statement and parse on in place).
    pub const fn loses_place(self) -> bool {
        !matches!(self, Self::StatementEvicted | Self::PortalEvicted)
    }

    /// A stable `snake_case` label.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::MalformedLength { .. } => "malformed_length",
            Self::TooLarge { .. } => "too_large",
            Self::UnknownMessage { .. } => "unknown_message",
            Self::UnknownStartup { .. } => "unknown_startup",
            Self::UnexpectedResponse { .. } => "unexpected_response",
            Self::TooManyPending => "too_many_pending",
            Self::Desync => "desync",
            Self::Gap => "gap",
            Self::Truncated => "truncated",
            Self::StatementEvicted => "statement_evicted",
            Self::PortalEvicted => "portal_evicted",
        }
    }
}

/// A parse error at a place in one direction's stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[error("postgres {side} at offset {offset}: {kind}")]
pub struct ParseError {
    /// The direction.
    pub side: Side,
    /// Stream offset where the problem starts.
    pub offset: u64,
    /// What went wrong.
    #[source]
    pub kind: ErrorKind,
}
