//! `traceparent` for outgoing HTTP/2 requests (gRPC and the rest), decided at the send.
//!
//! A client connection whose first send is the HTTP/2 preface is followed frame by frame on
//! its egress: `ConnState::tx_next_req` is where the next frame header starts, and every send
//! that holds one is walked here (at most [`MAX_FRAMES`] frames; their headers must lie in the
//! bytes copied at the send's enter). A HEADERS frame that opens a new stream is a request;
//! the first of a send may get a header field, when all of this holds:
//!
//! * the whole header block is in this frame (END_HEADERS, no CONTINUATION), the frame is not
//!   padded, and it lies entirely in the copied bytes;
//! * the connection never carried the name `traceparent`, raw or Huffman-coded, in any send
//!   the kernel walked. HPACK sends a name as a literal the first time a connection uses it,
//!   and every HEADERS frame of the connection is walked or the connection is given up, so an
//!   application's own `traceparent` is always seen before any later reference to it;
//! * the frame grows to at most 16,384 bytes (the smallest SETTINGS_MAX_FRAME_SIZE);
//! * the context is the kernel's to decide: the thread serves a request the kernel follows
//!   (HTTP/1, `linked`), or the process serves nothing (a new trace). A process that serves
//!   requests the agent follows in userspace (HTTP/2 servers) keeps them (`SkipUnlinked`).
//!
//! The sk_msg program then appends a literal header field without indexing at the end of the
//! header block and fixes the frame length (`inject.rs`); the HPACK state of neither end
//! changes. Anything unsure stops following the connection (`Counter::HttpDesync`): its
//! requests go out unchanged from then on.
//!
//! ```text
//! frame: | length (24) | type (8) | flags (8) | R | stream id (31) | payload ... |
//! field: 0x00 | 0x0b "traceparent" | 0x37 "00-<32 hex>-<16 hex>-<2 hex>"   (69 bytes)
//! ```

use aya_ebpf::{bindings::BPF_ANY, macros::tracepoint, programs::TracePointContext};
use sonde_proto::{
    CONN_TX_DESYNC, CONN_TX_OWN_TP, ConnState, Counter, CtxKind, CtxSource, H2_TRACEPARENT_HUFFMAN,
    InjectOutcome, PROC_FLAG_NO_LINK,
};

use crate::{
    INJECT,
    context::{STALE_NS, at, emit_ctx, le, new_root, random_span_id, word, write_traceparent},
    global,
    maps::{CONNS, DataBuf, HEAD_SCAN, PLAN_H2, PLANS, PROCS, SCRATCH, SERVER_PROCS, THREAD_CTX},
    util::{count, cpu, now_ns},
};

/// Frames walked per send; a send with more gives up its connection.
const MAX_FRAMES: u32 = 16;
/// Length of the injected header field.
pub const FIELD_LEN: usize = 69;
/// SETTINGS_MAX_FRAME_SIZE's smallest (and initial) value.
const MAX_FRAME: u32 = 16_384;

const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const PUSH_PROMISE: u8 = 0x5;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;

/// The 24 bytes a client starts an HTTP/2 connection with.
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Tail-called by a send's enter program on an HTTP/2 client connection when the send holds
/// a frame header (`tc.len` bytes copied from its start, `tc.total` asked to be sent).
#[tracepoint]
pub fn ctx_h2_client(_ctx: TracePointContext) -> u32 {
    let Some(buf) = SCRATCH.get_ptr_mut(cpu()) else {
        return 0;
    };
    // SAFETY: this CPU's scratch slot, filled by the caller just before the tail call.
    let buf = unsafe { &mut *buf };
    let tc = buf.tc;
    let Some(conn) = CONNS.get_ptr_mut(&tc.key) else {
        return 0;
    };
    client_frames(conn, buf, tc.len, tc.total, tc.seq, tc.pid_tgid);
    0
}

#[inline(always)]
fn be24(buf: &DataBuf, i: u32) -> u32 {
    (at(buf, i) as u32) << 16 | (at(buf, i + 1) as u32) << 8 | at(buf, i + 2) as u32
}

#[inline(always)]
fn be31(buf: &DataBuf, i: u32) -> u32 {
    ((at(buf, i) as u32) << 24
        | (at(buf, i + 1) as u32) << 16
        | (at(buf, i + 2) as u32) << 8
        | at(buf, i + 3) as u32)
        & 0x7fff_ffff
}

/// Walks the frames from `start` into `buf.h2`. Everything the loop finds goes to memory at
/// once (as in `context::scan_head`): the verifier does not carry values through map memory,
/// so the paths of each frame merge and verification stays linear in the frame count.
#[inline(always)]
fn walk(buf: &mut DataBuf, start: u32, len: u32, total: u64, last_stream: u32) {
    macro_rules! get {
        ($f:ident) => {
            // SAFETY: a field of this CPU's scratch value.
            unsafe { core::ptr::read_volatile(&buf.h2.$f) }
        };
    }
    macro_rules! set {
        ($f:ident, $v:expr) => {
            // SAFETY: as above.
            unsafe { core::ptr::write_volatile(&mut buf.h2.$f, $v) }
        };
    }
    set!(pos, start);
    set!(found, 0);
    set!(headers, 0);
    set!(done, 0);
    set!(fail, 0);
    set!(last_stream, last_stream);
    let mut i = 0;
    while i < MAX_FRAMES {
        let pos = get!(pos);
        if pos as u64 >= total {
            set!(done, 1);
            break;
        }
        // A frame header beyond the copied bytes.
        if pos > HEAD_SCAN || pos + 9 > len {
            set!(fail, 1);
            break;
        }
        let flen = be24(buf, pos);
        let ty = at(buf, pos + 3);
        if ty == CONTINUATION || ty == PUSH_PROMISE {
            set!(fail, 1);
            break;
        }
        if ty == HEADERS {
            // A header block that cannot be scanned for `traceparent`.
            if pos + 9 + flen > len {
                set!(fail, 1);
                break;
            }
            set!(headers, 1);
            let stream = be31(buf, pos + 5);
            if stream & 1 == 1 && stream > get!(last_stream) {
                set!(last_stream, stream);
                if get!(found) == 0 {
                    set!(found, 1);
                    set!(off, pos);
                    set!(len, flen);
                    set!(flags, at(buf, pos + 4) as u32);
                    set!(stream, stream);
                }
            }
        }
        set!(pos, pos + 9 + (flen & 0x00ff_ffff));
        i += 1;
    }
    if get!(done) == 0 && get!(fail) == 0 {
        // More frames than walked.
        if (get!(pos) as u64) < total {
            set!(fail, 1);
        } else {
            set!(done, 1);
        }
    }
}

/// Whether the copied bytes hold the name `traceparent` (raw, any case, or Huffman-coded).
#[inline(always)]
fn has_traceparent(buf: &DataBuf, len: u32) -> bool {
    let huff = u64::from_le_bytes(H2_TRACEPARENT_HUFFMAN);
    let mut i: u32 = 0;
    while i < HEAD_SCAN {
        if i + 8 > len {
            break;
        }
        let i8 = (i as usize) & (2 * sonde_proto::MAX_CAPTURE - 1);
        // SAFETY: `i8 < 2 * MAX_CAPTURE` and the scratch value continues past the payload.
        let raw = unsafe { core::ptr::read_unaligned(buf.payload.as_ptr().add(i8) as *const u64) };
        if raw == huff {
            return true;
        }
        if i + 11 <= len && word(buf, i) == le(b"tracepar") && word(buf, i + 3) == le(b"ceparent") {
            return true;
        }
        i += 1;
    }
    false
}

#[inline(always)]
fn give_up(conn: *mut ConnState) {
    // SAFETY: `conn` is a valid map value pointer for the duration of the program.
    unsafe { (*conn).http |= CONN_TX_DESYNC };
    count(Counter::HttpDesync, 1);
}

#[inline(always)]
fn client_frames(
    conn: *mut ConnState,
    buf: &mut DataBuf,
    len: u32,
    total: u64,
    seq: u64,
    pid_tgid: u64,
) {
    // SAFETY: `conn` is a valid map value pointer for the duration of this program.
    let (conn_id, http, next, last) = unsafe {
        (
            (*conn).conn_id,
            (*conn).http,
            (*conn).tx_next_req,
            (*conn).tx_h2_stream,
        )
    };
    let len = if len > HEAD_SCAN { HEAD_SCAN } else { len };
    if next < seq || next - seq >= len as u64 {
        give_up(conn);
        return;
    }
    walk(buf, (next - seq) as u32, len, total, last);
    let w = buf.h2;
    if w.fail != 0 {
        give_up(conn);
        return;
    }
    let mut own = http & CONN_TX_OWN_TP != 0;
    if w.headers != 0 && !own && has_traceparent(buf, len) {
        own = true;
    }
    // SAFETY: as above.
    unsafe {
        (*conn).tx_next_req = seq + w.pos as u64;
        (*conn).tx_h2_stream = w.last_stream;
        if own {
            (*conn).http = http | CONN_TX_OWN_TP;
        }
    }
    if w.found == 0 {
        return;
    }
    let inject = global(&INJECT) != 0;
    let mut outcome = if !inject {
        InjectOutcome::NotAttempted
    } else if own {
        InjectOutcome::SkipExisting
    } else if w.flags & END_HEADERS as u32 == 0 || w.flags & PADDED as u32 != 0 {
        InjectOutcome::SkipHeadersIncomplete
    } else if w.len + FIELD_LEN as u32 > MAX_FRAME {
        InjectOutcome::SkipPushFailed
    } else {
        InjectOutcome::Injected
    };

    // The context, as for HTTP/1: the thread's request, when the kernel follows one.
    let tid = pid_tgid as u32;
    let tgid = (pid_tgid >> 32) as u32;
    let linkable = match PROCS.get_ptr(tgid) {
        // SAFETY: a valid map value pointer.
        Some(p) => (unsafe { (*p).flags } & PROC_FLAG_NO_LINK) == 0,
        None => true,
    };
    let thread = if linkable {
        THREAD_CTX.get_ptr(tid)
    } else {
        None
    };
    let mut linked = None;
    if let Some(t) = thread {
        // SAFETY: a valid map value pointer.
        let t = unsafe { &*t };
        if t.outstanding != 0 && t.ambiguous == 0 && now_ns().saturating_sub(t.at_ns) < STALE_NS {
            linked = Some((t.trace_id, t.span_id, t.flags));
        }
    }
    let (trace_id, parent, flags, source) = match linked {
        Some((t, s, f)) => (t, s, f, CtxSource::Linked),
        None => new_root(CtxSource::NewTrace),
    };
    if linked.is_none()
        && outcome == InjectOutcome::Injected
        && SERVER_PROCS.get_ptr(tgid).is_some()
    {
        outcome = InjectOutcome::SkipUnlinked;
    }
    let span_id = random_span_id();
    if outcome == InjectOutcome::Injected {
        let plan = &mut buf.plan;
        plan.kind = PLAN_H2;
        plan.at = w.off + 9 + w.len;
        plan.frame_off = w.off;
        plan.frame_len = w.len;
        plan.done = 0;
        plan.outcome = InjectOutcome::Injected as u8;
        plan.conn_id = conn_id;
        plan.seq = w.stream as u64;
        plan.trace_id = trace_id;
        plan.span_id = span_id;
        plan.parent = parent;
        plan.flags = flags;
        plan.source = source as u8;
        // 0x00: literal without indexing, new name; then the name and the value, not
        // Huffman-coded.
        plan.header[0] = 0x00;
        plan.header[1] = 11;
        let name = b"traceparent";
        let mut i = 0;
        while i < name.len() {
            plan.header[2 + i] = name[i];
            i += 1;
        }
        plan.header[13] = 55;
        write_traceparent(&mut plan.header, 14, &trace_id, &span_id, flags);
        if PLANS.insert(pid_tgid, &buf.plan, BPF_ANY as u64).is_ok() {
            // The exit of this syscall reports the plan's outcome.
            return;
        }
        outcome = InjectOutcome::SkipPushFailed;
    }
    if outcome != InjectOutcome::NotAttempted {
        count(Counter::InjectSkipped, 1);
    }
    // The agent learns the outcome; it keeps its own context unless the ids went on the wire.
    buf.ctx.conn_id = conn_id;
    buf.ctx.seq = w.stream as u64;
    buf.ctx.trace_id = trace_id;
    buf.ctx.span_id = span_id;
    buf.ctx.parent_span_id = parent;
    buf.ctx.flags = flags;
    buf.ctx.kind = CtxKind::H2Client as u8;
    buf.ctx.source = source as u8;
    buf.ctx.inject = outcome as u8;
    emit_ctx(buf, pid_tgid);
}
