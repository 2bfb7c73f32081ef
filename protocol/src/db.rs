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

use std::collections::HashMap;
use std::sync::Arc;

pub use crate::http1::{EndReason, Side};

use crate::mem;

/// Bytes of prepared statement text one PostgreSQL or MySQL connection keeps: the texts of its
/// statements, and of PostgreSQL portals whose statement is gone, each text counted once
/// however many statements, portals and operations share it. Past it the least recently used
/// texts are let go (counted, and their executions report no text, never another's).
///
/// Without it, the client decides: 1,024 statements (`Limits::max_statements`) of 64 KiB
/// (`Limits::max_message_bytes`) are 64 MiB on one connection, and as many again when each
/// PostgreSQL portal kept a copy of its statement's text. 1 MiB holds an application's usual working set many times over (pgx caches 512
/// statements, most under 1 KiB) while one connection can fill at most 1/64 of the agent's
/// default state budget (`[capture] state_budget_bytes`, 64 MiB).
pub const MAX_STATEMENT_BYTES: usize = 1024 * 1024;

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
    /// Prepared statements remembered per connection, and PostgreSQL portals (default 1024
    /// of each). Past it the least recently used is let go: counted (a `statement_evicted` or
    /// `portal_evicted` error event), and its executions report no text, marked
    /// `query_evicted`. Their texts are bounded by [`MAX_STATEMENT_BYTES`] too.
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

/// Lossy UTF-8 of at most `max` input bytes (invalid bytes become U+FFFD, so the text may be
/// longer than `max`: see [`text_within`]).
pub(crate) fn text(bytes: &[u8], max: usize) -> String {
    let s = String::from_utf8_lossy(&bytes[..bytes.len().min(max)]);
    s.into_owned()
}

/// Lossy UTF-8 of `bytes`, at most `max` bytes of text (cut at a character boundary), and
/// whether it was cut: invalid bytes each become a 3-byte U+FFFD, so without the cut a text
/// could be three times the bytes read.
pub(crate) fn text_within(bytes: &[u8], max: usize) -> (String, bool) {
    let mut s = String::from_utf8_lossy(&bytes[..bytes.len().min(max)]).into_owned();
    if s.len() <= max {
        return (s, bytes.len() > max);
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    (s, true)
}

/// An operation's share of the heap bytes of a text it may share with others (statements,
/// operations): the text's length over the number of holders, so that the shares add up to
/// about the text once.
pub(crate) fn shared_bytes(text: Option<&Arc<str>>) -> usize {
    text.map_or(0, |t| t.len() / Arc::strong_count(t))
}

/// Which text of a [`Texts`] table.
pub(crate) type TextId = u64;

/// The prepared statement texts of one connection, each kept once with the number of
/// statements and portals that refer to it, within [`MAX_STATEMENT_BYTES`]. The parser keeps
/// its names (statement, portal, statement id) beside it, pointing here by [`TextId`], and
/// makes room before it adds ([`Texts::fits`], [`Texts::least_used`]).
#[derive(Debug, Default)]
pub(crate) struct Texts {
    held: HashMap<TextId, Held>,
    next_id: TextId,
    /// A clock of uses: each add or use takes the next tick.
    clock: u64,
    /// Bytes of the texts held: at most `MAX_STATEMENT_BYTES`.
    bytes: usize,
}

#[derive(Debug)]
struct Held {
    text: Arc<str>,
    truncated: bool,
    /// Statements and portals that refer to it; it goes with the last.
    refs: u32,
    /// The tick of its last preparation, bind or execution.
    used: u64,
}

impl Texts {
    /// Bytes of the texts held (each once).
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// A text of `len` bytes can be added without going over [`MAX_STATEMENT_BYTES`].
    pub(crate) fn fits(&self, len: usize) -> bool {
        self.bytes.saturating_add(len) <= MAX_STATEMENT_BYTES
    }

    /// Keeps `text`, referred to once. The caller made room ([`Texts::fits`]).
    pub(crate) fn add(&mut self, text: Arc<str>, truncated: bool) -> TextId {
        let id = self.next_id;
        self.next_id += 1;
        self.bytes += text.len();
        let used = self.tick();
        self.held.insert(
            id,
            Held {
                text,
                truncated,
                refs: 1,
                used,
            },
        );
        id
    }

    /// One more statement or portal refers to `id`; it counts as a use.
    pub(crate) fn retain(&mut self, id: TextId) {
        let used = self.tick();
        if let Some(h) = self.held.get_mut(&id) {
            h.refs += 1;
            h.used = used;
        }
    }

    /// One statement or portal less refers to `id`: the last one lets the text go.
    pub(crate) fn release(&mut self, id: TextId) {
        if let Some(h) = self.held.get_mut(&id) {
            h.refs = h.refs.saturating_sub(1);
            if h.refs == 0 {
                self.evict(id);
            }
        }
    }

    /// The text of `id` (shared, not copied) and whether it was cut; a use.
    pub(crate) fn get(&mut self, id: TextId) -> Option<(Arc<str>, bool)> {
        let used = self.tick();
        let h = self.held.get_mut(&id)?;
        h.used = used;
        Some((Arc::clone(&h.text), h.truncated))
    }

    /// When `id` was last used (`None` once let go).
    pub(crate) fn last_use(&self, id: TextId) -> Option<u64> {
        self.held.get(&id).map(|h| h.used)
    }

    /// The text used least recently.
    pub(crate) fn least_used(&self) -> Option<TextId> {
        self.held
            .iter()
            .min_by_key(|(_, h)| h.used)
            .map(|(id, _)| *id)
    }

    /// Lets `id` go whoever refers to it (the caller forgets those references).
    pub(crate) fn evict(&mut self, id: TextId) {
        if let Some(h) = self.held.remove(&id) {
            self.bytes -= h.text.len();
        }
    }

    /// A tick of the use clock, for names the parser orders by use itself (portals).
    pub(crate) fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    pub(crate) fn clear(&mut self) {
        self.held.clear();
        self.bytes = 0;
    }

    /// Heap bytes: the table and the texts.
    pub(crate) fn heap_bytes(&self) -> usize {
        mem::hash_map(&self.held) + self.bytes
    }
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
    fn text_within_cuts_what_invalid_bytes_grow() {
        use super::text_within;
        assert_eq!(text_within(b"SELECT 1", 64), ("SELECT 1".to_owned(), false));
        assert_eq!(text_within(b"SELECT 1", 6), ("SELECT".to_owned(), true));
        // Three U+FFFD are 9 bytes: 7 keep two whole ones.
        assert_eq!(
            text_within(&[0xff; 3], 7),
            ("\u{fffd}\u{fffd}".to_owned(), true)
        );
        assert_eq!(text_within("é".as_bytes(), 1), (String::new(), true));
    }

    #[test]
    fn texts_are_kept_once_and_go_with_their_last_reference() {
        use super::{MAX_STATEMENT_BYTES, Texts};
        use std::sync::Arc;
        let mut t = Texts::default();
        let a = t.add(Arc::from("SELECT a"), false);
        let b = t.add(Arc::from("SELECT bb"), true);
        t.retain(a);
        assert_eq!(t.bytes(), 17);
        t.release(a);
        assert_eq!(t.bytes(), 17, "one reference left");
        // b was used last: a goes first.
        assert_eq!(t.get(b).map(|(q, cut)| (q.len(), cut)), Some((9, true)));
        assert_eq!(t.least_used(), Some(a));
        t.release(a);
        assert_eq!((t.bytes(), t.get(a)), (9, None));
        assert!(t.fits(MAX_STATEMENT_BYTES - 9) && !t.fits(MAX_STATEMENT_BYTES - 8));
        t.evict(b);
        assert_eq!((t.bytes(), t.least_used()), (0, None));
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
