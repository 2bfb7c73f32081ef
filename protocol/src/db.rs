//! What the database parsers ([`crate::postgres`], [`crate::mysql`], [`crate::redis`]) share:
//! stream extents, limits, and the rule by which a connection joined in the middle finds its
//! place again.
//!
//! All three are request/response protocols over one TCP connection, answered in order. Each
//! parser is fed both directions with `data(side, offset, bytes, out)`, told about capture gaps
//! with `gap`, ended with `close`, and appends events to `out`, like [`crate::http1::Http1Conn`].
//!
//! A parser that lost its place (joined midway, a gap inside a message, a malformed message)
//! never guesses which request an answer belongs to. It drops what is pending (reported as
//! incomplete), counts one `desync` error, and waits for a *quiet point*: the response side has
//! just ended a complete answer (PostgreSQL: `ReadyForQuery`; MySQL, Redis: the response bytes
//! fed so far end where the client could send again) and then the request side sends. The
//! caller feeds each side in the order the kernel saw the bytes, so "then" is real time:
//!
//! ```text
//! request   ..lost..|  Q "SELECT 1"      ← resync here: first request bytes fed after the quiet point
//! response  ..lost..Z|                   ← quiet point: a complete ReadyForQuery ends the data seen
//! ```
//!
//! What this rule cannot see: a client that keeps answers outstanding *across* its writes
//! (multiplexing clients such as ioredis or lettuce, or several pipelined batches in flight)
//! may still be owed answers to requests sent before the observer joined. Its first operations
//! after the resync would then be paired one answer late. The shift shows up as soon as an
//! answer arrives with nothing pending (an `UnexpectedResponse`/`UnexpectedReply` error, then a
//! new quiet point), MySQL's sequence ids and PostgreSQL's per-message answer types catch most
//! of it earlier, but operations already reported are not taken back. Holding operations after
//! a resync until a second quiet point confirms the pairing would close this; it is not done.
//! Connections seen from their start are not affected.

pub use crate::http1::{EndReason, Side};

/// Where a message (or a group of messages) lies in its direction's stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Extent {
    /// Stream offset of the first byte.
    pub first: u64,
    /// Stream offset of the last byte (inclusive).
    pub last: u64,
}

impl Extent {
    /// Bytes covered.
    pub fn len(&self) -> u64 {
        self.last - self.first + 1
    }

    /// Never true: an extent covers at least one byte.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// This extent grown to end at `last`.
    pub(crate) fn to(self, last: u64) -> Self {
        Self {
            first: self.first,
            last: last.max(self.last),
        }
    }
}

/// Bounds on what one database connection may hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of one message kept to read it (query text, error text, arguments): the rest of a
    /// longer message is counted and skipped, and what was read is marked truncated
    /// (default 64 KiB). Also about the most a direction ever buffers (Redis keeps up to
    /// 1 KiB of fields beside it; MySQL keeps at least 64 bytes of an answer packet).
    pub max_message_bytes: usize,
    /// A declared message length above this is taken as garbage (`TooLarge`), not skipped
    /// (default 256 MiB).
    pub max_declared_len: u64,
    /// Requests awaiting their answer (pipelining); past it the oldest is dropped
    /// (default 256, at least 1).
    pub max_pending: usize,
    /// Prepared statements remembered per connection (default 1024); past it new ones are
    /// not remembered (their executions report no text).
    pub max_statements: usize,
    /// Nesting depth of RESP aggregates (default 32).
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_bytes: 64 * 1024,
            max_declared_len: 256 * 1024 * 1024,
            max_pending: 256,
            max_statements: 1024,
            max_depth: 32,
        }
    }
}

/// Why an operation has no complete answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Incomplete {
    /// The connection ended before the answer did.
    ConnectionClosed,
    /// The connection was reset before the answer ended.
    Reset,
    /// The connection was evicted before the answer ended.
    Evicted,
    /// The process exited before the answer ended.
    ProcessExited,
    /// The parser lost sync (gap, malformed bytes) before the answer ended.
    LostSync,
    /// More requests were pending than `Limits::max_pending`; this one was dropped.
    Dropped,
}

impl Incomplete {
    /// A stable `snake_case` label.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::ConnectionClosed => "connection_closed",
            Self::Reset => "reset",
            Self::Evicted => "evicted",
            Self::ProcessExited => "process_exited",
            Self::LostSync => "lost_sync",
            Self::Dropped => "dropped",
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

/// A length-prefixed message being read: its header has been decoded, its body is kept up to a
/// limit and counted past it. Shared by the PostgreSQL and MySQL readers.
#[derive(Debug)]
pub(crate) struct Body {
    /// Stream offset of the message's first (header) byte.
    pub first: u64,
    /// Bytes of the body kept (at most the keep limit given at start).
    pub kept: Vec<u8>,
    /// Bytes still to keep.
    pub keep_left: usize,
    /// Body bytes not yet read (kept or skipped).
    pub left: u64,
    /// Declared body length.
    pub len: u64,
}

impl Body {
    pub(crate) fn new(first: u64, len: u64, keep: usize) -> Self {
        let keep = usize::try_from(len).unwrap_or(usize::MAX).min(keep);
        Self {
            first,
            // Grows with the bytes that arrive, never by the declared length.
            kept: Vec::new(),
            keep_left: keep,
            left: len,
            len,
        }
    }

    /// Heap bytes held: the kept part of the body.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.kept.capacity()
    }

    /// Takes what it can from `input`; returns the bytes consumed.
    pub(crate) fn take(&mut self, input: &[u8]) -> usize {
        let n = usize::try_from(self.left)
            .unwrap_or(usize::MAX)
            .min(input.len());
        let k = n.min(self.keep_left);
        self.kept.extend_from_slice(&input[..k]);
        self.keep_left -= k;
        self.left -= n as u64;
        n
    }

    /// `len` bytes were not captured: true if they fall inside the skipped part of the body
    /// (nothing is lost), false if they cut what had to be read.
    pub(crate) fn skip_gap(&mut self, len: u64) -> bool {
        if self.keep_left == 0 && len <= self.left {
            self.left -= len;
            true
        } else {
            false
        }
    }

    pub(crate) fn done(&self) -> bool {
        self.left == 0
    }

    /// The body was longer than what was kept.
    pub(crate) fn truncated(&self) -> bool {
        (self.kept.len() as u64) < self.len
    }
}

/// Lossy UTF-8, at most `max` bytes (cut at a character boundary).
pub(crate) fn text(bytes: &[u8], max: usize) -> String {
    let s = String::from_utf8_lossy(&bytes[..bytes.len().min(max)]);
    s.into_owned()
}

/// The quiet-point rule of the module docs, one per connection.
#[derive(Debug, Default)]
pub(crate) struct Quiet {
    /// The response side ended a complete answer and nothing was fed since.
    armed: bool,
}

impl Quiet {
    /// The response side's data so far ends at an answer boundary.
    pub(crate) fn arm(&mut self) {
        self.armed = true;
    }

    /// More response bytes came: the point was not quiet.
    pub(crate) fn disarm(&mut self) {
        self.armed = false;
    }

    /// Request bytes arrive: true if they start right after a quiet point.
    pub(crate) fn take(&mut self) -> bool {
        std::mem::take(&mut self.armed)
    }
}

/// A database protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DbSystem {
    /// PostgreSQL v3 ([`crate::postgres`]).
    Postgres,
    /// MySQL or MariaDB ([`crate::mysql`]).
    Mysql,
    /// Redis RESP2/RESP3 ([`crate::redis`]).
    Redis,
}

/// The protocol usually served on `port`: a hint only, to try first or to break a tie; never
/// a reason to parse a connection whose first bytes say otherwise.
pub fn port_hint(port: u16) -> Option<DbSystem> {
    match port {
        5432 | 6432 => Some(DbSystem::Postgres),
        3306 | 3307 | 33060 => Some(DbSystem::Mysql),
        6379 | 6380 | 26379 => Some(DbSystem::Redis),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use crate::detect::{Detected, detect};

    #[test]
    fn detects_database_first_bytes() {
        let cases: &[(&[u8], Detected)] = &[
            (b"\0\0\0\x4f\0\x03\0\0user\0", Detected::PostgresStartup),
            (b"\0\0\0\x08\x04\xd2\x16\x2f", Detected::PostgresStartup),
            (b"\0\0\0\x08\x04\xd2\x16\x30", Detected::PostgresStartup),
            (b"\0\0\0\x10\x04\xd2\x16\x2e\0\0", Detected::PostgresStartup),
            (b"\0\0\0\x4f\0\x02\0\0", Detected::Unknown),
            (b"\0\0\x40\x00\0\x03\0\0", Detected::Unknown),
            (b"\0\0\0\x4f\0\x03", Detected::NeedMore),
            (b"\x64\0\0\0\x0a5.5.5-10.11", Detected::MysqlGreeting),
            (b"\x64\0\0\x01\x0a5", Detected::Unknown),
            (b"\x64\0\0\0\x0a", Detected::NeedMore),
            (b"*3\r\n$3\r\nSET", Detected::RedisCommand),
            (b"*12\r\n$", Detected::RedisCommand),
            (b"*1\r", Detected::NeedMore),
            (b"*0\r\n$", Detected::Unknown),
            (b"*x\0\0\0", Detected::Unknown),
            (b"*3\r\n*", Detected::Unknown),
            (b"GET / HTTP/1.1\r\n", Detected::Http1Request),
        ];
        for (b, want) in cases {
            assert_eq!(detect(b), *want, "{b:?}");
        }
    }

    #[test]
    fn ports_are_hints() {
        use super::{DbSystem, port_hint};
        assert_eq!(port_hint(5432), Some(DbSystem::Postgres));
        assert_eq!(port_hint(3306), Some(DbSystem::Mysql));
        assert_eq!(port_hint(6379), Some(DbSystem::Redis));
        assert_eq!(port_hint(80), None);
    }
}
