//! Errors of the MySQL parser: events, counted by [`ErrorKind::as_str`]; the connection loses
//! its place and finds it again at a quiet point (see [`crate::db`]). One is a limit reached,
//! not a place lost: [`ErrorKind::StatementEvicted`] counts a statement the parser let go, and
//! parsing goes on in place.

use crate::db::Side;

/// What went wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The server's first packet is not a protocol-10 handshake.
    #[error("not a MySQL protocol 10 handshake")]
    NotHandshake,
    /// A packet whose sequence id is not the next one.
    #[error("packet sequence {got} where {want} was expected")]
    Sequence {
        /// The sequence id read.
        got: u8,
        /// The one expected.
        want: u8,
    },
    /// A command byte that is not a known command.
    #[error("unknown command {byte:#04x}")]
    UnknownCommand {
        /// The byte.
        byte: u8,
    },
    /// A packet that cannot be what the state says comes next (truncated OK, empty packet).
    #[error("malformed packet")]
    Malformed,
    /// A logical message (16 MiB packets joined) over `Limits::max_declared_len`.
    #[error("message of {len} bytes over the limit")]
    TooLarge {
        /// Bytes declared so far.
        len: u64,
    },
    /// A response while no command was waiting for one.
    #[error("response without a pending command")]
    UnexpectedResponse,
    /// Bytes that cannot be placed (joined midway or lost sync).
    #[error("bytes that cannot be placed (lost sync)")]
    Desync,
    /// A capture gap cut a packet that had to be read.
    #[error("capture gap inside a packet")]
    Gap,
    /// The connection ended inside a packet.
    #[error("connection ended inside a packet")]
    Truncated,
    /// A prepared statement was let go to stay within `Limits::max_statements` or
    /// [`MAX_STATEMENT_BYTES`](crate::db::MAX_STATEMENT_BYTES), or was not kept; its
    /// executions report no text. Not a loss of place.
    #[error("prepared statement let go at the connection's limit")]
    StatementEvicted,
}

impl ErrorKind {
    /// Whether the parser lost its place (every kind but the limits reached, which let go of
    /// a statement and parse on in place).
    pub const fn loses_place(self) -> bool {
        !matches!(self, Self::StatementEvicted)
    }

    /// A stable `snake_case` label.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::NotHandshake => "not_handshake",
            Self::Sequence { .. } => "sequence",
            Self::UnknownCommand { .. } => "unknown_command",
            Self::Malformed => "malformed",
            Self::TooLarge { .. } => "too_large",
            Self::UnexpectedResponse => "unexpected_response",
            Self::Desync => "desync",
            Self::Gap => "gap",
            Self::Truncated => "truncated",
            Self::StatementEvicted => "statement_evicted",
        }
    }
}

/// A parse error at a place in one direction's stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[error("mysql {side} at offset {offset}: {kind}")]
pub struct ParseError {
    /// The direction.
    pub side: Side,
    /// Stream offset where the problem starts.
    pub offset: u64,
    /// What went wrong.
    #[source]
    pub kind: ErrorKind,
}
