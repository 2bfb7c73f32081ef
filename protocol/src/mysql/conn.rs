//! One [`MyConn`] per connection: the handshake, then commands and their answers.

use std::collections::VecDeque;
use std::sync::Arc;

use super::error::{ErrorKind, ParseError};
use super::packet::{Item, Msg, Reader};
use super::prepared::Prepared;
use super::{Command, Handshake, MyError, MyEvent, MyOperation, MyStop, caps};
use crate::db::{
    EndReason, Extent, Incomplete, Limits, Quiet, Side, shared_bytes, text, text_within,
};
use crate::mem;

/// Bytes kept of an answer packet: enough for OK, EOF, ERR and prepare-OK packets.
const KEEP_RESPONSE: usize = 600;
/// `SERVER_MORE_RESULTS_EXISTS` in the status flags.
const MORE_RESULTS: u16 = 0x0008;

/// The MySQL/MariaDB state of one connection, both directions.
///
/// ```
/// use sonde_protocol::mysql::{Limits, MyConn, MyEvent, Side};
///
/// // Joined after the handshake: found its place at the first command after a quiet point.
/// let mut conn = MyConn::joined(Limits::default());
/// let mut out = Vec::new();
/// conn.data(Side::Response, 0, b"\x07\0\0\x01\0\0\0\x02\0\0\0", &mut out); // an OK: quiet
/// conn.data(Side::Request, 0, b"\x09\0\0\0\x03SELECT 1", &mut out);
/// conn.data(Side::Response, 11, b"\x07\0\0\x01\0\x01\0\x02\0\0\0", &mut out);
/// let [MyEvent::Error(_), MyEvent::Operation(op)] = &out[..] else { panic!("{out:?}") };
/// assert_eq!((op.query.as_deref(), op.affected_rows), (Some("SELECT 1"), Some(1)));
/// assert_eq!(op.response.map(|r| (r.first, r.last)), Some((11, 21)));
/// ```
#[derive(Debug)]
pub struct MyConn {
    limits: Limits,
    req: Reader,
    resp: Reader,
    phase: Phase,
    handshake: Option<Box<Handshake>>,
    server_caps: u32,
    /// Capabilities both sides set (0 when joined midway).
    shared_caps: u32,
    /// Sequence id the next auth packet from the server must have.
    auth_seq: u8,
    pending: VecDeque<Cmd>,
    prepared: Prepared,
    database: Option<String>,
    quiet: Quiet,
    synced: bool,
    report_lost: bool,
    ended: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for the server's greeting.
    Greeting,
    /// Waiting for the client's handshake response.
    Login,
    /// Authentication packets until OK or ERR.
    Auth,
    Command,
    Stopped,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answer {
    First,
    Columns(u64),
    ColumnsEof,
    Rows,
    Params {
        params: u64,
        cols: u64,
    },
    ParamsEof {
        cols: u64,
    },
    Cols(u64),
    ColsEof,
    /// `LOCAL INFILE`: the client sends the file, then the server's OK or ERR.
    Infile,
}

#[derive(Debug)]
struct Cmd {
    op: MyOperation,
    answer: Answer,
    next_seq: u8,
    /// `COM_INIT_DB` or `USE`: the schema it switches to (`Some(None)`: unknown).
    init_db: Option<Option<String>>,
}

impl Cmd {
    /// Heap bytes its operation's strings hold.
    fn heap_bytes(&self) -> usize {
        let op = &self.op;
        shared_bytes(op.query.as_ref())
            + mem::opt_string(op.database.as_ref())
            + op.error.as_ref().map_or(0, error_heap_bytes)
            + self
                .init_db
                .as_ref()
                .map_or(0, |db| mem::opt_string(db.as_ref()))
    }
}

fn error_heap_bytes(e: &MyError) -> usize {
    mem::opt_string(e.sql_state.as_ref()) + e.message.capacity()
}

impl MyConn {
    /// A connection seen from its first byte (the server's greeting).
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            req: Reader::new(),
            resp: Reader::new(),
            phase: Phase::Greeting,
            handshake: None,
            server_caps: 0,
            shared_caps: 0,
            auth_seq: 0,
            pending: VecDeque::new(),
            prepared: Prepared::default(),
            database: None,
            quiet: Quiet::default(),
            synced: true,
            report_lost: false,
            ended: false,
        }
    }

    /// A connection joined in the middle: nothing is reported until a quiet point (response
    /// bytes, then a request that starts like a command: sequence 0, a known command byte).
    pub fn joined(limits: Limits) -> Self {
        let mut c = Self::new(limits);
        c.req.lose();
        c.resp.lose();
        c.synced = false;
        c.report_lost = true;
        c.phase = Phase::Command;
        c
    }

    /// Bytes of `side` at stream offset `offset` (a jump forward is a gap; bytes already seen
    /// are ignored).
    pub fn data(&mut self, side: Side, offset: u64, bytes: &[u8], out: &mut Vec<MyEvent>) {
        if self.ended
            || self.phase == Phase::Stopped
            || offset.checked_add(bytes.len() as u64).is_none()
        {
            return;
        }
        let r = self.reader(side);
        let pos = r.pos;
        let mut input = bytes;
        if pos == 0 && offset > 0 && !r.mid_message() {
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
    pub fn gap(&mut self, side: Side, offset: u64, len: u64, out: &mut Vec<MyEvent>) {
        if self.ended || self.phase == Phase::Stopped || len == 0 {
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
    pub fn close(&mut self, reason: EndReason, out: &mut Vec<MyEvent>) {
        if self.ended {
            return;
        }
        self.ended = true;
        if self.phase == Phase::Stopped {
            return;
        }
        for side in [Side::Request, Side::Response] {
            let r = self.reader(side);
            if self.synced && r.mid_message() {
                out.push(MyEvent::Error(ParseError {
                    side,
                    offset: r.pos,
                    kind: ErrorKind::Truncated,
                }));
            }
        }
        self.abandon(Incomplete::from(reason), out);
    }

    /// Bytes held for incomplete packets on `side`.
    pub fn buffered(&self, side: Side) -> usize {
        self.reader(side).buffered()
    }

    /// Heap bytes this connection's parser holds now (buffers, tables, remembered statements,
    /// queued requests): what dropping it would free, for the agent's memory budget. An
    /// estimate from capacities and sizes, cheap to compute (no allocation).
    ///
    /// Here: both directions' partial packets, the prepared statements with their texts, the
    /// pending commands with their texts (a text shared with others counted in part) and
    /// errors, the handshake not yet reported and the current database name.
    /// O(statements + pending). `size_of::<MyConn>()` itself is not included.
    pub fn heap_bytes(&self) -> usize {
        let pending: usize = self.pending.iter().map(Cmd::heap_bytes).sum();
        let handshake = self.handshake.as_ref().map_or(0, |h| {
            std::mem::size_of::<Handshake>()
                + h.server_version.capacity()
                + mem::opt_string(h.user.as_ref())
                + mem::opt_string(h.database.as_ref())
                + h.error.as_ref().map_or(0, error_heap_bytes)
        });
        self.req.heap_bytes()
            + self.resp.heap_bytes()
            + self.prepared.heap_bytes()
            + mem::deque(&self.pending)
            + pending
            + handshake
            + mem::opt_string(self.database.as_ref())
    }

    /// Commands waiting for their answer (at most `max_pending`).
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Prepared statements remembered (at most `max_statements`).
    pub fn statements(&self) -> usize {
        self.prepared.statements()
    }

    /// Bytes of statement text remembered (at most
    /// [`MAX_STATEMENT_BYTES`](crate::db::MAX_STATEMENT_BYTES)).
    pub fn statement_bytes(&self) -> usize {
        self.prepared.text_bytes()
    }

    /// The parser knows where it is in both directions.
    pub fn is_synced(&self) -> bool {
        self.synced
    }

    /// Parsing stopped for good (TLS, compression, or [`MyConn::close`]).
    pub fn is_stopped(&self) -> bool {
        self.ended || self.phase == Phase::Stopped
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

    fn parse(&mut self, side: Side, mut input: &[u8], out: &mut Vec<MyEvent>) {
        while self.synced && self.phase != Phase::Stopped {
            let item = match side {
                Side::Request => {
                    let keep = self.limits.max_message_bytes;
                    self.req.next(&mut input, &self.limits, keep)
                }
                Side::Response => {
                    let keep = KEEP_RESPONSE.min(self.limits.max_message_bytes.max(64));
                    self.resp.next(&mut input, &self.limits, keep)
                }
            };
            match item {
                None => return,
                Some(Item::Msg(m)) => match side {
                    Side::Request => self.request(m, out),
                    Side::Response => self.response(m, out),
                },
                Some(Item::Error { kind, offset }) => self.lose_sync(side, kind, offset, out),
            }
        }
        if !input.is_empty() && self.phase != Phase::Stopped {
            self.lost_data(side, input, out);
        }
    }

    fn lost_data(&mut self, side: Side, mut input: &[u8], out: &mut Vec<MyEvent>) {
        if std::mem::take(&mut self.report_lost) {
            out.push(MyEvent::Error(ParseError {
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
                let _ = self.resp.next(&mut input, &self.limits, 0);
                self.quiet.arm();
            }
            Side::Request => {
                if self.quiet.take() && looks_like_command(input) {
                    self.synced = true;
                    self.phase = Phase::Command;
                    self.req.resume();
                    self.resp.resume();
                    self.parse(side, input, out);
                } else {
                    if !self.req.is_lost() {
                        self.req.lose();
                    }
                    let _ = self.req.next(&mut input, &self.limits, 0);
                }
            }
        }
    }

    fn lose_sync(&mut self, side: Side, kind: ErrorKind, offset: u64, out: &mut Vec<MyEvent>) {
        out.push(MyEvent::Error(ParseError { side, offset, kind }));
        self.abandon(Incomplete::LostSync, out);
        self.prepared.clear();
        // A lost COM_INIT_DB or USE may have changed it.
        self.database = None;
        self.req.lose();
        self.resp.lose();
        self.synced = false;
        self.quiet.disarm();
    }

    fn abandon(&mut self, why: Incomplete, out: &mut Vec<MyEvent>) {
        if let Some(h) = self.handshake.take() {
            out.push(MyEvent::Handshake(h));
        }
        for mut c in self.pending.drain(..) {
            c.op.incomplete = Some(why);
            out.push(MyEvent::Operation(Box::new(c.op)));
        }
    }

    fn stop(&mut self, reason: MyStop, out: &mut Vec<MyEvent>) {
        if let Some(h) = self.handshake.take() {
            out.push(MyEvent::Handshake(h));
        }
        self.phase = Phase::Stopped;
        out.push(MyEvent::Stopped {
            reason,
            request_offset: self.req.pos,
            response_offset: self.resp.pos,
        });
    }

    fn request(&mut self, m: Msg, out: &mut Vec<MyEvent>) {
        let ext = Extent {
            first: m.first,
            last: m.last,
        };
        match self.phase {
            Phase::Greeting | Phase::Stopped => {
                self.lose_sync(Side::Request, ErrorKind::UnexpectedResponse, m.first, out)
            }
            Phase::Login => self.login(m, out),
            Phase::Auth => {
                // Auth data: never read. It moves the sequence on.
                self.auth_seq = m.last_seq.wrapping_add(1);
                if let Some(h) = self.handshake.as_mut() {
                    h.request = Some(h.request.map_or(ext, |r| r.to(ext.last)));
                }
            }
            Phase::Command => self.command(m, out),
        }
    }

    fn login(&mut self, m: Msg, out: &mut Vec<MyEvent>) {
        let p = &m.payload;
        let Some(client_caps) = p
            .get(..4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        else {
            self.lose_sync(Side::Request, ErrorKind::Malformed, m.first, out);
            return;
        };
        let ext = Extent {
            first: m.first,
            last: m.last,
        };
        let shared = client_caps & self.server_caps;
        self.shared_caps = shared;
        if let Some(h) = self.handshake.as_mut() {
            h.capabilities = shared;
            h.request = Some(ext);
        }
        self.auth_seq = m.last_seq.wrapping_add(1);
        if m.len == 32 && client_caps & caps::SSL != 0 {
            self.stop(MyStop::Tls, out);
            return;
        }
        // caps:4 max_packet:4 charset:1 filler:23 user\0 auth database\0 ...
        let mut rest = p.get(32..).unwrap_or(&[]);
        let (user, r) = cstr(rest);
        let user = text(user, 256);
        rest = r;
        let auth_len = if client_caps & caps::PLUGIN_AUTH_LENENC != 0 {
            lenenc(&mut rest)
        } else if client_caps & caps::SECURE_CONNECTION != 0 {
            let n = rest.first().copied().map(u64::from);
            rest = rest.get(1..).unwrap_or(&[]);
            n
        } else {
            let (_, r) = cstr(rest);
            rest = r;
            Some(0)
        };
        let auth_len = usize::try_from(auth_len.unwrap_or(0)).unwrap_or(usize::MAX);
        rest = rest.get(auth_len..).unwrap_or(&[]);
        let database = (client_caps & caps::CONNECT_WITH_DB != 0)
            .then(|| text(cstr(rest).0, 256))
            .filter(|d| !d.is_empty());
        if let Some(h) = self.handshake.as_mut() {
            h.user = Some(user);
            h.database.clone_from(&database);
        }
        self.database = database;
        self.phase = Phase::Auth;
    }

    fn command(&mut self, m: Msg, out: &mut Vec<MyEvent>) {
        if m.seq != 0 {
            // LOCAL INFILE contents, CHANGE_USER auth data (never read), or stray continuation
            // packets: they move the sequence on.
            if let Some(c) = self.pending.front_mut()
                && c.answer == Answer::Infile
            {
                c.next_seq = m.last_seq.wrapping_add(1);
                c.op.request = c.op.request.to(m.last);
            }
            return;
        }
        let Some((&byte, args)) = m.payload.split_first() else {
            self.lose_sync(Side::Request, ErrorKind::Malformed, m.first, out);
            return;
        };
        let command = Command(byte);
        if !client_command(byte) {
            self.lose_sync(
                Side::Request,
                ErrorKind::UnknownCommand { byte },
                m.first,
                out,
            );
            return;
        }
        let truncated = m.len > m.payload.len() as u64;
        let mut op = MyOperation {
            command,
            query: None,
            query_truncated: false,
            query_evicted: false,
            statement_id: None,
            database: self.database.clone(),
            request: Extent {
                first: m.first,
                last: m.last,
            },
            response: None,
            rows: 0,
            affected_rows: None,
            results: 0,
            error: None,
            incomplete: None,
        };
        let mut init_db = None;
        match byte {
            // No answer to these.
            0x01 | 0x18 => return,
            0x19 => {
                if let Some(id) = u32_at(args, 0) {
                    self.prepared.close(id);
                }
                return;
            }
            0x03 | 0x16 => {
                let (q, cut) = text_within(args, self.limits.max_message_bytes);
                if byte == 0x03 {
                    init_db = use_statement(&q);
                }
                op.query = Some(Arc::from(q));
                op.query_truncated = truncated || cut;
            }
            // The new user's database is in the auth data's neighbourhood: not read.
            0x11 => init_db = Some(None),
            0x02 => {
                let db = text(args, 256);
                op.query = Some(Arc::from(db.as_str()));
                init_db = Some(Some(db));
            }
            0x17 | 0x1a | 0x1c => {
                op.statement_id = u32_at(args, 0);
                if let Some(id) = op.statement_id {
                    let run = self.prepared.execute(id);
                    op.query = run.query;
                    op.query_truncated = run.truncated;
                    op.query_evicted = run.evicted;
                }
            }
            _ => {}
        }
        if self.pending.len() >= self.limits.max_pending.max(1) {
            self.lose_sync(Side::Request, ErrorKind::UnexpectedResponse, m.first, out);
            return;
        }
        self.pending.push_back(Cmd {
            op,
            answer: Answer::First,
            next_seq: m.last_seq.wrapping_add(1),
            init_db,
        });
    }

    fn response(&mut self, m: Msg, out: &mut Vec<MyEvent>) {
        match self.phase {
            Phase::Greeting => self.greeting(m, out),
            Phase::Login => {
                self.lose_sync(Side::Response, ErrorKind::UnexpectedResponse, m.first, out)
            }
            Phase::Auth => self.auth(m, out),
            Phase::Command => self.answer(m, out),
            Phase::Stopped => {}
        }
    }

    fn greeting(&mut self, m: Msg, out: &mut Vec<MyEvent>) {
        let p = &m.payload;
        if m.seq != 0 || p.first() != Some(&10) {
            self.lose_sync(Side::Response, ErrorKind::NotHandshake, m.first, out);
            return;
        }
        // 10 version\0 thread_id:4 salt1:8 filler:1 caps_lo:2 charset:1 status:2 caps_hi:2 ...
        let (version, rest) = cstr(&p[1..]);
        let server_version = text(version, 128);
        let lo = rest
            .get(13..15)
            .map_or(0, |b| u32::from(u16::from_le_bytes([b[0], b[1]])));
        let hi = rest
            .get(18..20)
            .map_or(0, |b| u32::from(u16::from_le_bytes([b[0], b[1]])));
        self.server_caps = lo | (hi << 16);
        self.handshake = Some(Box::new(Handshake {
            mariadb: server_version.contains("MariaDB"),
            server_version,
            connection_id: u32_at(rest, 0).unwrap_or(0),
            greeting: Extent {
                first: m.first,
                last: m.last,
            },
            ..Handshake::default()
        }));
        self.phase = Phase::Login;
    }

    fn auth(&mut self, m: Msg, out: &mut Vec<MyEvent>) {
        if m.seq != self.auth_seq {
            let kind = ErrorKind::Sequence {
                got: m.seq,
                want: self.auth_seq,
            };
            self.lose_sync(Side::Response, kind, m.first, out);
            return;
        }
        self.auth_seq = m.last_seq.wrapping_add(1);
        match m.payload.first() {
            Some(0x00) => {
                let compressed = self
                    .handshake
                    .as_ref()
                    .is_some_and(|h| h.capabilities & caps::COMPRESS != 0);
                if compressed {
                    self.stop(MyStop::Compressed, out);
                    return;
                }
                if let Some(h) = self.handshake.take() {
                    out.push(MyEvent::Handshake(h));
                }
                self.phase = Phase::Command;
            }
            Some(0xff) => {
                if let Some(h) = self.handshake.as_mut() {
                    h.error = Some(my_error(&m.payload));
                }
                if let Some(h) = self.handshake.take() {
                    out.push(MyEvent::Handshake(h));
                }
                self.phase = Phase::Command;
            }
            // Auth switch (0xFE), more data (0x01): the exchange goes on.
            _ => {}
        }
    }

    fn answer(&mut self, m: Msg, out: &mut Vec<MyEvent>) {
        let Some(c) = self.pending.front_mut() else {
            self.lose_sync(Side::Response, ErrorKind::UnexpectedResponse, m.first, out);
            return;
        };
        if m.seq != c.next_seq {
            let kind = ErrorKind::Sequence {
                got: m.seq,
                want: c.next_seq,
            };
            self.lose_sync(Side::Response, kind, m.first, out);
            return;
        }
        c.next_seq = m.last_seq.wrapping_add(1);
        let ext = Extent {
            first: m.first,
            last: m.last,
        };
        c.op.response = Some(c.op.response.map_or(ext, |r| r.to(ext.last)));
        let p = &m.payload[..];
        let b0 = p.first().copied();
        let eof = b0 == Some(0xfe) && m.len < 9;
        let mut done = false;
        let mut bad = false;
        match c.answer {
            // COM_CHANGE_USER: an auth switch or more auth data, then OK or ERR.
            Answer::First | Answer::Infile
                if c.op.command == Command(0x11) && matches!(b0, Some(0xfe | 0x01)) =>
            {
                c.answer = Answer::Infile;
            }
            Answer::First | Answer::Infile => match b0 {
                Some(0xff) => {
                    c.op.error = Some(my_error(p));
                    done = true;
                }
                Some(0x00) if c.op.command == Command::STMT_PREPARE => {
                    let id = u32_at(p, 1);
                    let cols = u64::from(u16_at(p, 5).unwrap_or(0));
                    let params = u64::from(u16_at(p, 7).unwrap_or(0));
                    // STMT_PREPARE_OK and the definitions after it describe the statement:
                    // no rows and no result (the rows come with COM_STMT_EXECUTE).
                    c.op.statement_id = id;
                    if let (Some(id), Some(q)) = (id, c.op.query.clone()) {
                        let max = self.limits.max_statements;
                        let truncated = c.op.query_truncated;
                        for _ in 0..self.prepared.prepare(id, q, truncated, max) {
                            out.push(MyEvent::Error(ParseError {
                                side: Side::Response,
                                offset: m.first,
                                kind: ErrorKind::StatementEvicted,
                            }));
                        }
                    }
                    c.answer = if params > 0 {
                        Answer::Params { params, cols }
                    } else if cols > 0 {
                        Answer::Cols(cols)
                    } else {
                        done = true;
                        Answer::First
                    };
                }
                Some(0x00) if m.len >= 7 => {
                    done = ok_packet(&mut c.op, &p[1..]);
                    if done && let Some(db) = c.init_db.take() {
                        self.database = db;
                    }
                }
                Some(0xfe) if eof => done = true,
                Some(0xfb) => c.answer = Answer::Infile,
                _ if c.op.command == Command(0x09) => done = true,
                Some(_) if c.op.command == Command(0x04) => c.answer = Answer::Rows,
                Some(_) => {
                    let mut r = p;
                    match lenenc(&mut r) {
                        Some(n) if n > 0 => {
                            c.op.results += 1;
                            c.answer = Answer::Columns(n);
                        }
                        _ => bad = true,
                    }
                }
                None => bad = true,
            },
            Answer::Columns(n) => {
                c.answer = if n > 1 {
                    Answer::Columns(n - 1)
                } else {
                    Answer::ColumnsEof
                };
            }
            Answer::ColumnsEof if eof => c.answer = Answer::Rows,
            // No EOF after the columns (CLIENT_DEPRECATE_EOF): this is a row, or the end.
            Answer::ColumnsEof | Answer::Rows => match b0 {
                Some(0xff) => {
                    c.op.error = Some(my_error(p));
                    done = true;
                }
                Some(0xfe) if m.len < 0xff_ffff => {
                    let more = if m.len < 9 {
                        u16_at(p, 3).unwrap_or(0) & MORE_RESULTS != 0
                    } else {
                        !ok_packet(&mut c.op, &p[1..])
                    };
                    if more {
                        c.answer = Answer::First;
                    } else {
                        done = true;
                    }
                }
                _ => {
                    c.op.rows += 1;
                    c.answer = Answer::Rows;
                }
            },
            Answer::Params { params, cols } => {
                c.answer = if params > 1 {
                    Answer::Params {
                        params: params - 1,
                        cols,
                    }
                } else {
                    Answer::ParamsEof { cols }
                };
            }
            Answer::ParamsEof { cols } => {
                let next = if cols > 0 {
                    Answer::Cols(cols)
                } else {
                    Answer::ColsEof
                };
                if eof {
                    c.answer = next;
                    done = cols == 0;
                } else if cols > 0 {
                    // No EOF: this is the first column definition.
                    c.answer = if cols > 1 {
                        Answer::Cols(cols - 1)
                    } else {
                        Answer::ColsEof
                    };
                } else {
                    bad = true;
                }
            }
            Answer::Cols(n) => {
                c.answer = if n > 1 {
                    Answer::Cols(n - 1)
                } else {
                    Answer::ColsEof
                };
            }
            Answer::ColsEof => {
                if eof {
                    done = true;
                } else {
                    bad = true;
                }
            }
        }
        if bad {
            self.lose_sync(Side::Response, ErrorKind::Malformed, m.first, out);
            return;
        }
        // Without EOF packets, a prepare answer ends with its last definition.
        let last_def = matches!(c.answer, Answer::ColsEof | Answer::ParamsEof { cols: 0 })
            && self.shared_caps & caps::DEPRECATE_EOF != 0;
        if (done || last_def)
            && let Some(c) = self.pending.pop_front()
        {
            out.push(MyEvent::Operation(Box::new(c.op)));
        }
    }
}

/// The schema a `USE` statement switches to: `Some(Some(db))` for a lone `USE db`,
/// `Some(None)` (unknown afterwards) when a multi-statement text may hold one.
fn use_statement(q: &str) -> Option<Option<String>> {
    let t = q.trim_start();
    let lower = t.get(..4).map(str::to_ascii_lowercase);
    if lower.as_deref() == Some("use ") || lower.as_deref() == Some("use`") {
        let name = t[3..].trim().trim_end_matches(';').trim().trim_matches('`');
        if !name.is_empty() && !name.contains(';') && !name.contains(char::is_whitespace) {
            return Some(Some(name.to_string()));
        }
        return Some(None);
    }
    let rest = t.to_ascii_lowercase();
    rest.contains(';')
        .then(|| {
            rest.split(';')
                .skip(1)
                .any(|s| s.trim_start().starts_with("use"))
        })
        .filter(|&u| u)
        .map(|_| None)
}

/// Reads an OK packet's body (after the header byte) into `op`; true if no more results follow.
fn ok_packet(op: &mut MyOperation, mut b: &[u8]) -> bool {
    let affected = lenenc(&mut b).unwrap_or(0);
    let _last_insert_id = lenenc(&mut b);
    let status = u16_at(b, 0).unwrap_or(0);
    op.affected_rows = Some(op.affected_rows.unwrap_or(0).saturating_add(affected));
    op.results += 1;
    status & MORE_RESULTS == 0
}

/// `0xFF code:2 [# sqlstate:5] message`.
fn my_error(p: &[u8]) -> MyError {
    let code = u16_at(p, 1).unwrap_or(0);
    let rest = p.get(3..).unwrap_or(&[]);
    let (sql_state, message) = match rest.split_first() {
        Some((b'#', r)) if r.len() >= 5 => (Some(text(&r[..5], 5)), &r[5..]),
        _ => (None, rest),
    };
    MyError {
        code,
        sql_state,
        message: text(message, 512),
    }
}

fn cstr(b: &[u8]) -> (&[u8], &[u8]) {
    match b.iter().position(|&c| c == 0) {
        Some(i) => (&b[..i], &b[i + 1..]),
        None => (b, &[]),
    }
}

fn u16_at(b: &[u8], i: usize) -> Option<u16> {
    b.get(i..i + 2).map(|b| u16::from_le_bytes([b[0], b[1]]))
}

fn u32_at(b: &[u8], i: usize) -> Option<u32> {
    b.get(i..i + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// A length-encoded integer, advancing `b`.
fn lenenc(b: &mut &[u8]) -> Option<u64> {
    let (&first, rest) = b.split_first()?;
    let n = match first {
        0..=0xfa => {
            *b = rest;
            return Some(u64::from(first));
        }
        0xfc => 2,
        0xfd => 3,
        0xfe => 8,
        _ => return None,
    };
    let bytes = rest.get(..n)?;
    let mut v = [0u8; 8];
    v[..n].copy_from_slice(bytes);
    *b = &rest[n..];
    Some(u64::from_le_bytes(v))
}

/// A packet header with sequence 0 and a known command byte (or a prefix of one).
fn looks_like_command(b: &[u8]) -> bool {
    let len_ok = match b.get(..3) {
        Some(l) => l != [0, 0, 0],
        None => true,
    };
    let seq_ok = b.get(3).is_none_or(|&s| s == 0);
    let cmd_ok = b.get(4).is_none_or(|&c| client_command(c));
    // Query text is text: this also keeps a compressed session (joined midway) from passing.
    let text_ok = match b.get(4) {
        Some(0x02 | 0x03 | 0x16) => b[5..]
            .iter()
            .take(64)
            .all(|&c| c >= 0x20 || matches!(c, b'\t' | b'\r' | b'\n')),
        _ => true,
    };
    len_ok && seq_ok && cmd_ok && text_ok
}

/// Commands a client sends (not the server-internal ones such as `COM_SLEEP`).
fn client_command(c: u8) -> bool {
    matches!(c, 0x01..=0x0a | 0x0c..=0x0e | 0x11 | 0x16..=0x1c | 0x1f)
}
