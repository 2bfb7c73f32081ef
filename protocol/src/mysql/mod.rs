//! MySQL and MariaDB client/server protocol for a passive observer: both directions of one
//! connection in, one operation per command (its result, offsets) out.
//!
//! ```text
//! server  #0 handshake v10 (version, capabilities, auth salt)
//! client  #1 handshake response (capabilities, user, auth data: never read, database)
//!         .. auth switch / more data ..   server OK (or ERR): command phase
//! client  #0 COM_QUERY "SELECT ..."                 one command at a time, seq restarts at 0
//! server  #1 column count  #2.. column defs  [EOF]  rows..  EOF | OK(0xFE)   result set
//!         #1 OK (affected rows, status) | ERR (code, #SQLSTATE, message)
//!         status SERVER_MORE_RESULTS_EXISTS: another result follows (multi-statements, CALL)
//! client  #0 COM_STMT_PREPARE "SELECT ?"   server #1 OK stmt_id cols params, defs [EOF]
//! client  #0 COM_STMT_EXECUTE stmt_id ...  server: as COM_QUERY, binary rows
//! client  #0 COM_STMT_CLOSE stmt_id        no answer
//! ```
//!
//! `[EOF]` is absent when both sides set `CLIENT_DEPRECATE_EOF`; the parser does not need to
//! know: an EOF packet (`0xFE`, under 9 bytes) where one may be is taken, and rows end at the
//! first `0xFE` packet under 16 MiB (a row starting with `0xFE` is at least that long).
//! Sequence ids are checked: every answer packet must be the next one, which is also how a
//! connection joined midway confirms it found its place.
//!
//! Prepared statements are remembered by id, their text shared by the operations that execute
//! them (one copy), within `Limits::max_statements` statements and
//! [`MAX_STATEMENT_BYTES`](crate::db::MAX_STATEMENT_BYTES) of text: past either the least
//! recently used is let go (one [`ErrorKind::StatementEvicted`] event each, parsing goes on),
//! and its executions have no text and [`MyOperation::query_evicted`] set.
//!
//! A session that negotiated `CLIENT_COMPRESS` is detected at the end of authentication and no
//! longer parsed ([`MyStop::Compressed`]); one that switched to TLS ([`MyStop::Tls`]) comes
//! through the TLS probes.

mod conn;
mod error;
mod packet;
mod prepared;

#[cfg(test)]
mod tests;

use std::sync::Arc;

pub use conn::MyConn;
pub use error::{ErrorKind, ParseError};

pub use crate::db::{EndReason, Extent, Incomplete, Limits, Side};

/// Capability flags this parser reads.
pub mod caps {
    /// The handshake response names a database.
    pub const CONNECT_WITH_DB: u32 = 0x8;
    /// Compressed packets after authentication.
    pub const COMPRESS: u32 = 0x20;
    /// TLS after the short handshake response.
    pub const SSL: u32 = 0x800;
    /// Auth response prefixed by a one-byte length.
    pub const SECURE_CONNECTION: u32 = 0x8000;
    /// Several statements in one `COM_QUERY`.
    pub const MULTI_STATEMENTS: u32 = 1 << 16;
    /// Auth response prefixed by a length-encoded integer.
    pub const PLUGIN_AUTH_LENENC: u32 = 1 << 21;
    /// No EOF packets in result sets (OK packets with a `0xFE` header instead).
    pub const DEPRECATE_EOF: u32 = 1 << 24;
}

/// A command byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Command(pub u8);

impl Command {
    /// `COM_QUERY`.
    pub const QUERY: Self = Self(0x03);
    /// `COM_INIT_DB`.
    pub const INIT_DB: Self = Self(0x02);
    /// `COM_PING`.
    pub const PING: Self = Self(0x0e);
    /// `COM_STMT_PREPARE`.
    pub const STMT_PREPARE: Self = Self(0x16);
    /// `COM_STMT_EXECUTE`.
    pub const STMT_EXECUTE: Self = Self(0x17);
    /// `COM_STMT_CLOSE`.
    pub const STMT_CLOSE: Self = Self(0x19);

    /// The protocol's name: `COM_QUERY`, `COM_STMT_EXECUTE`, ... (`COM_UNKNOWN` otherwise).
    pub const fn as_str(self) -> &'static str {
        match self.0 {
            0x00 => "COM_SLEEP",
            0x01 => "COM_QUIT",
            0x02 => "COM_INIT_DB",
            0x03 => "COM_QUERY",
            0x04 => "COM_FIELD_LIST",
            0x05 => "COM_CREATE_DB",
            0x06 => "COM_DROP_DB",
            0x07 => "COM_REFRESH",
            0x08 => "COM_SHUTDOWN",
            0x09 => "COM_STATISTICS",
            0x0a => "COM_PROCESS_INFO",
            0x0b => "COM_CONNECT",
            0x0c => "COM_PROCESS_KILL",
            0x0d => "COM_DEBUG",
            0x0e => "COM_PING",
            0x11 => "COM_CHANGE_USER",
            0x16 => "COM_STMT_PREPARE",
            0x17 => "COM_STMT_EXECUTE",
            0x18 => "COM_STMT_SEND_LONG_DATA",
            0x19 => "COM_STMT_CLOSE",
            0x1a => "COM_STMT_RESET",
            0x1b => "COM_SET_OPTION",
            0x1c => "COM_STMT_FETCH",
            0x1f => "COM_RESET_CONNECTION",
            _ => "COM_UNKNOWN",
        }
    }
}

/// An `ERR` packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MyError {
    /// The error number, e.g. 1146 (`ER_NO_SUCH_TABLE`).
    pub code: u16,
    /// The SQLSTATE, e.g. `42S02` (absent before protocol 4.1).
    pub sql_state: Option<String>,
    /// The message.
    pub message: String,
}

/// The connection's start: what the server offered and the client chose. The auth data is
/// never read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Handshake {
    /// The server's version string (`5.5.5-10.11.6-MariaDB-0+deb12u1`, `8.0.36`).
    pub server_version: String,
    /// The server is MariaDB (`db.system.name` = `mariadb`).
    pub mariadb: bool,
    /// The server's connection (thread) id.
    pub connection_id: u32,
    /// Capabilities both sides set.
    pub capabilities: u32,
    /// The user name.
    pub user: Option<String>,
    /// The database named in the handshake response.
    pub database: Option<String>,
    /// Offsets of the greeting (response side).
    pub greeting: Extent,
    /// Offsets of the handshake response and any auth packets (request side).
    pub request: Option<Extent>,
    /// The server refused the login.
    pub error: Option<MyError>,
}

/// One command and its answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MyOperation {
    /// The command.
    pub command: Command,
    /// The SQL text (`COM_QUERY`, `COM_STMT_PREPARE`, and `COM_STMT_EXECUTE` through its
    /// statement id, shared with the statement; not sanitised: see [`crate::sql`]), or the
    /// schema of `COM_INIT_DB`.
    pub query: Option<Arc<str>>,
    /// The text was longer than `Limits::max_message_bytes` and was cut.
    pub query_truncated: bool,
    /// `query` is `None` because the statement's text was let go to keep the connection
    /// within `Limits::max_statements` or [`MAX_STATEMENT_BYTES`](crate::db::MAX_STATEMENT_BYTES)
    /// (or an id the parser no longer knows was executed after it let some go).
    pub query_evicted: bool,
    /// The prepared statement (assigned by the server's answer to `COM_STMT_PREPARE`).
    pub statement_id: Option<u32>,
    /// The default database when the command was sent, if known.
    pub database: Option<String>,
    /// Offsets of the command.
    pub request: Extent,
    /// Offsets of the answer, all its packets.
    pub response: Option<Extent>,
    /// Rows in the result sets.
    pub rows: u64,
    /// Affected rows, summed over the OK packets.
    pub affected_rows: Option<u64>,
    /// Results (result sets and OK packets; more than one for multi-statements).
    pub results: u32,
    /// The `ERR` that ended it.
    pub error: Option<MyError>,
    /// Why there is no complete answer.
    pub incomplete: Option<Incomplete>,
}

/// Why parsing stopped for good.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MyStop {
    /// The client asked for TLS.
    Tls,
    /// The session negotiated compression.
    Compressed,
}

/// What the parser reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MyEvent {
    /// The handshake, once authentication ended.
    Handshake(Box<Handshake>),
    /// A command and its answer.
    Operation(Box<MyOperation>),
    /// A parse error; parsing goes on.
    Error(ParseError),
    /// Nothing more is parsed on this connection.
    Stopped {
        /// Why.
        reason: MyStop,
        /// Request-side offset where the unparsed bytes start.
        request_offset: u64,
        /// Response-side offset where the unparsed bytes start.
        response_offset: u64,
    },
}
