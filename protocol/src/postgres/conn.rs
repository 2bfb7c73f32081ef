//! The public face of the parser: one [`PgConn`] per connection, and the pairing of answers
//! with the request messages that asked for them.

use std::collections::VecDeque;
use std::sync::Arc;

use super::error::{ErrorKind, ParseError};
use super::prepared::{Evicted, Prepared};
use super::reader::{CANCEL, GSSENC, Item, Msg, PROTOCOL_3, Reader, SSL};
use super::{
    CopyDirection, PgCopy, PgError, PgEvent, PgOpKind, PgOperation, PgOutcome, PgStop, Startup,
};
use crate::db::{
    EndReason, Extent, Incomplete, Limits, Quiet, Side, shared_bytes, text, text_within,
};
use crate::mem;

/// The PostgreSQL state of one connection, both directions.
///
/// Feed each direction's bytes in stream order with [`PgConn::data`] (and the two directions
/// in the order they happened), report what was not captured with [`PgConn::gap`], and end
/// with [`PgConn::close`]. Nothing panics, whatever the bytes; memory stays within [`Limits`]
/// and [`MAX_STATEMENT_BYTES`](crate::db::MAX_STATEMENT_BYTES) of statement text.
///
/// ```
/// use sonde_protocol::postgres::{EndReason, Limits, PgConn, PgEvent, Side};
///
/// let mut conn = PgConn::new(Limits::default());
/// let mut out = Vec::new();
/// conn.data(Side::Request, 0, b"\0\0\0\x10\0\x03\0\0user\0u\0\0", &mut out);
/// conn.data(Side::Response, 0, b"R\0\0\0\x08\0\0\0\0Z\0\0\0\x05I", &mut out);
/// conn.data(Side::Request, 16, b"Q\0\0\0\x0eSELECT 1;\0", &mut out);
/// let answer = b"T\0\0\0\x06\0\0D\0\0\0\x06\0\0C\0\0\0\x0dSELECT 1\0Z\0\0\0\x05I";
/// conn.data(Side::Response, 15, answer, &mut out);
/// let [PgEvent::Startup(s), PgEvent::Operation(op)] = &out[..] else { panic!("{out:?}") };
/// assert_eq!(s.user.as_deref(), Some("u"));
/// assert_eq!(op.query.as_deref(), Some("SELECT 1;"));
/// assert_eq!((op.command.as_deref(), op.rows), (Some("SELECT"), Some(1)));
/// assert_eq!((op.request.first, op.request.last), (16, 30));
/// assert_eq!(op.response.map(|r| (r.first, r.last)), Some((15, 48)));
/// ```
///
/// A connection that started before the observer must be made with [`PgConn::joined`]: it
/// reports nothing until it has found its place (see [`crate::db`]). One made with
/// [`PgConn::new`] whose first request bytes are not a startup packet does the same.
#[derive(Debug)]
pub struct PgConn {
    limits: Limits,
    req: Reader,
    resp: Reader,
    slots: VecDeque<Slot>,
    ops: VecDeque<Op>,
    next_id: u64,
    group: Option<Group>,
    prepared: Prepared,
    startup: Option<Box<Startup>>,
    encryption: Option<PgStop>,
    skipping: bool,
    copy_in: Option<u64>,
    quiet: Quiet,
    synced: bool,
    /// A desync error is owed for the current lost period.
    report_lost: bool,
    ended: bool,
    stopped: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SlotKind {
    Startup,
    Query,
    Parse,
    Bind,
    Describe,
    Execute,
    Close,
    Sync,
    /// A `Flush` that ended a preparation: its operation ends when this slot reaches the
    /// front, every answer asked before it having come.
    Flush,
}

#[derive(Debug)]
struct Slot {
    kind: SlotKind,
    op: Option<u64>,
}

/// The extended-protocol messages since the last `Execute`, `Sync` or `Query`.
#[derive(Debug)]
struct Group {
    id: u64,
    has_parse: bool,
}

#[derive(Debug)]
struct Op {
    id: u64,
    done: bool,
    op: PgOperation,
}

impl PgConn {
    /// A connection seen from its first byte.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            req: Reader::new(Side::Request),
            resp: Reader::new(Side::Response),
            slots: VecDeque::new(),
            ops: VecDeque::new(),
            next_id: 0,
            group: None,
            prepared: Prepared::default(),
            startup: None,
            encryption: None,
            skipping: false,
            copy_in: None,
            quiet: Quiet::default(),
            synced: true,
            report_lost: false,
            ended: false,
            stopped: false,
        }
    }

    /// A connection joined in the middle: nothing is reported until a quiet point.
    pub fn joined(limits: Limits) -> Self {
        let mut c = Self::new(limits);
        c.req = Reader::lost(Side::Request);
        c.resp = Reader::lost(Side::Response);
        c.synced = false;
        c.report_lost = true;
        c
    }

    /// Bytes of `side` at stream offset `offset`. A jump forward is taken as a gap; bytes
    /// already seen are ignored. The first call of a side sets where its stream starts.
    pub fn data(&mut self, side: Side, offset: u64, bytes: &[u8], out: &mut Vec<PgEvent>) {
        if self.ended || self.stopped || offset.checked_add(bytes.len() as u64).is_none() {
            return;
        }
        let pos = self.reader(side).pos;
        let mut input = bytes;
        if pos == 0 && offset > 0 && !self.reader(side).mid_message() {
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

    /// `len` bytes of `side` at `offset` were not captured. Inside rows or copy data they are
    /// skipped; anywhere else the connection loses its place.
    pub fn gap(&mut self, side: Side, offset: u64, len: u64, out: &mut Vec<PgEvent>) {
        if self.ended || self.stopped || len == 0 {
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

    /// The connection ended: operations still waiting are reported as incomplete.
    pub fn close(&mut self, reason: EndReason, out: &mut Vec<PgEvent>) {
        if self.ended {
            return;
        }
        self.ended = true;
        if self.stopped {
            return;
        }
        for side in [Side::Request, Side::Response] {
            let r = self.reader(side);
            if r.mid_message() {
                let offset = r.pos;
                error(out, side, ErrorKind::Truncated, offset);
            }
        }
        self.abandon(Incomplete::from(reason), out);
    }

    /// Bytes held for incomplete messages on `side` (at most `max_message_bytes` + 8).
    pub fn buffered(&self, side: Side) -> usize {
        self.reader(side).buffered()
    }

    /// Heap bytes this connection's parser holds now (buffers, tables, remembered statements,
    /// queued requests): what dropping it would free, for the agent's memory budget. An
    /// estimate from capacities and sizes, cheap to compute (no allocation).
    ///
    /// Here: both directions' partial message bodies, the prepared statements and portals
    /// with their names and texts (each text once), the pending operations with their texts
    /// (a text shared with others counted in part) and errors, the answer slots, and a startup
    /// packet not yet answered. O(statements + portals + pending). `size_of::<PgConn>()`
    /// itself is not included.
    pub fn heap_bytes(&self) -> usize {
        let ops: usize = self.ops.iter().map(|o| op_heap_bytes(&o.op)).sum();
        let startup = self.startup.as_ref().map_or(0, |s| {
            std::mem::size_of::<Startup>()
                + [&s.user, &s.database, &s.application_name]
                    .into_iter()
                    .map(|v| mem::opt_string(v.as_ref()))
                    .sum::<usize>()
                + s.error.as_ref().map_or(0, error_heap_bytes)
        });
        self.req.heap_bytes()
            + self.resp.heap_bytes()
            + self.prepared.heap_bytes()
            + mem::deque(&self.ops)
            + ops
            + mem::deque(&self.slots)
            + startup
    }

    /// Operations waiting for their answer (at most `max_pending`).
    pub fn pending(&self) -> usize {
        self.ops.len()
    }

    /// Prepared statements remembered (at most `max_statements`).
    pub fn statements(&self) -> usize {
        self.prepared.statements()
    }

    /// Portals remembered (at most `max_statements`).
    pub fn portals(&self) -> usize {
        self.prepared.portals()
    }

    /// Bytes of statement text remembered for the statements and portals, each text once (at
    /// most [`MAX_STATEMENT_BYTES`](crate::db::MAX_STATEMENT_BYTES)).
    pub fn statement_bytes(&self) -> usize {
        self.prepared.text_bytes()
    }

    /// The parser knows where it is in both directions.
    pub fn is_synced(&self) -> bool {
        self.synced
    }

    /// Parsing stopped for good (encryption, cancel request, or [`PgConn::close`]).
    pub fn is_stopped(&self) -> bool {
        self.stopped || self.ended
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

    fn parse(&mut self, side: Side, mut input: &[u8], out: &mut Vec<PgEvent>) {
        while !self.stopped && self.synced {
            let limits = &self.limits;
            let item = match side {
                Side::Request => self.req.next(&mut input, limits),
                Side::Response => self.resp.next(&mut input, limits),
            };
            let Some(item) = item else { return };
            match item {
                Item::Msg(msg) => match side {
                    Side::Request => self.request(msg, out),
                    Side::Response => self.response(msg, out),
                },
                Item::EncryptionAnswer { byte, offset } => {
                    self.encryption_answer(byte, offset, out)
                }
                Item::Error { kind, offset } => self.lose_sync(side, kind, offset, out),
                Item::Ready => {}
            }
        }
        if !input.is_empty() && !self.stopped {
            self.lost_data(side, input, out);
        }
    }

    /// Bytes while lost: the response side looks for a quiet point, the request side waits
    /// for one.
    fn lost_data(&mut self, side: Side, mut input: &[u8], out: &mut Vec<PgEvent>) {
        if std::mem::take(&mut self.report_lost) {
            let offset = self.reader(side).pos;
            error(out, side, ErrorKind::Desync, offset);
        }
        match side {
            Side::Response => {
                self.quiet.disarm();
                if !self.resp.is_lost() {
                    self.resp.lose();
                }
                while let Some(item) = self.resp.next(&mut input, &self.limits) {
                    if matches!(item, Item::Ready) && input.is_empty() {
                        self.quiet.arm();
                    }
                }
            }
            Side::Request => {
                if self.quiet.take() {
                    self.synced = true;
                    self.req.resume();
                    self.resp.resume();
                    self.parse(side, input, out);
                } else {
                    let _ = self.req.next(&mut input, &self.limits);
                }
            }
        }
    }

    fn lose_sync(&mut self, side: Side, kind: ErrorKind, offset: u64, out: &mut Vec<PgEvent>) {
        error(out, side, kind, offset);
        self.abandon(Incomplete::LostSync, out);
        self.prepared.clear();
        self.req.lose();
        self.resp.lose();
        self.synced = false;
        self.quiet.disarm();
    }

    /// Ends every operation still waiting with `why`.
    fn abandon(&mut self, why: Incomplete, out: &mut Vec<PgEvent>) {
        if let Some(s) = self.startup.take() {
            out.push(PgEvent::Startup(s));
        }
        for op in &mut self.ops {
            if !op.done {
                op.done = true;
                op.op.outcome = PgOutcome::Incomplete(why);
            }
        }
        // A batch that never reached Execute or Sync is not an operation.
        self.ops
            .retain(|o| o.op.kind != PgOpKind::Prepare || o.op.query.is_some());
        self.flush(out);
        self.slots.clear();
        self.group = None;
        self.skipping = false;
        self.copy_in = None;
        self.encryption = None;
    }

    fn encryption_answer(&mut self, byte: u8, offset: u64, out: &mut Vec<PgEvent>) {
        let Some(asked) = self.encryption.take() else {
            return;
        };
        match byte {
            b'S' | b'G' => {
                self.stopped = true;
                out.push(PgEvent::Stopped {
                    reason: asked,
                    response_offset: offset + 1,
                });
            }
            b'N' => {}
            _ => self.lose_sync(
                Side::Response,
                ErrorKind::UnexpectedResponse { tag: byte },
                offset,
                out,
            ),
        }
    }

    fn push_slot(&mut self, kind: SlotKind, op: Option<u64>, offset: u64, out: &mut Vec<PgEvent>) {
        let cap = self.limits.max_pending.max(1);
        if self.slots.len() >= cap.saturating_mul(8) || self.ops.len() > cap {
            self.lose_sync(Side::Request, ErrorKind::TooManyPending, offset, out);
            return;
        }
        self.slots.push_back(Slot { kind, op });
    }

    fn new_op(&mut self, kind: PgOpKind, first: u64, last: u64) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.ops.push_back(Op {
            id,
            done: false,
            op: PgOperation {
                kind,
                query: None,
                query_truncated: false,
                query_evicted: false,
                statement: None,
                portal: None,
                request: Extent { first, last },
                response: None,
                command: None,
                rows: None,
                data_rows: 0,
                statements: 0,
                copy: None,
                suspended: false,
                outcome: PgOutcome::Ok,
            },
        });
        id
    }

    fn op_mut(&mut self, id: Option<u64>) -> Option<&mut PgOperation> {
        let id = id?;
        self.ops
            .iter_mut()
            .find(|o| o.id == id && !o.done)
            .map(|o| &mut o.op)
    }

    /// The open group, started by a message at `first`.
    fn group(&mut self, first: u64, last: u64) -> u64 {
        if let Some(g) = &self.group {
            return g.id;
        }
        let id = self.new_op(PgOpKind::Prepare, first, last);
        self.group = Some(Group {
            id,
            has_parse: false,
        });
        id
    }

    /// Ends the open group at a `Sync` (or a `Query`): a group with a `Parse` and no
    /// `Execute` is a preparation, anything else without an `Execute` is no operation.
    fn end_group(&mut self, last: u64) -> Option<u64> {
        let g = self.group.take()?;
        if g.has_parse {
            if let Some(op) = self.op_mut(Some(g.id)) {
                op.request = op.request.to(last);
            }
            Some(g.id)
        } else {
            self.ops.retain(|o| o.id != g.id);
            None
        }
    }

    /// A `Query` or `FunctionCall` at `first` while a group is open (no `Sync` or `Flush`
    /// came): a preparation in it ends at the message before, at its answers, like one ended
    /// by a `Flush`; the server answers the `Parse` before the query.
    fn end_unsynced_group(&mut self, first: u64, out: &mut Vec<PgEvent>) {
        if let Some(op) = self.end_group(first.saturating_sub(1)) {
            self.push_slot(SlotKind::Flush, Some(op), first, out);
            self.end_flushed(out);
        }
    }

    fn request(&mut self, msg: Msg, out: &mut Vec<PgEvent>) {
        let (first, last) = (msg.first, msg.last);
        let body = &msg.body[..];
        match msg.tag {
            0 => self.startup(msg, out),
            b'Q' => {
                self.end_unsynced_group(first, out);
                let id = self.new_op(PgOpKind::Query, first, last);
                let (q, rest) = cstr(body);
                let (q, cut) = text_within(q, self.limits.max_message_bytes);
                let truncated = cut || (msg.truncated && rest.is_none());
                if let Some(op) = self.op_mut(Some(id)) {
                    op.query = Some(Arc::from(q));
                    op.query_truncated = truncated;
                }
                self.push_slot(SlotKind::Query, Some(id), first, out);
            }
            b'F' => {
                self.end_unsynced_group(first, out);
                let id = self.new_op(PgOpKind::FunctionCall, first, last);
                self.push_slot(SlotKind::Query, Some(id), first, out);
            }
            b'P' => {
                let id = self.group(first, last);
                let (name, rest) = cstr(body);
                let (q, after) = cstr(rest.unwrap_or(&[]));
                let (q, cut) = text_within(q, self.limits.max_message_bytes);
                let q: Arc<str> = Arc::from(q);
                let truncated = cut || (msg.truncated && after.is_none());
                let name = text(name, 256);
                let max = self.limits.max_statements;
                let evicted = self
                    .prepared
                    .parse(name.clone(), Arc::clone(&q), truncated, max);
                count_evicted(out, evicted, first);
                if let Some(g) = &mut self.group {
                    g.has_parse = true;
                }
                if let Some(op) = self.op_mut(Some(id)) {
                    op.query = Some(q);
                    op.query_truncated = truncated;
                    op.statement = (!name.is_empty()).then_some(name);
                    op.request = op.request.to(last);
                }
                self.push_slot(SlotKind::Parse, Some(id), first, out);
            }
            b'B' => {
                let id = self.group(first, last);
                let (portal, rest) = cstr(body);
                let (stmt, _) = cstr(rest.unwrap_or(&[]));
                let statement = text(stmt, 256);
                let portal = text(portal, 256);
                let max = self.limits.max_statements;
                let evicted = self.prepared.bind(portal, statement, max);
                count_evicted(out, evicted, first);
                if let Some(op) = self.op_mut(Some(id)) {
                    op.request = op.request.to(last);
                }
                self.push_slot(SlotKind::Bind, Some(id), first, out);
            }
            b'D' => {
                let id = self.group(first, last);
                if let Some(op) = self.op_mut(Some(id)) {
                    op.request = op.request.to(last);
                }
                self.push_slot(SlotKind::Describe, Some(id), first, out);
            }
            b'E' => {
                let id = self.group(first, last);
                self.group = None;
                let (portal, _) = cstr(body);
                let portal = text(portal, 256);
                let run = self.prepared.execute(&portal);
                if let Some(op) = self.op_mut(Some(id)) {
                    op.kind = PgOpKind::Execute;
                    op.request = op.request.to(last);
                    op.query = run.query;
                    op.query_truncated = run.truncated;
                    op.query_evicted = run.evicted;
                    op.statement = run.statement;
                    op.portal = (!portal.is_empty()).then_some(portal);
                }
                self.push_slot(SlotKind::Execute, Some(id), first, out);
            }
            b'C' => {
                let (kind, name) = body.split_first().map_or((0, &[][..]), |(k, r)| (*k, r));
                let (name, _) = cstr(name);
                let name = text(name, 256);
                match kind {
                    b'S' => self.prepared.close_statement(&name),
                    b'P' => self.prepared.close_portal(&name),
                    _ => {}
                }
                self.push_slot(SlotKind::Close, None, first, out);
            }
            b'S' => {
                let op = self.end_group(last);
                self.push_slot(SlotKind::Sync, op, first, out);
            }
            b'd' => {
                if let Some(op) = self.op_mut(self.copy_in) {
                    op.request = op.request.to(last);
                    if let Some(c) = &mut op.copy {
                        c.bytes += msg.len;
                        c.messages += 1;
                    }
                }
            }
            b'c' | b'f' => {
                if let Some(op) = self.op_mut(self.copy_in) {
                    op.request = op.request.to(last);
                }
                self.copy_in = None;
            }
            // asyncpg prepares with Parse/Describe/Flush and waits for the answers before it
            // sends Bind/Execute/Sync: the preparation is a round trip of its own, and
            // without a Sync to end it, the Flush must.
            b'H' if self.group.as_ref().is_some_and(|g| g.has_parse) => {
                let op = self.end_group(last);
                self.push_slot(SlotKind::Flush, op, first, out);
                self.end_flushed(out);
            }
            // Flush otherwise, Terminate, password/SASL (never read).
            _ => {}
        }
    }

    fn startup(&mut self, msg: Msg, out: &mut Vec<PgEvent>) {
        let body = &msg.body;
        let code = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
        let request = Extent {
            first: msg.first,
            last: msg.last,
        };
        match code {
            SSL | GSSENC => {
                self.encryption = Some(if code == SSL {
                    PgStop::Tls
                } else {
                    PgStop::Gss
                });
                self.resp.expect_encryption_answer();
                self.req.expect_startup();
            }
            CANCEL => {
                let pid = body
                    .get(4..8)
                    .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
                out.push(PgEvent::Cancel {
                    process_id: pid,
                    request,
                });
                out.push(PgEvent::Stopped {
                    reason: PgStop::Cancel,
                    response_offset: self.resp.pos,
                });
                self.stopped = true;
            }
            PROTOCOL_3 => {
                let mut s = Startup {
                    version: ((code >> 16) as u16, code as u16),
                    request,
                    ..Startup::default()
                };
                let mut rest = &body[4..];
                loop {
                    let (k, r) = cstr(rest);
                    let Some(r) = r else { break };
                    if k.is_empty() {
                        break;
                    }
                    let (v, r) = cstr(r);
                    let v = Some(text(v, 256));
                    match k {
                        b"user" => s.user = v,
                        b"database" => s.database = v,
                        b"application_name" => s.application_name = v,
                        _ => {}
                    }
                    let Some(r) = r else { break };
                    rest = r;
                }
                self.startup = Some(Box::new(s));
                self.push_slot(SlotKind::Startup, None, msg.first, out);
            }
            _ => {}
        }
    }

    fn response(&mut self, msg: Msg, out: &mut Vec<PgEvent>) {
        let tag = msg.tag;
        let ext = Extent {
            first: msg.first,
            last: msg.last,
        };
        // Asynchronous messages, any time: part of the answer in progress, if any.
        if matches!(tag, b'N' | b'A' | b'S') {
            if !self.skipping
                && let Some(front) = self.slots.front()
            {
                let id = front.op;
                if front.kind == SlotKind::Startup {
                    if let Some(s) = self.startup.as_mut() {
                        s.response = Some(s.response.map_or(ext, |r| r.to(ext.last)));
                    }
                } else if let Some(op) = self.op_mut(id) {
                    op.response = Some(op.response.map_or(ext, |r| r.to(ext.last)));
                }
            }
            return;
        }
        if self.skipping {
            if tag == b'Z' {
                self.end_skip(out);
            }
            return;
        }
        let Some(front) = self.slots.front() else {
            self.lose_sync(
                Side::Response,
                ErrorKind::UnexpectedResponse { tag },
                msg.first,
                out,
            );
            return;
        };
        let (kind, id) = (front.kind, front.op);
        if kind == SlotKind::Startup {
            let Some(s) = self.startup.as_mut() else {
                self.slots.pop_front();
                return;
            };
            s.response = Some(s.response.map_or(ext, |r| r.to(ext.last)));
            match tag {
                b'R' | b'K' | b'v' => {}
                b'E' | b'Z' => {
                    if tag == b'E' {
                        s.error = Some(pg_error(&msg.body));
                    }
                    self.slots.pop_front();
                    if let Some(s) = self.startup.take() {
                        out.push(PgEvent::Startup(s));
                    }
                }
                _ => self.lose_sync(
                    Side::Response,
                    ErrorKind::UnexpectedResponse { tag },
                    msg.first,
                    out,
                ),
            }
            return;
        }
        if let Some(op) = self.op_mut(id) {
            op.response = Some(op.response.map_or(ext, |r| r.to(ext.last)));
        }
        let ok = match (kind, tag) {
            (SlotKind::Query | SlotKind::Execute, b'E') => {
                if let Some(op) = self.op_mut(id)
                    && op.outcome == PgOutcome::Ok
                {
                    op.outcome = PgOutcome::Error(pg_error(&msg.body));
                }
                if kind == SlotKind::Execute {
                    self.fail_batch(out);
                }
                true
            }
            (_, b'E') => {
                if let Some(op) = self.op_mut(id) {
                    op.outcome = PgOutcome::Error(pg_error(&msg.body));
                }
                self.fail_batch(out);
                true
            }
            (SlotKind::Query, b'Z') => {
                self.finish(out);
                true
            }
            (SlotKind::Query | SlotKind::Execute, b'T' | b'V') => true,
            (SlotKind::Query | SlotKind::Execute, b'D') => {
                if let Some(op) = self.op_mut(id) {
                    op.data_rows += 1;
                }
                true
            }
            (SlotKind::Query | SlotKind::Execute, b'C' | b'I' | b's') => {
                if let Some(op) = self.op_mut(id) {
                    op.statements += 1;
                    if tag == b'C' {
                        let (t, _) = cstr(&msg.body);
                        let (command, rows) = command_tag(t);
                        op.command = Some(command);
                        if let Some(r) = rows {
                            op.rows = Some(op.rows.unwrap_or(0).saturating_add(r));
                        }
                    }
                    if tag == b's' {
                        op.suspended = true;
                        op.statements -= 1;
                    }
                }
                if kind == SlotKind::Execute {
                    self.finish(out);
                }
                true
            }
            (SlotKind::Query | SlotKind::Execute, b'G' | b'H' | b'W') => {
                let direction = match tag {
                    b'G' => CopyDirection::In,
                    b'H' => CopyDirection::Out,
                    _ => CopyDirection::Both,
                };
                if tag != b'H' {
                    self.copy_in = id;
                }
                if let Some(op) = self.op_mut(id) {
                    op.copy = Some(PgCopy {
                        direction,
                        bytes: 0,
                        messages: 0,
                    });
                }
                true
            }
            (SlotKind::Query | SlotKind::Execute, b'd' | b'c') => {
                if let Some(op) = self.op_mut(id)
                    && let Some(c) = &mut op.copy
                    && tag == b'd'
                {
                    c.bytes += msg.len;
                    c.messages += 1;
                }
                true
            }
            (SlotKind::Parse, b'1')
            | (SlotKind::Bind, b'2')
            | (SlotKind::Close, b'3')
            | (SlotKind::Describe, b'T' | b'n') => {
                self.slots.pop_front();
                self.end_flushed(out);
                true
            }
            (SlotKind::Describe, b't') => true,
            (SlotKind::Sync, b'Z') => {
                self.finish(out);
                true
            }
            _ => false,
        };
        if !ok {
            self.lose_sync(
                Side::Response,
                ErrorKind::UnexpectedResponse { tag },
                msg.first,
                out,
            );
        }
    }

    /// The front slot ended its operation.
    fn finish(&mut self, out: &mut Vec<PgEvent>) {
        if let Some(slot) = self.slots.pop_front()
            && let Some(id) = slot.op
            && let Some(o) = self.ops.iter_mut().find(|o| o.id == id)
        {
            o.done = true;
        }
        self.flush(out);
    }

    /// Ends the operations of the `Flush` slots now at the front: all they waited for came.
    fn end_flushed(&mut self, out: &mut Vec<PgEvent>) {
        while self
            .slots
            .front()
            .is_some_and(|s| s.kind == SlotKind::Flush)
        {
            self.finish(out);
        }
    }

    /// An error in the extended protocol: the server skips everything up to `Sync`.
    fn fail_batch(&mut self, out: &mut Vec<PgEvent>) {
        self.skipping = true;
        if let Some(slot) = self.slots.front()
            && let Some(id) = slot.op
        {
            // Its Execute, if already sent, is the end of this operation.
            if let Some(o) = self.ops.iter_mut().find(|o| o.id == id)
                && o.op.kind != PgOpKind::Prepare
            {
                o.done = true;
            }
        }
        self.flush(out);
    }

    /// `ReadyForQuery` after an error: every message up to the `Sync` was skipped.
    fn end_skip(&mut self, out: &mut Vec<PgEvent>) {
        self.skipping = false;
        while let Some(slot) = self.slots.pop_front() {
            if let Some(id) = slot.op
                && let Some(o) = self.ops.iter_mut().find(|o| o.id == id)
                && !o.done
            {
                o.done = true;
                if matches!(o.op.outcome, PgOutcome::Ok) {
                    o.op.outcome = PgOutcome::NotExecuted;
                }
            }
            if slot.kind == SlotKind::Sync {
                break;
            }
        }
        // A group cut by the Sync never had its Execute: its error still counts.
        self.ops
            .retain(|o| !(o.done && o.op.kind == PgOpKind::Prepare && o.op.query.is_none()));
        self.flush(out);
    }

    fn flush(&mut self, out: &mut Vec<PgEvent>) {
        while self.ops.front().is_some_and(|o| o.done) {
            if let Some(o) = self.ops.pop_front() {
                out.push(PgEvent::Operation(Box::new(o.op)));
            }
        }
    }
}

/// Heap bytes an operation's strings hold (its share of a text it shares).
fn op_heap_bytes(op: &PgOperation) -> usize {
    let strings: usize = [&op.statement, &op.portal, &op.command]
        .into_iter()
        .map(|s| mem::opt_string(s.as_ref()))
        .sum::<usize>()
        + shared_bytes(op.query.as_ref());
    let error = match &op.outcome {
        PgOutcome::Error(e) => error_heap_bytes(e),
        _ => 0,
    };
    strings + error
}

fn error_heap_bytes(e: &PgError) -> usize {
    e.severity.capacity() + e.code.capacity() + e.message.capacity()
}

fn error(out: &mut Vec<PgEvent>, side: Side, kind: ErrorKind, offset: u64) {
    out.push(PgEvent::Error(ParseError { side, offset, kind }));
}

/// One event per statement and portal let go by the message at `offset`.
fn count_evicted(out: &mut Vec<PgEvent>, evicted: Evicted, offset: u64) {
    for _ in 0..evicted.statements {
        error(out, Side::Request, ErrorKind::StatementEvicted, offset);
    }
    for _ in 0..evicted.portals {
        error(out, Side::Request, ErrorKind::PortalEvicted, offset);
    }
}

/// A NUL-terminated string and what follows it (`None` when there is no NUL).
fn cstr(b: &[u8]) -> (&[u8], Option<&[u8]>) {
    match b.iter().position(|&c| c == 0) {
        Some(i) => (&b[..i], Some(&b[i + 1..])),
        None => (b, None),
    }
}

/// `ErrorResponse` fields: `(code:u8 value\0)* \0`.
fn pg_error(mut b: &[u8]) -> PgError {
    let mut e = PgError::default();
    let mut sev_v = None;
    while let Some((&code, rest)) = b.split_first() {
        if code == 0 {
            break;
        }
        let (v, r) = cstr(rest);
        match code {
            b'S' => e.severity = text(v, 16),
            b'V' => sev_v = Some(text(v, 16)),
            b'C' => e.code = text(v, 5),
            b'M' => e.message = text(v, 1024),
            _ => {}
        }
        let Some(r) = r else { break };
        b = r;
    }
    if let Some(v) = sev_v {
        e.severity = v;
    }
    e
}

/// `INSERT 0 5` → (`INSERT`, 5); `SELECT 3` → (`SELECT`, 3); `CREATE TABLE` → (`CREATE TABLE`, -).
pub(crate) fn command_tag(tag: &[u8]) -> (String, Option<u64>) {
    let t = String::from_utf8_lossy(tag);
    let words: Vec<&str> = t.split(' ').collect();
    let numeric = |w: &str| !w.is_empty() && w.bytes().all(|b| b.is_ascii_digit());
    let cmd_words: Vec<&str> = words.iter().copied().take_while(|w| !numeric(w)).collect();
    let command = cmd_words.join(" ");
    let rows = if cmd_words.len() < words.len() {
        words.last().and_then(|w| w.parse().ok())
    } else {
        None
    };
    (command, rows)
}
