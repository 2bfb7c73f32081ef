//! One [`RedisConn`] per connection: commands queue up, replies answer them in order.

use std::collections::VecDeque;

use super::error::{ErrorKind, ParseError};
use super::resp::{Item, Reader, Value};
use super::{CONTAINER_COMMANDS, RedisError, RedisEvent, RedisOperation, Reply, ReplyKind};
use crate::db::{EndReason, Extent, Incomplete, Limits, Quiet, Side, text};
use crate::mem;

/// The Redis state of one connection, both directions.
///
/// ```
/// use sonde_protocol::redis::{Limits, RedisConn, RedisEvent, Side};
///
/// let mut conn = RedisConn::new(Limits::default());
/// let mut out = Vec::new();
/// conn.data(Side::Request, 0, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\nPING\r\n", &mut out);
/// conn.data(Side::Response, 0, b"+OK\r\n+PONG\r\n", &mut out);
/// let [RedisEvent::Operation(set), RedisEvent::Operation(ping)] = &out[..] else { panic!() };
/// assert_eq!((set.query_text().as_str(), set.request.last), ("SET ? ?", 26));
/// assert_eq!((ping.command.as_str(), ping.response.unwrap().first), ("PING", 5));
/// ```
#[derive(Debug)]
pub struct RedisConn {
    limits: Limits,
    req: Reader,
    resp: Reader,
    pending: VecDeque<Pending>,
    database: Option<u32>,
    /// `SELECT` queued in a transaction.
    queued_select: Option<u32>,
    subscribed: bool,
    /// `CLIENT REPLY OFF` is in effect.
    replies_off: bool,
    /// `CLIENT REPLY SKIP`: the next command gets no reply.
    skip_next: bool,
    quiet: Quiet,
    synced: bool,
    report_lost: bool,
    ended: bool,
}

#[derive(Debug)]
struct Pending {
    op: RedisOperation,
    /// Confirmations still expected for a (un)subscribe command; `None`: one reply.
    confirmations: Option<u64>,
    /// The lower-case confirmation kind it waits for (`subscribe`, `unsubscribe`, ...).
    confirm_kind: Option<&'static str>,
    /// `SELECT n`: the index it switches to.
    select: Option<u32>,
}

const SUBSCRIBE_KINDS: &[&str] = &[
    "subscribe",
    "psubscribe",
    "ssubscribe",
    "unsubscribe",
    "punsubscribe",
    "sunsubscribe",
];
const MESSAGE_KINDS: &[&str] = &["message", "pmessage", "smessage"];

impl RedisConn {
    /// A connection seen from its first byte (database 0).
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            req: Reader::new(Side::Request),
            resp: Reader::new(Side::Response),
            pending: VecDeque::new(),
            database: Some(0),
            queued_select: None,
            subscribed: false,
            replies_off: false,
            skip_next: false,
            quiet: Quiet::default(),
            synced: true,
            report_lost: false,
            ended: false,
        }
    }

    /// A connection joined in the middle: nothing is reported until a quiet point (the reply
    /// bytes seen so far end with CRLF, then the client sends an array command).
    pub fn joined(limits: Limits) -> Self {
        let mut c = Self::new(limits);
        c.req.lose();
        c.resp.lose();
        c.synced = false;
        c.report_lost = true;
        c.database = None;
        c
    }

    /// Bytes of `side` at stream offset `offset` (a jump forward is a gap; bytes already seen
    /// are ignored).
    pub fn data(&mut self, side: Side, offset: u64, bytes: &[u8], out: &mut Vec<RedisEvent>) {
        if self.ended || offset.checked_add(bytes.len() as u64).is_none() {
            return;
        }
        let r = self.reader(side);
        let pos = r.pos;
        let mut input = bytes;
        if pos == 0 && offset > 0 && !r.mid_value() {
            self.reader_mut(side).start_at(offset);
        } else if offset > pos {
            self.gap(side, pos, offset - pos, out);
        } else if offset < pos {
            let skip = usize::try_from(pos - offset).unwrap_or(usize::MAX);
            input = input.get(skip..).unwrap_or(&[]);
        }
        if input.is_empty() {
            return;
        }
        if !self.synced {
            self.lost_data(side, input, out);
            return;
        }
        self.parse(side, input, out);
    }

    /// `len` bytes of `side` at `offset` were not captured.
    pub fn gap(&mut self, side: Side, offset: u64, len: u64, out: &mut Vec<RedisEvent>) {
        if self.ended || len == 0 {
            return;
        }
        let harmless = self.reader_mut(side).gap(len);
        if self.synced && !harmless {
            self.lose_sync(side, ErrorKind::Gap, offset, out);
        }
        if !self.synced && side == Side::Response {
            self.quiet.disarm();
        }
    }

    /// The connection ended: commands still waiting are reported as incomplete.
    pub fn close(&mut self, reason: EndReason, out: &mut Vec<RedisEvent>) {
        if self.ended {
            return;
        }
        self.ended = true;
        for side in [Side::Request, Side::Response] {
            let r = self.reader(side);
            if self.synced && r.mid_value() {
                out.push(RedisEvent::Error(ParseError {
                    side,
                    offset: r.pos,
                    kind: ErrorKind::Truncated,
                }));
            }
        }
        self.abandon(Incomplete::from(reason), out);
    }

    /// Bytes held for incomplete values on `side` (bounded by `max_message_bytes` plus a few
    /// kept elements).
    pub fn buffered(&self, side: Side) -> usize {
        self.reader(side).buffered()
    }

    /// Heap bytes this connection's parser holds now (buffers, tables, remembered statements,
    /// queued requests): what dropping it would free, for the agent's memory budget. An
    /// estimate from capacities and sizes, cheap to compute (no allocation).
    ///
    /// Here: both directions' line or bulk string being read with the value in progress, and
    /// the commands waiting for their reply with their names. O(pending).
    /// `size_of::<RedisConn>()` itself is not included.
    pub fn heap_bytes(&self) -> usize {
        let pending: usize = self.pending.iter().map(|p| op_heap_bytes(&p.op)).sum();
        self.req.heap_bytes() + self.resp.heap_bytes() + mem::deque(&self.pending) + pending
    }

    /// Commands waiting for their reply (at most `max_pending`).
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// The parser knows where it is in both directions.
    pub fn is_synced(&self) -> bool {
        self.synced
    }

    /// The database index in use, if known.
    pub fn database(&self) -> Option<u32> {
        self.database
    }

    fn reader(&self, side: Side) -> &Reader {
        match side {
            Side::Request => &self.req,
            Side::Response => &self.resp,
        }
    }

    fn reader_mut(&mut self, side: Side) -> &mut Reader {
        match side {
            Side::Request => &mut self.req,
            Side::Response => &mut self.resp,
        }
    }

    fn parse(&mut self, side: Side, mut input: &[u8], out: &mut Vec<RedisEvent>) {
        while self.synced {
            let item = match side {
                Side::Request => self.req.next(&mut input, &self.limits),
                Side::Response => self.resp.next(&mut input, &self.limits),
            };
            match item {
                None => return,
                Some(Item::Value(v)) => match side {
                    Side::Request => self.command(v, out),
                    Side::Response => self.reply(v, out),
                },
                Some(Item::Error { kind, offset }) => self.lose_sync(side, kind, offset, out),
            }
        }
        if !input.is_empty() {
            self.lost_data(side, input, out);
        }
    }

    fn lost_data(&mut self, side: Side, mut input: &[u8], out: &mut Vec<RedisEvent>) {
        if std::mem::take(&mut self.report_lost) {
            out.push(RedisEvent::Error(ParseError {
                side,
                offset: self.reader(side).pos,
                kind: ErrorKind::Desync,
            }));
        }
        match side {
            Side::Response => {
                if !self.resp.is_lost() {
                    self.resp.lose();
                }
                let _ = self.resp.next(&mut input, &self.limits);
                if self.resp.at_line_end {
                    self.quiet.arm();
                } else {
                    self.quiet.disarm();
                }
            }
            Side::Request => {
                if self.quiet.take() && looks_like_command(input) {
                    self.synced = true;
                    self.req.resume();
                    self.resp.resume();
                    self.parse(side, input, out);
                } else {
                    self.quiet.disarm();
                    if !self.req.is_lost() {
                        self.req.lose();
                    }
                    let _ = self.req.next(&mut input, &self.limits);
                }
            }
        }
    }

    fn lose_sync(&mut self, side: Side, kind: ErrorKind, offset: u64, out: &mut Vec<RedisEvent>) {
        out.push(RedisEvent::Error(ParseError { side, offset, kind }));
        self.abandon(Incomplete::LostSync, out);
        self.req.lose();
        self.resp.lose();
        self.synced = false;
        self.quiet.disarm();
        self.database = None;
        self.subscribed = false;
        self.replies_off = false;
        self.skip_next = false;
    }

    fn abandon(&mut self, why: Incomplete, out: &mut Vec<RedisEvent>) {
        for mut p in self.pending.drain(..) {
            p.op.incomplete = Some(why);
            out.push(RedisEvent::Operation(Box::new(p.op)));
        }
    }

    fn command(&mut self, v: Value, out: &mut Vec<RedisEvent>) {
        let Some(name) = v.items.first() else {
            return;
        };
        let command = text(name, 64).to_ascii_uppercase();
        let subcommand = if CONTAINER_COMMANDS.contains(&command.as_str()) {
            v.items
                .get(1)
                .filter(|s| {
                    !s.is_empty()
                        && s.iter()
                            .all(|&b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                })
                .map(|s| text(s, 32).to_ascii_uppercase())
        } else {
            None
        };
        let args = v.count.saturating_sub(1);
        let lower = command.to_ascii_lowercase();
        let confirm_kind = SUBSCRIBE_KINDS.iter().copied().find(|k| *k == lower);
        let confirmations = confirm_kind.map(|_| args.max(1));
        let select = (command == "SELECT")
            .then(|| v.items.get(1).and_then(|d| text(d, 10).parse().ok()))
            .flatten();
        let op = RedisOperation {
            command,
            subcommand,
            args,
            inline: v.kind == b'i',
            database: self.database,
            request: Extent {
                first: v.first,
                last: v.last,
            },
            response: None,
            reply: None,
            incomplete: None,
        };
        // CLIENT REPLY OFF|SKIP|ON: commands the server will not answer are reported at once.
        let mut unanswered = std::mem::take(&mut self.skip_next) || self.replies_off;
        if op.command == "CLIENT" && op.subcommand.as_deref() == Some("REPLY") {
            let mode = v.items.get(2).map(|m| text(m, 8).to_ascii_uppercase());
            match mode.as_deref() {
                Some("OFF") => {
                    self.replies_off = true;
                    unanswered = true;
                }
                Some("SKIP") => {
                    self.skip_next = !self.replies_off;
                    unanswered = true;
                }
                Some("ON") => {
                    self.replies_off = false;
                    unanswered = false;
                }
                _ => {}
            }
        }
        if unanswered {
            out.push(RedisEvent::Operation(Box::new(op)));
            return;
        }
        if self.pending.len() >= self.limits.max_pending.max(1) {
            self.lose_sync(Side::Request, ErrorKind::TooManyPending, v.first, out);
            return;
        }
        self.pending.push_back(Pending {
            op,
            confirmations,
            confirm_kind,
            select,
        });
    }

    fn reply(&mut self, v: Value, out: &mut Vec<RedisEvent>) {
        let ext = Extent {
            first: v.first,
            last: v.last,
        };
        let aggregate = matches!(v.kind, b'>' | b'*');
        let first = v
            .items
            .first()
            .map(|k| text(k, 32).to_ascii_lowercase())
            .unwrap_or_default();
        let waiting = self
            .pending
            .front()
            .is_some_and(|p| p.confirm_kind.is_some());
        let pubsub = v.kind == b'>' || (v.kind == b'*' && (self.subscribed || waiting));
        if aggregate && pubsub {
            if let Some(kind) = SUBSCRIBE_KINDS.iter().copied().find(|k| *k == first) {
                let count: Option<i64> = v.items.get(2).and_then(|c| text(c, 20).parse().ok());
                if let Some(c) = count {
                    self.subscribed = c > 0;
                }
                if let Some(p) = self.pending.front_mut()
                    && p.confirm_kind == Some(kind)
                {
                    p.op.response = Some(p.op.response.map_or(ext, |r| r.to(ext.last)));
                    p.op.database = self.database;
                    let left = p.confirmations.unwrap_or(1).saturating_sub(1);
                    p.confirmations = Some(left);
                    if left == 0 {
                        p.op.reply = Some(Reply {
                            kind: if v.kind == b'>' {
                                ReplyKind::Push
                            } else {
                                ReplyKind::Array
                            },
                            len: u64::try_from(v.len).ok(),
                            error: None,
                        });
                        self.complete(out);
                    }
                    return;
                }
                out.push(RedisEvent::Push {
                    kind: first,
                    response: ext,
                });
                return;
            }
            if v.kind == b'>' || MESSAGE_KINDS.contains(&first.as_str()) {
                out.push(RedisEvent::Push {
                    kind: first,
                    response: ext,
                });
                return;
            }
        }
        let Some(p) = self.pending.front_mut() else {
            self.lose_sync(Side::Response, ErrorKind::UnexpectedReply, v.first, out);
            return;
        };
        let kind = match v.kind {
            b'+' => ReplyKind::Simple,
            b'-' | b'!' => ReplyKind::Error,
            b':' => ReplyKind::Integer,
            b'_' => ReplyKind::Null,
            b'$' | b'=' | b'*' | b'%' | b'~' if v.len < 0 => ReplyKind::Null,
            b'$' | b'=' => ReplyKind::Bulk,
            b'*' => ReplyKind::Array,
            b'%' => ReplyKind::Map,
            b'~' => ReplyKind::Set,
            _ => ReplyKind::Number,
        };
        let error = (kind == ReplyKind::Error).then(|| {
            let t = text(&v.text, usize::MAX);
            let (code, message) = t.split_once(' ').unwrap_or((&t, ""));
            RedisError {
                code: code.to_string(),
                message: message.to_string(),
            }
        });
        // The database a command ran in is the one in effect when the server reached it.
        p.op.database = self.database;
        if p.select.is_some() && kind == ReplyKind::Simple {
            if v.text == b"OK" {
                self.database = p.select;
            } else {
                // QUEUED inside MULTI: it takes effect at EXEC.
                self.queued_select = p.select;
            }
        }
        match p.op.command.as_str() {
            "EXEC" if kind == ReplyKind::Array && self.queued_select.is_some() => {
                self.database = self.queued_select.take();
            }
            "EXEC" | "DISCARD" => self.queued_select = None,
            _ => {}
        }
        p.op.response = Some(ext);
        p.op.reply = Some(Reply {
            kind,
            len: u64::try_from(v.len).ok().filter(|_| {
                matches!(
                    kind,
                    ReplyKind::Array | ReplyKind::Map | ReplyKind::Set | ReplyKind::Bulk
                )
            }),
            error,
        });
        self.complete(out);
    }

    fn complete(&mut self, out: &mut Vec<RedisEvent>) {
        if let Some(p) = self.pending.pop_front() {
            out.push(RedisEvent::Operation(Box::new(p.op)));
        }
    }
}

/// Heap bytes an operation's strings hold.
fn op_heap_bytes(op: &RedisOperation) -> usize {
    let error = op
        .reply
        .as_ref()
        .and_then(|r| r.error.as_ref())
        .map_or(0, |e| e.code.capacity() + e.message.capacity());
    op.command.capacity() + mem::opt_string(op.subcommand.as_ref()) + error
}

/// `*<digits>\r\n$`, or a prefix of it: how an array command starts.
fn looks_like_command(b: &[u8]) -> bool {
    let Some(rest) = b.strip_prefix(b"*") else {
        return false;
    };
    let digits = rest.iter().take_while(|c| c.is_ascii_digit()).count();
    if digits == 0 {
        return false;
    }
    let tail = &rest[digits..];
    let want = b"\r\n$";
    let n = tail.len().min(3);
    tail[..n] == want[..n]
}
