//! PostgreSQL frontend/backend protocol v3 for a passive observer: both directions of one
//! connection in, operations (a query or an execution, its answer, with stream offsets) out.
//!
//! ```text
//! client  [startup user,database,application_name] [p password: never read]
//! server  [R auth]..[S param]..[K key][Z ready]
//! simple  Q "SELECT 1; SELECT 2"      → T D.. C  T D.. C  Z        one operation per Q
//! extended P(stmt,text) B(portal,stmt) D E(portal) S
//!                                     → 1 2 T D.. C Z             one operation per E
//! errors  E (SQLSTATE, message): the rest of the batch is skipped by the server up to S
//! copy    Q "COPY t FROM STDIN" → G; client d.. c; server C Z       one operation, bytes counted
//! any time from the server: N notice, A notification, S parameter status (ignored)
//! ```
//!
//! Pairing follows the server's own rule: it answers messages in the order it read them. Each
//! request message that expects an answer takes a slot (`Q`, `P`, `B`, `D`, `E`, `C`, `S`, `F`);
//! each answer fills the oldest slot. An operation is reported when its last answer ended:
//! `CommandComplete`/`EmptyQueryResponse`/`PortalSuspended`/`ErrorResponse` for an execution,
//! `ReadyForQuery` for a simple query. Request offsets run from the first message of the
//! operation's group (the `Parse`/`Bind` before its `Execute`) to the `Execute`; response
//! offsets from the first answer to any of those to the one that ended it.
//!
//! Prepared statements and portals are remembered per connection (named and unnamed), so an
//! `Execute` reports the text its statement was parsed from; a statement prepared before the
//! observer joined has no text (`query` is `None`). A portal and the operations that run it
//! share their statement's text (one copy). The client decides how many statements it keeps
//! and how long they are, so the parser does not follow it past `Limits::max_statements`
//! statements, as many portals, and [`MAX_STATEMENT_BYTES`](crate::db::MAX_STATEMENT_BYTES)
//! of text: the least recently used are let go (one [`ErrorKind::StatementEvicted`] or
//! [`ErrorKind::PortalEvicted`] event each, parsing goes on), and their executions have no
//! text and [`PgOperation::query_evicted`] set.
//!
//! An `ErrorResponse` to a message of a pipelined batch ends the operation it belongs to with
//! that error; the executions after it in the same batch never ran and are reported as
//! [`PgOutcome::NotExecuted`].
//!
//! `SSLRequest`/`GSSENCRequest` answered `S`/`G` stop parsing: the rest is encrypted (the TLS
//! probes see the plaintext as a new stream, which starts with the startup message).

mod conn;
mod error;
mod prepared;
mod reader;

#[cfg(test)]
mod tests;

use std::sync::Arc;

pub use conn::PgConn;
pub use error::{ErrorKind, ParseError};

pub use crate::db::{EndReason, Extent, Incomplete, Limits, Side};

/// What a startup packet asked for. The password that may follow is never read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Startup {
    /// Protocol version, `(3, 0)` for the v3 protocol.
    pub version: (u16, u16),
    /// The `user` parameter.
    pub user: Option<String>,
    /// The `database` parameter (defaults to the user name on the server side).
    pub database: Option<String>,
    /// The `application_name` parameter.
    pub application_name: Option<String>,
    /// Offsets of the startup packet in the request stream.
    pub request: Extent,
    /// Offsets of the answer, from the first authentication message to `ReadyForQuery` (or the
    /// error); `None` if the observer did not see it end.
    pub response: Option<Extent>,
    /// The server refused the connection (bad password, unknown database, ...).
    pub error: Option<PgError>,
}

/// An `ErrorResponse` (fields `S`, `C`, `M`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PgError {
    /// `ERROR`, `FATAL` or `PANIC` (field `V`, else `S`).
    pub severity: String,
    /// The SQLSTATE, e.g. `42P01` (field `C`).
    pub code: String,
    /// The primary message (field `M`).
    pub message: String,
}

/// How an operation was sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PgOpKind {
    /// A simple `Query` message (may hold several statements).
    Query,
    /// An `Execute` of a portal (extended protocol).
    Execute,
    /// A `Parse` (statement preparation) in a batch without an `Execute`.
    Prepare,
    /// A `FunctionCall` message.
    FunctionCall,
}

impl PgOpKind {
    /// A stable `snake_case` label.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Query => "query",
            Self::Execute => "execute",
            Self::Prepare => "prepare",
            Self::FunctionCall => "function_call",
        }
    }
}

/// Direction of a `COPY`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CopyDirection {
    /// `COPY ... FROM STDIN`: the client sends the data.
    In,
    /// `COPY ... TO STDOUT`: the server sends the data.
    Out,
    /// Streaming replication.
    Both,
}

/// A `COPY` inside an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PgCopy {
    /// Its direction.
    pub direction: CopyDirection,
    /// `CopyData` payload bytes, both ways.
    pub bytes: u64,
    /// `CopyData` messages.
    pub messages: u64,
}

/// How an operation ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PgOutcome {
    /// It completed.
    Ok,
    /// The server answered with an `ErrorResponse`.
    Error(PgError),
    /// An earlier message of its batch failed; the server skipped it.
    NotExecuted,
    /// No complete answer.
    Incomplete(Incomplete),
}

/// One database operation and its answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PgOperation {
    /// How it was sent.
    pub kind: PgOpKind,
    /// The SQL text as sent (not sanitised: see [`crate::sql`]), shared with the statement it
    /// was prepared as; `None` when unknown (a statement prepared before the observer joined,
    /// one let go at the connection's limits, or a function call).
    pub query: Option<Arc<str>>,
    /// The text was longer than `Limits::max_message_bytes` and was cut.
    pub query_truncated: bool,
    /// `query` is `None` because the statement's text was let go to keep the connection
    /// within `Limits::max_statements` or [`MAX_STATEMENT_BYTES`](crate::db::MAX_STATEMENT_BYTES)
    /// (or a name the parser no longer knows was asked for after it let some go).
    pub query_evicted: bool,
    /// The prepared statement's name, when it has one.
    pub statement: Option<String>,
    /// The portal's name, when it has one.
    pub portal: Option<String>,
    /// From the first request byte of the operation to its last.
    pub request: Extent,
    /// From the first answer byte to the last; `None` if no answer was seen.
    pub response: Option<Extent>,
    /// The command of the last `CommandComplete` tag: `SELECT`, `INSERT`, `CREATE TABLE`, ...
    pub command: Option<String>,
    /// Rows from the `CommandComplete` tags (summed over the statements of a simple query).
    pub rows: Option<u64>,
    /// `DataRow` messages received.
    pub data_rows: u64,
    /// Statements that completed (`CommandComplete` or `EmptyQueryResponse`).
    pub statements: u32,
    /// A `COPY` that ran as part of it.
    pub copy: Option<PgCopy>,
    /// The portal was suspended (`Execute` with a row limit).
    pub suspended: bool,
    /// How it ended.
    pub outcome: PgOutcome,
}

impl PgOperation {
    /// The SQLSTATE of the error that ended it, if any.
    pub fn error_code(&self) -> Option<&str> {
        match &self.outcome {
            PgOutcome::Error(e) => Some(&e.code),
            _ => None,
        }
    }
}

/// Why parsing stopped for good.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PgStop {
    /// `SSLRequest` answered `S`: TLS follows.
    Tls,
    /// `GSSENCRequest` answered `G`: GSSAPI encryption follows.
    Gss,
    /// A `CancelRequest` connection (it carries nothing else).
    Cancel,
}

/// What the parser reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PgEvent {
    /// The startup packet and how the server answered it.
    Startup(Box<Startup>),
    /// An operation and its answer.
    Operation(Box<PgOperation>),
    /// A `CancelRequest` for backend `process_id`.
    Cancel {
        /// The backend's process id.
        process_id: u32,
        /// Offsets of the packet.
        request: Extent,
    },
    /// A parse error; parsing goes on.
    Error(ParseError),
    /// Nothing more is parsed on this connection.
    Stopped {
        /// Why.
        reason: PgStop,
        /// Response-side offset where the encrypted bytes start.
        response_offset: u64,
    },
}
