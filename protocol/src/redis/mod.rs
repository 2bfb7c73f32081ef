//! Redis RESP2/RESP3 for a passive observer: both directions of one connection in, one
//! operation per command (its reply, offsets) out.
//!
//! ```text
//! client  *3 $3 SET $1 k $1 v   *2 $3 GET $1 k   PING\r\n (inline)     pipelined freely
//! server  +OK                   $1 v             +PONG                 in the same order
//! push    >3 $7 message $4 news $5 hello   (RESP3; RESP2 sends the same as * while subscribed)
//! ```
//!
//! Decisions:
//! - **One operation per command**, `MULTI`/`EXEC` included: the commands inside a transaction
//!   are reported with their `+QUEUED` reply, `EXEC` with the array of results (or its error),
//!   so a transaction shows as its commands, in order, like the client sent them.
//! - **Pub/sub**: `SUBSCRIBE a b` is one operation answered by its two confirmations; messages
//!   pushed to the client (`message`, `pmessage`, `smessage`, and confirmations nobody waits
//!   for) are reported as [`RedisEvent::Push`], never paired with a command. In RESP2 a pushed
//!   message is an ordinary array, so it is taken as a push only while the connection is
//!   subscribed (the last confirmation said count > 0).
//! - **Privacy**: only the command name (and the subcommand of container commands such as
//!   `CLIENT`, `CONFIG`) is kept; [`RedisOperation::query_text`] is `SET ? ?`. Arguments are
//!   never surfaced; `AUTH` and `HELLO ... AUTH` arguments are not even kept.
//! - `SELECT n` answered `+OK` sets the database index reported with later commands
//!   (`db.namespace`); a connection joined midway does not know it (`None`).

mod conn;
mod error;
mod resp;

#[cfg(test)]
mod tests;

pub use conn::RedisConn;
pub use error::{ErrorKind, ParseError};

pub use crate::db::{EndReason, Extent, Incomplete, Limits, Side};

/// Commands whose first argument is a subcommand (kept in the operation's text).
pub const CONTAINER_COMMANDS: &[&str] = &[
    "ACL", "CLIENT", "CLUSTER", "COMMAND", "CONFIG", "FUNCTION", "LATENCY", "MEMORY", "MODULE",
    "OBJECT", "PUBSUB", "SCRIPT", "SLOWLOG", "XGROUP", "XINFO",
];

/// The type of a reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReplyKind {
    /// `+`: a simple string (`OK`, `PONG`, `QUEUED`, ...).
    Simple,
    /// `-` or `!`: an error.
    Error,
    /// `:`: an integer.
    Integer,
    /// `$` or `=`: a bulk or verbatim string.
    Bulk,
    /// `*`: an array.
    Array,
    /// `%`: a map (RESP3).
    Map,
    /// `~`: a set (RESP3).
    Set,
    /// `_`, `$-1` or `*-1`: null.
    Null,
    /// `,`, `#` or `(`: a double, boolean or big number (RESP3).
    Number,
    /// `>`: a push frame (RESP3), when it answers a subscription.
    Push,
}

/// An error reply: `-WRONGTYPE Operation against a key...`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisError {
    /// The first word, the error's kind by convention: `ERR`, `WRONGTYPE`, `NOAUTH`, ...
    pub code: String,
    /// The rest of the line.
    pub message: String,
}

/// The reply that ended an operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// Its type.
    pub kind: ReplyKind,
    /// Elements of an aggregate (pairs of a map), length of a bulk string.
    pub len: Option<u64>,
    /// For an error reply.
    pub error: Option<RedisError>,
}

/// One command and its reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisOperation {
    /// The command name, upper case: `GET`, `HSET`, `CLIENT`, ...
    pub command: String,
    /// The subcommand of a container command (`CLIENT SETINFO` → `SETINFO`).
    pub subcommand: Option<String>,
    /// Arguments after the command name (subcommand included).
    pub args: u64,
    /// The command sent inline (`PING\r\n`) rather than as an array.
    pub inline: bool,
    /// The database index the command ran in (`db.namespace`): the one in effect when its
    /// reply came, after every earlier command of a pipeline; `None` if unknown.
    pub database: Option<u32>,
    /// Offsets of the command.
    pub request: Extent,
    /// Offsets of its reply (for a subscription, from the first confirmation to the last).
    pub response: Option<Extent>,
    /// The reply, if one was seen. `None` with `incomplete` also `None`: the client had turned
    /// replies off (`CLIENT REPLY OFF` or `SKIP`), the command is reported when sent.
    pub reply: Option<Reply>,
    /// Why there is no complete reply.
    pub incomplete: Option<Incomplete>,
}

impl RedisOperation {
    /// The operation's text with every argument replaced by `?`: `SET ? ?`, `CLIENT SETINFO ?`
    /// (at most 8 placeholders, then `…`).
    pub fn query_text(&self) -> String {
        let mut s = self.command.clone();
        let mut n = self.args;
        if let Some(sub) = &self.subcommand {
            s.push(' ');
            s.push_str(sub);
            n = n.saturating_sub(1);
        }
        for _ in 0..n.min(8) {
            s.push_str(" ?");
        }
        if n > 8 {
            s.push_str(" …");
        }
        s
    }

    /// The error's code (`ERR`, `WRONGTYPE`, ...), if the reply was an error.
    pub fn error_code(&self) -> Option<&str> {
        self.reply
            .as_ref()
            .and_then(|r| r.error.as_ref())
            .map(|e| e.code.as_str())
    }
}

/// What the parser reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RedisEvent {
    /// A command and its reply.
    Operation(Box<RedisOperation>),
    /// A message pushed by the server (pub/sub message, unsolicited confirmation,
    /// client-side caching invalidation): not an answer to a command.
    Push {
        /// Its first element, lower case: `message`, `pmessage`, `invalidate`, ...
        kind: String,
        /// Its offsets.
        response: Extent,
    },
    /// A parse error; parsing goes on.
    Error(ParseError),
}
