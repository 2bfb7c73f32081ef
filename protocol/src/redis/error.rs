//! Errors of the Redis parser: events, counted by [`ErrorKind::as_str`]; the connection loses
//! its place and finds it again at a quiet point (see [`crate::db`]).

use crate::db::Side;

/// What went wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A type byte that is not RESP2 or RESP3 (or a streamed `?` length, not supported).
    #[error("unknown RESP type byte {byte:#04x}")]
    UnknownType {
        /// The byte.
        byte: u8,
    },
    /// A length or count that is not a number, or below -1.
    #[error("malformed RESP length")]
    MalformedLength,
    /// A line longer than `Limits::max_message_bytes`, or a declared length over
    /// `Limits::max_declared_len`.
    #[error("RESP value too large ({len} bytes declared or read)")]
    TooLarge {
        /// The length declared, or read without finding the line end.
        len: u64,
    },
    /// Aggregates nested deeper than `Limits::max_depth`.
    #[error("RESP aggregates nested too deep")]
    TooDeep,
    /// A bulk string not followed by CRLF.
    #[error("bulk string not followed by CRLF")]
    MissingCrlf,
    /// A reply while no command was waiting for one.
    #[error("reply without a pending command")]
    UnexpectedReply,
    /// More commands waiting than `Limits::max_pending`.
    #[error("too many commands awaiting a reply")]
    TooManyPending,
    /// Bytes that cannot be placed (joined midway or lost sync).
    #[error("bytes that cannot be placed (lost sync)")]
    Desync,
    /// A capture gap cut a value that had to be read.
    #[error("capture gap inside a value")]
    Gap,
    /// The connection ended inside a value.
    #[error("connection ended inside a value")]
    Truncated,
}

impl ErrorKind {
    /// Whether the parser lost its place: every kind of this parser (it has no limit that lets
    /// something go and parses on, unlike PostgreSQL's and MySQL's statement evictions).
    pub const fn loses_place(self) -> bool {
        true
    }

    /// A stable `snake_case` label.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::UnknownType { .. } => "unknown_type",
            Self::MalformedLength => "malformed_length",
            Self::TooLarge { .. } => "too_large",
            Self::TooDeep => "too_deep",
            Self::MissingCrlf => "missing_crlf",
            Self::UnexpectedReply => "unexpected_reply",
            Self::TooManyPending => "too_many_pending",
            Self::Desync => "desync",
            Self::Gap => "gap",
            Self::Truncated => "truncated",
        }
    }
}

/// A parse error at a place in one direction's stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[error("redis {side} at offset {offset}: {kind}")]
pub struct ParseError {
    /// The direction.
    pub side: Side,
    /// Stream offset where the problem starts.
    pub offset: u64,
    /// What went wrong.
    #[source]
    pub kind: ErrorKind,
}
