//! Trace context chosen in the kernel, at the moment a request crosses the socket.
//!
//! Injection puts `traceparent` on the wire inside `sendmsg`, long before the agent has parsed
//! anything, so the ids must be chosen here:
//!
//! * **Incoming request** (a read on an accepted connection, at a request boundary): the head
//!   is scanned for `traceparent`; the server span continues the caller's trace or starts a new
//!   one, with a fresh span id. The thread that read the request remembers it in `THREAD_CTX`
//!   until it writes the response.
//! * **Outgoing request** (a write on a connected socket, at a request boundary): its client
//!   span is a child of the server span its thread is serving, when exactly one is outstanding;
//!   with more than one it is a new trace and counted as ambiguous (a wrong parent is worse than
//!   none). The injection plan (where the request line ends, the 70 header bytes) is left in
//!   `PLANS` for the sk_msg program; a request that already carries `traceparent` is adopted,
//!   never given a second one.
//!
//! Request boundaries are followed per connection and direction from the request heads
//! (`Content-Length`); chunked bodies, heads longer than the scan window and bytes that are not
//! a request stop it for that connection (`Counter::HttpDesync`): unsure means hands off.
//!
//! Head scanning runs on the per-CPU scratch copy in two bounded passes (line starts, then
//! the lines), so that the verifier's work stays linear.

use aya_ebpf::{
    bindings::BPF_ANY, helpers::generated::bpf_get_prandom_u32, macros::tracepoint,
    programs::TracePointContext,
};
use sonde_proto::{
    CONN_RX_DESYNC, CONN_TX_DESYNC, ConnState, Counter, CtxKind, CtxSource, EventKind,
    InjectOutcome, MAX_CAPTURE, PROC_FLAG_NO_LINK,
};

use crate::{
    INJECT, global,
    maps::{
        CONNS, DataBuf, HEAD_LINES, HEAD_SCAN, HEADER_LEN, PENDING, PLAN_H2, PLAN_HTTP1, PLANS,
        PROCS, SCRATCH, THREAD_CTX,
    },
    util::{count, cpu, emit, header, now_ns},
};

/// Tail-called by a read's exit program when a request starts on a server connection.
#[tracepoint]
pub fn ctx_server(_ctx: TracePointContext) -> u32 {
    let Some(buf) = SCRATCH.get_ptr_mut(cpu()) else {
        return 0;
    };
    // SAFETY: this CPU's scratch slot, filled by the caller just before the tail call.
    let buf = unsafe { &mut *buf };
    let tc = buf.tc;
    let Some(conn) = CONNS.get_ptr_mut(&tc.key) else {
        return 0;
    };
    server_request(conn, buf, tc.len, tc.seq, tc.pid_tgid);
    0
}

/// Tail-called by a send's enter program when a request starts on a client connection.
#[tracepoint]
pub fn ctx_client(_ctx: TracePointContext) -> u32 {
    let Some(buf) = SCRATCH.get_ptr_mut(cpu()) else {
        return 0;
    };
    // SAFETY: as above.
    let buf = unsafe { &mut *buf };
    let tc = buf.tc;
    let Some(conn) = CONNS.get_ptr_mut(&tc.key) else {
        return 0;
    };
    client_request(
        conn,
        buf,
        tc.len,
        tc.total,
        tc.seq,
        tc.pid_tgid,
        global(&INJECT) != 0,
    );
    0
}

/// A server context older than this no longer links outgoing requests.
pub(crate) const STALE_NS: u64 = 30_000_000_000;

#[inline(always)]
pub(crate) fn at(buf: &DataBuf, i: u32) -> u8 {
    buf.payload[(i as usize) & (2 * MAX_CAPTURE - 1)]
}

/// 8 bytes at `i`, every byte with bit 5 set: upper-case letters become lower case, and
/// `-`, `:` and digits are unchanged, so header names compare case-insensitively.
#[inline(always)]
pub(crate) fn word(buf: &DataBuf, i: u32) -> u64 {
    let i = (i as usize) & (2 * MAX_CAPTURE - 1);
    // SAFETY: `i < 2 * MAX_CAPTURE` and the scratch value continues past the payload (line
    // offsets, plan), so 8 bytes from `i` stay inside the map value.
    let w = unsafe { core::ptr::read_unaligned(buf.payload.as_ptr().add(i) as *const u64) };
    w | 0x2020_2020_2020_2020
}

pub(crate) const fn le(s: &[u8; 8]) -> u64 {
    u64::from_le_bytes(*s)
}

/// Length of a request method and its space at the start of `buf`, if it is one.
#[inline(always)]
fn method_len(buf: &DataBuf, len: u32) -> Option<u32> {
    const METHODS: [&[u8]; 9] = [
        b"GET ",
        b"POST ",
        b"PUT ",
        b"HEAD ",
        b"DELETE ",
        b"PATCH ",
        b"OPTIONS ",
        b"CONNECT ",
        b"TRACE ",
    ];
    let mut m = 0;
    while m < METHODS.len() {
        let name = METHODS[m];
        if name.len() as u32 <= len {
            let mut ok = true;
            let mut i = 0;
            while i < name.len() {
                if at(buf, i as u32) != name[i] {
                    ok = false;
                    break;
                }
                i += 1;
            }
            if ok {
                return Some(name.len() as u32);
            }
        }
        m += 1;
    }
    None
}

/// What a scanned request head says.
pub struct Head {
    /// One past the blank line: where the body starts.
    pub end: u32,
    /// One past the request line's LF: where a header may be inserted.
    pub request_line_end: u32,
    /// Offset of the value of `traceparent`, if present.
    pub traceparent: Option<u32>,
    pub content_length: u64,
    /// A `Transfer-Encoding` header: the body's end cannot be followed.
    pub transfer_encoding: bool,
}

pub enum Scan {
    Head(Head),
    /// The head does not end within the scanned bytes (or has too many lines).
    Incomplete {
        request_line_end: Option<u32>,
    },
}

/// Scans the first `len` bytes of `buf` (a request starting at 0) for its head.
///
/// Everything the loops find is kept in the scratch value, not in registers: the verifier
/// does not track map memory, so the paths of lines that match and lines that do not merge at
/// every iteration, and verification stays linear in the number of lines.
#[inline(always)]
pub fn scan_head(buf: &mut DataBuf, len: u32, cont: bool) -> Scan {
    // Volatile accesses keep the compiler from moving these counters back into registers.
    macro_rules! get {
        ($f:ident) => {
            // SAFETY: a field of this CPU's scratch value.
            unsafe { core::ptr::read_volatile(&buf.$f) }
        };
    }
    macro_rules! set {
        ($f:ident, $v:expr) => {
            // SAFETY: as above.
            unsafe { core::ptr::write_volatile(&mut buf.$f, $v) }
        };
    }
    let len = if len > HEAD_SCAN { HEAD_SCAN } else { len };
    // Pass 1: line starts. A continuation (the rest of a head whose start an earlier read
    // brought) starts with a line.
    if cont {
        buf.lines[0] = 0;
        set!(nlines, 1);
    } else {
        set!(nlines, 0);
    }
    let mut i: u32 = 0;
    while i < HEAD_SCAN {
        if i >= len {
            break;
        }
        if at(buf, i) == b'\n' {
            let n = get!(nlines);
            if n as usize >= HEAD_LINES {
                break;
            }
            buf.lines[(n as usize) & (HEAD_LINES - 1)] = (i + 1) as u16;
            set!(nlines, n + 1);
        }
        i += 1;
    }
    // The loop's exits refine what the verifier knows of `len` differently at each byte;
    // reloading it from memory drops that, so everything below is verified once.
    set!(scan_len, len);
    let len = get!(scan_len);
    let len = if len > HEAD_SCAN { HEAD_SCAN } else { len };
    let n = get!(nlines);
    if n == 0 {
        return Scan::Incomplete {
            request_line_end: None,
        };
    }
    // Pass 2: the header lines.
    set!(head_end, 0);
    set!(tp_off, 0);
    set!(cl_off, 0);
    set!(te, 0);
    // `lines[k]` is where line k+1 starts: `lines[0]` is the first header line.
    let mut k: u32 = 0;
    while (k as usize) < HEAD_LINES {
        if k >= n || get!(head_end) != 0 {
            break;
        }
        let start = buf.lines[(k as usize) & (HEAD_LINES - 1)] as u32;
        let first = at(buf, start);
        if first == b'\n' {
            set!(head_end, start + 1);
        } else if first == b'\r' {
            if start + 1 < len && at(buf, start + 1) == b'\n' {
                set!(head_end, start + 2);
            }
        } else if start + 18 <= len {
            let w0 = word(buf, start);
            if w0 == le(b"tracepar") && word(buf, start + 4) == le(b"eparent:") {
                set!(tp_off, start + 12);
            } else if w0 == le(b"content-") && word(buf, start + 7) == le(b"-length:") {
                set!(cl_off, start + 15);
            } else if w0 == le(b"transfer") && word(buf, start + 10) == le(b"ncoding:") {
                set!(te, 1);
            }
        } else if start + 12 <= len
            && word(buf, start) == le(b"tracepar")
            && word(buf, start + 4) == le(b"eparent:")
        {
            set!(tp_off, start + 12);
        }
        k += 1;
    }
    let request_line_end = buf.lines[0] as u32;
    let end = get!(head_end);
    if end == 0 {
        return Scan::Incomplete {
            request_line_end: Some(request_line_end),
        };
    }
    let cl_off = get!(cl_off);
    let tp_off = get!(tp_off);
    Scan::Head(Head {
        end,
        request_line_end,
        traceparent: if tp_off != 0 { Some(tp_off) } else { None },
        content_length: if cl_off != 0 {
            parse_decimal(buf, cl_off, end)
        } else {
            0
        },
        transfer_encoding: get!(te) != 0,
    })
}

/// A decimal value at `from` (after optional spaces), at most 15 digits: the verifier sees
/// one path per digit count, no more.
#[inline(always)]
fn parse_decimal(buf: &DataBuf, from: u32, len: u32) -> u64 {
    let mut i = from;
    let mut w = 0;
    while w < 4 {
        if i < len && (at(buf, i) == b' ' || at(buf, i) == b'\t') {
            i += 1;
        }
        w += 1;
    }
    let mut v: u64 = 0;
    let mut d = 0;
    while d < 15 {
        if i + d >= len {
            break;
        }
        let b = at(buf, i + d);
        if !b.is_ascii_digit() {
            break;
        }
        v = v * 10 + (b - b'0') as u64;
        d += 1;
    }
    v
}

/// The value of a lower-case hex digit, or 16.
#[inline(always)]
fn nibble(b: u8) -> u8 {
    if b.is_ascii_digit() {
        b - b'0'
    } else if (b'a'..=b'f').contains(&b) {
        b - b'a' + 10
    } else {
        16
    }
}

/// Parses `traceparent` at `from` per W3C Trace Context into `buf.ctx` (trace id, parent id
/// as `parent_span_id`, flags): version 00 exactly, lower-case hex, non-zero ids. Returns
/// false for anything else (the request then starts a new trace; `buf.ctx` ids are garbage).
///
/// Every decoded byte goes to memory at once, so that the verifier does not carry the value
/// ranges of 25 bytes through the loop (which multiplies its states by four per byte).
#[inline(always)]
pub fn parse_traceparent(buf: &mut DataBuf, from: u32, len: u32) -> bool {
    macro_rules! put {
        ($place:expr, $v:expr) => {
            // SAFETY: a field of this CPU's scratch value.
            unsafe { core::ptr::write_volatile(&mut $place, $v) }
        };
    }
    // Optional whitespace after the colon; the position goes through memory too.
    let mut p = from;
    let mut w = 0;
    while w < 4 {
        if p < len && (at(buf, p) == b' ' || at(buf, p) == b'\t') {
            p += 1;
        }
        w += 1;
    }
    put!(buf.scan_len, p);
    // SAFETY: as above.
    let p = unsafe { core::ptr::read_volatile(&buf.scan_len) };
    let p = p & (HEAD_SCAN * 2 - 1);
    if p + 55 > len {
        return false;
    }
    if at(buf, p) != b'0' || at(buf, p + 1) != b'0' || at(buf, p + 2) != b'-' {
        return false;
    }
    if at(buf, p + 35) != b'-' || at(buf, p + 52) != b'-' {
        return false;
    }
    // Version 00 has exactly 55 characters.
    if p + 55 < len {
        let next = at(buf, p + 55);
        if next != b'\r' && next != b'\n' && next != b' ' && next != b'\t' {
            return false;
        }
    }
    let mut i: u32 = 0;
    while i < 16 {
        let hi = nibble(at(buf, p + 3 + 2 * i));
        let lo = nibble(at(buf, p + 4 + 2 * i));
        if hi > 15 || lo > 15 {
            return false;
        }
        put!(buf.ctx.trace_id[(i as usize) & 15], hi << 4 | lo);
        i += 1;
    }
    let mut i: u32 = 0;
    while i < 8 {
        let hi = nibble(at(buf, p + 36 + 2 * i));
        let lo = nibble(at(buf, p + 37 + 2 * i));
        if hi > 15 || lo > 15 {
            return false;
        }
        put!(buf.ctx.parent_span_id[(i as usize) & 7], hi << 4 | lo);
        i += 1;
    }
    let hi = nibble(at(buf, p + 53));
    let lo = nibble(at(buf, p + 54));
    if hi > 15 || lo > 15 {
        return false;
    }
    put!(buf.ctx.flags, hi << 4 | lo);
    // SAFETY: reads of fields just written.
    let (t, s) = unsafe {
        let t = core::ptr::read_unaligned(buf.ctx.trace_id.as_ptr() as *const [u64; 2]);
        let s = core::ptr::read_unaligned(buf.ctx.parent_span_id.as_ptr() as *const u64);
        (t, s)
    };
    (t[0] | t[1]) != 0 && s != 0
}

#[inline(always)]
fn random_u32() -> u32 {
    // SAFETY: helper without arguments.
    let r = unsafe { bpf_get_prandom_u32() };
    // Through a 32-bit stack slot: LLVM takes the helper's upper 32 bits as zero, but the 6.1
    // verifier does not, and `HEX[(b >> 4) as usize]` on a byte of it was rejected as an
    // unbounded access (`cargo xtask vm-test --kernel 6.1`).
    // SAFETY: a read of a local.
    unsafe { core::ptr::read_volatile(&r) }
}

/// Random bytes in little-endian order: `to_be_bytes` compiles to a byte swap, after which
/// the 6.1 verifier no longer knows the value fits in 32 bits (same rejection as above).
#[inline(always)]
pub(crate) fn random_span_id() -> [u8; 8] {
    let a = random_u32().to_le_bytes();
    // Never all zero (invalid in W3C Trace Context): the second half is at least 1.
    let b = (random_u32() | 1).to_le_bytes();
    [a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3]]
}

#[inline(always)]
pub(crate) fn random_trace_id() -> [u8; 16] {
    let a = random_span_id();
    let b = random_span_id();
    [
        a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], b[0], b[1], b[2], b[3], b[4], b[5], b[6],
        b[7],
    ]
}

/// W3C flags of a new root trace: sampled or not by the configured ratio, decided from the
/// trace id so that every agent decides the same (downstream services honour the flag).
#[inline(always)]
fn root_flags(trace_id: &[u8; 16]) -> u8 {
    u8::from(sonde_proto::sampled_by_ratio(
        trace_id,
        crate::global(&crate::SAMPLE_THRESHOLD),
    ))
}

/// A new trace for a client request: (trace id, no parent, flags, source).
#[inline(always)]
pub(crate) fn new_root(source: CtxSource) -> ([u8; 16], [u8; 8], u8, CtxSource) {
    let trace_id = random_trace_id();
    (trace_id, [0; 8], root_flags(&trace_id), source)
}

/// Sends `buf.ctx` (filled by the caller) with a fresh header.
#[inline(always)]
pub(crate) fn emit_ctx(buf: &mut DataBuf, pid_tgid: u64) {
    let now = now_ns();
    buf.ctx.header = header(EventKind::TraceCtx, pid_tgid, now, now);
    emit(&buf.ctx);
}

/// An incoming request was read at `seq` on a server connection: the payload is in `buf`.
#[inline(always)]
pub fn server_request(
    conn: *mut ConnState,
    buf: &mut DataBuf,
    captured: u32,
    seq: u64,
    pid_tgid: u64,
) {
    // SAFETY: `conn` is a valid map value pointer for the duration of this program.
    let (conn_id, http, pending) = unsafe { ((*conn).conn_id, (*conn).http, (*conn).rx_pending) };
    let cont = pending != 0;
    if !cont && method_len(buf, captured).is_none() {
        // A request boundary that is not a request: stop following this direction.
        rx_desync(conn, http);
        return;
    }
    if !cont {
        // SAFETY: as above.
        unsafe { (*conn).rx_req_start = seq };
        let _ = PENDING.remove(conn_id);
    }
    match scan_head(buf, captured, cont) {
        Scan::Head(h) => {
            if let Some(tp) = h.traceparent
                && parse_traceparent(buf, tp, h.end)
            {
                let _ = PENDING.insert(conn_id, &buf.ctx, BPF_ANY as u64);
            }
            // SAFETY: as above.
            unsafe {
                (*conn).rx_pending = 0;
                if h.transfer_encoding {
                    (*conn).http = http | CONN_RX_DESYNC;
                    count(Counter::HttpDesync, 1);
                } else {
                    (*conn).rx_next_req = seq + h.end as u64 + h.content_length;
                }
            }
        }
        Scan::Incomplete { .. } => {
            // The head goes on in the next read (a request split over TCP segments, or a
            // small read buffer): remember what this part said, look at the next read.
            if buf.tp_off != 0 && parse_traceparent(buf, buf.tp_off, captured) {
                let _ = PENDING.insert(conn_id, &buf.ctx, BPF_ANY as u64);
            }
            if pending >= MAX_HEAD_READS {
                rx_desync(conn, http);
            } else {
                // SAFETY: as above.
                unsafe { (*conn).rx_pending = pending + 1 };
                // The next read continues this head: its start is not a request boundary.
                // SAFETY: as above.
                unsafe { (*conn).rx_next_req = u64::MAX };
                return;
            }
        }
    }
    // SAFETY: as above.
    let req_start = unsafe { (*conn).rx_req_start };
    finish_server_request(buf, conn_id, req_start, pid_tgid);
}

/// Stops following request boundaries of `conn`'s ingress.
#[inline(always)]
fn rx_desync(conn: *mut ConnState, http: u8) {
    // SAFETY: `conn` is a valid map value pointer for the duration of the program.
    unsafe {
        (*conn).http = http | CONN_RX_DESYNC;
        (*conn).rx_pending = 0;
    }
    count(Counter::HttpDesync, 1);
}

/// Reads of one request head the kernel follows before giving up on it.
const MAX_HEAD_READS: u8 = 4;

/// The head of the request starting at `seq` is complete: choose its context.
#[inline(always)]
fn finish_server_request(buf: &mut DataBuf, conn_id: u64, seq: u64, pid_tgid: u64) {
    let span_id = random_span_id();
    let source = match PENDING.get_ptr(conn_id) {
        Some(p) => {
            // SAFETY: a valid map value pointer (the parsed traceparent of this request).
            unsafe {
                buf.ctx.trace_id = (*p).trace_id;
                buf.ctx.parent_span_id = (*p).parent_span_id;
                buf.ctx.flags = (*p).flags;
            }
            let _ = PENDING.remove(conn_id);
            count(Counter::CtxFromHeader, 1);
            CtxSource::Header
        }
        None => {
            buf.ctx.trace_id = random_trace_id();
            buf.ctx.parent_span_id = [0; 8];
            buf.ctx.flags = root_flags(&buf.ctx.trace_id);
            CtxSource::NewTrace
        }
    };
    count(Counter::CtxServer, 1);
    buf.ctx.conn_id = conn_id;
    buf.ctx.seq = seq;
    buf.ctx.span_id = span_id;
    buf.ctx.kind = CtxKind::Server as u8;
    buf.ctx.source = source as u8;
    buf.ctx.inject = InjectOutcome::NotAttempted as u8;
    let tid = pid_tgid as u32;
    let now = now_ns();
    match THREAD_CTX.get_ptr_mut(tid) {
        // SAFETY: a valid map value pointer of this thread's entry.
        Some(t) => unsafe {
            if (*t).outstanding > 0 && now.saturating_sub((*t).at_ns) < STALE_NS {
                // Another request is still being served by this thread.
                (*t).outstanding += 1;
                (*t).ambiguous = 1;
            } else {
                (*t).trace_id = buf.ctx.trace_id;
                (*t).span_id = span_id;
                (*t).flags = buf.ctx.flags;
                (*t).outstanding = 1;
                (*t).ambiguous = 0;
                (*t).conn_id = conn_id;
                (*t).at_ns = now;
            }
        },
        None => {
            buf.thread.trace_id = buf.ctx.trace_id;
            buf.thread.span_id = span_id;
            buf.thread.flags = buf.ctx.flags;
            buf.thread.outstanding = 1;
            buf.thread.ambiguous = 0;
            buf.thread.conn_id = conn_id;
            buf.thread.at_ns = now;
            let _ = THREAD_CTX.insert(tid, &buf.thread, BPF_ANY as u64);
        }
    }
    emit_ctx(buf, pid_tgid);
}

/// The thread writes on a server connection: the request it serves is answered.
#[inline(always)]
pub fn server_response(pid_tgid: u64) {
    let tid = pid_tgid as u32;
    if let Some(t) = THREAD_CTX.get_ptr_mut(tid) {
        // SAFETY: a valid map value pointer.
        unsafe {
            if (*t).outstanding <= 1 {
                (*t).outstanding = 0;
                (*t).ambiguous = 0;
            } else {
                (*t).outstanding -= 1;
            }
        }
    }
}

/// Hex digits for the injected header.
const HEX: &[u8; 16] = b"0123456789abcdef";

/// Writes the W3C `traceparent` value `00-<trace id>-<span id>-<flags>` (55 bytes, lower-case
/// hex) into `out` at `at`: the one writer of the HTTP/1 header line and the HTTP/2 field.
#[inline(always)]
pub(crate) fn write_traceparent(
    out: &mut [u8; HEADER_LEN],
    at: usize,
    trace_id: &[u8; 16],
    span_id: &[u8; 8],
    flags: u8,
) {
    out[at] = b'0';
    out[at + 1] = b'0';
    out[at + 2] = b'-';
    let mut j = 0;
    while j < 16 {
        out[at + 3 + 2 * j] = HEX[(trace_id[j] >> 4) as usize];
        out[at + 4 + 2 * j] = HEX[(trace_id[j] & 15) as usize];
        j += 1;
    }
    out[at + 35] = b'-';
    let mut j = 0;
    while j < 8 {
        out[at + 36 + 2 * j] = HEX[(span_id[j] >> 4) as usize];
        out[at + 37 + 2 * j] = HEX[(span_id[j] & 15) as usize];
        j += 1;
    }
    out[at + 52] = b'-';
    out[at + 53] = HEX[(flags >> 4) as usize & 15];
    out[at + 54] = HEX[(flags & 15) as usize];
}

/// An outgoing request starts at `seq` on a client connection; its first bytes are in `buf`.
/// Decides its context and, when injection is on and sure, the injection plan.
#[inline(always)]
pub fn client_request(
    conn: *mut ConnState,
    buf: &mut DataBuf,
    len: u32,
    send_len: u64,
    seq: u64,
    pid_tgid: u64,
    inject: bool,
) {
    // SAFETY: `conn` is a valid map value pointer for the duration of this program.
    let (conn_id, http) = unsafe { ((*conn).conn_id, (*conn).http) };
    let desync = |why_http: u8| {
        // SAFETY: as above.
        unsafe { (*conn).http = why_http | CONN_TX_DESYNC };
        count(Counter::HttpDesync, 1);
    };
    if method_len(buf, len).is_none() {
        desync(http);
        return;
    }
    let mut outcome = if inject {
        InjectOutcome::Injected
    } else {
        InjectOutcome::NotAttempted
    };
    let mut at_pos = 0u32;
    let mut adopted = false;
    match scan_head(buf, len, false) {
        Scan::Head(h) => {
            if h.traceparent.is_some() {
                adopted = true;
                outcome = InjectOutcome::SkipExisting;
            }
            if h.end as u64 > send_len && outcome == InjectOutcome::Injected {
                // The head continues in a later send: never sure there is no traceparent.
                outcome = InjectOutcome::SkipHeadersIncomplete;
            }
            if h.transfer_encoding {
                desync(http);
            } else {
                // SAFETY: as above.
                unsafe { (*conn).tx_next_req = seq + h.end as u64 + h.content_length };
            }
            at_pos = h.request_line_end;
        }
        Scan::Incomplete { request_line_end } => {
            if outcome == InjectOutcome::Injected {
                outcome = if request_line_end.is_some() {
                    InjectOutcome::SkipHeadersIncomplete
                } else {
                    InjectOutcome::SkipRequestLine
                };
            }
            desync(http);
        }
    }
    // The request line must end in CRLF for the header to go right after it.
    if outcome == InjectOutcome::Injected
        && (at_pos < 2 || at(buf, at_pos - 2) != b'\r' || at(buf, at_pos - 1) != b'\n')
    {
        outcome = InjectOutcome::SkipRequestLine;
    }

    let tid = pid_tgid as u32;
    let tgid = (pid_tgid >> 32) as u32;
    let linkable = match PROCS.get_ptr(tgid) {
        // SAFETY: a valid map value pointer.
        Some(p) => (unsafe { (*p).flags } & PROC_FLAG_NO_LINK) == 0,
        None => true,
    };
    if !linkable {
        count(Counter::CtxNotLinkable, 1);
    }
    let thread = if linkable {
        THREAD_CTX.get_ptr(tid)
    } else {
        None
    };
    let (trace_id, parent, flags, source) = match thread {
        // SAFETY: a valid map value pointer.
        Some(t) => unsafe {
            let t = &*t;
            if t.outstanding == 0 || now_ns().saturating_sub(t.at_ns) >= STALE_NS {
                new_root(CtxSource::NewTrace)
            } else if t.ambiguous != 0 {
                count(Counter::CtxAmbiguous, 1);
                new_root(CtxSource::Ambiguous)
            } else {
                count(Counter::CtxLinked, 1);
                (t.trace_id, t.span_id, t.flags, CtxSource::Linked)
            }
        },
        None => new_root(CtxSource::NewTrace),
    };
    let source = if adopted { CtxSource::Adopted } else { source };
    let span_id = random_span_id();
    if outcome == InjectOutcome::Injected {
        // Built in the scratch slot, not on the 512-byte stack.
        let plan = &mut buf.plan;
        plan.at = at_pos;
        plan.done = 0;
        plan.kind = PLAN_HTTP1;
        plan.outcome = InjectOutcome::Injected as u8;
        plan.conn_id = conn_id;
        plan.seq = seq;
        plan.trace_id = trace_id;
        plan.span_id = span_id;
        plan.parent = parent;
        plan.flags = flags;
        plan.source = source as u8;
        let prefix = b"traceparent: ";
        let mut i = 0;
        while i < prefix.len() {
            plan.header[i] = prefix[i];
            i += 1;
        }
        write_traceparent(&mut plan.header, 13, &trace_id, &span_id, flags);
        plan.header[68] = b'\r';
        plan.header[69] = b'\n';
        if PLANS.insert(pid_tgid, &buf.plan, BPF_ANY as u64).is_ok() {
            // The exit of this syscall reports the plan's outcome (the sk_msg program may
            // still skip it).
            return;
        }
        outcome = InjectOutcome::SkipPushFailed;
    }
    if outcome != InjectOutcome::NotAttempted {
        count(Counter::InjectSkipped, 1);
    }
    buf.ctx.conn_id = conn_id;
    buf.ctx.seq = seq;
    buf.ctx.trace_id = trace_id;
    buf.ctx.span_id = span_id;
    buf.ctx.parent_span_id = parent;
    buf.ctx.flags = flags;
    buf.ctx.kind = CtxKind::Client as u8;
    buf.ctx.source = source as u8;
    buf.ctx.inject = outcome as u8;
    emit_ctx(buf, pid_tgid);
}

/// At the exit of a send: reports what became of an injection plan.
#[inline(always)]
pub fn finish_plan(buf: &mut DataBuf, pid_tgid: u64) {
    let Some(p) = PLANS.get_ptr(pid_tgid) else {
        return;
    };
    // SAFETY: a valid map value pointer, read before removal.
    let p = unsafe { &*p };
    let outcome = if p.done == 0 {
        // The message never reached the sk_msg program (socket not in SOCKS: a connection
        // older than sonde, or opened while sonde was starting).
        InjectOutcome::SkipNotAtBoundary
    } else {
        match InjectOutcome::try_from(p.outcome) {
            Ok(o) => o,
            Err(_) => InjectOutcome::SkipPushFailed,
        }
    };
    if outcome == InjectOutcome::Injected {
        count(Counter::Injected, 1);
    } else {
        count(Counter::InjectSkipped, 1);
    }
    buf.ctx.conn_id = p.conn_id;
    buf.ctx.seq = p.seq;
    buf.ctx.trace_id = p.trace_id;
    buf.ctx.span_id = p.span_id;
    buf.ctx.parent_span_id = p.parent;
    buf.ctx.flags = p.flags;
    buf.ctx.kind = if p.kind == PLAN_H2 {
        CtxKind::H2Client
    } else {
        CtxKind::Client
    } as u8;
    buf.ctx.source = p.source;
    buf.ctx.inject = outcome as u8;
    let _ = PLANS.remove(pid_tgid);
    emit_ctx(buf, pid_tgid);
}
