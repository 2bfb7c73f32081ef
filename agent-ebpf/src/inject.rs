//! `traceparent` on the wire: sock_ops + sk_msg.
//!
//! The sock_ops program, attached at the cgroup v2 root, notes at `connect` (process context)
//! whether the caller is traced, and once the connection is established puts the socket in
//! `SOCKS`. The sk_msg program runs on every send on those sockets; it acts only when the
//! send's syscall left an injection plan (`context.rs` decided, at the syscall's enter, that a
//! request starts here and where its request line ends): it grows the message by 70 bytes
//! right after the request line and writes the header. Every other message passes untouched.
//! If the agent dies, its programs and maps go with it and sends are plain again.

use aya_ebpf::{
    bindings::{
        BPF_ANY, BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB, BPF_SOCK_OPS_TCP_CONNECT_CB, sk_action,
    },
    helpers::{
        bpf_get_current_pid_tgid,
        generated::{bpf_get_socket_cookie, bpf_msg_pull_data},
    },
    macros::{sk_msg, sock_ops},
    programs::{SkMsgContext, SockOpsContext},
};
use sonde_proto::InjectOutcome;

use crate::{
    filter::traced,
    h2ctx::FIELD_LEN,
    maps::{CONNECTING, HEADER_LEN, PLAN_H2, PLANS, Plan, SOCKS},
};

const SK_PASS: u32 = sk_action::SK_PASS;

#[sock_ops]
pub fn inject_sock_ops(ctx: SockOpsContext) -> u32 {
    // It runs for every TCP event of every socket on the host (a few per connection): every
    // other operation leaves before any helper call or lookup.
    match ctx.op() {
        BPF_SOCK_OPS_TCP_CONNECT_CB => {
            // `connect()` runs this in the caller's context.
            let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
            if traced(tgid).is_some() {
                // SAFETY: the context pointer is the program's own argument.
                let cookie = unsafe { bpf_get_socket_cookie(ctx.ops.cast()) };
                let _ = CONNECTING.insert(cookie, 1, BPF_ANY as u64);
            }
        }
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB => {
            // SAFETY: the context pointer is the program's own argument.
            let cookie = unsafe { bpf_get_socket_cookie(ctx.ops.cast()) };
            if CONNECTING.get_ptr(cookie).is_some() {
                let _ = CONNECTING.remove(cookie);
                // SAFETY: `ops` is valid for the duration of the program.
                let _ = SOCKS.update(cookie, unsafe { &mut *ctx.ops }, BPF_ANY as u64);
            }
        }
        _ => {}
    }
    0
}

/// The same without the process filter, for kernels whose sock_ops programs cannot call
/// `bpf_get_current_pid_tgid` (the 6.1 verifier: "unknown func"); the agent loads it when
/// `inject_sock_ops` is refused. Every new outgoing connection then goes into `SOCKS`, and
/// every send on one passes the sk_msg program, which still changes only sends for which a
/// traced process's syscall left a plan.
#[sock_ops]
pub fn inject_sock_ops_all(ctx: SockOpsContext) -> u32 {
    if ctx.op() == BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB {
        // SAFETY: the context pointer is the program's own argument.
        let cookie = unsafe { bpf_get_socket_cookie(ctx.ops.cast()) };
        // SAFETY: `ops` is valid for the duration of the program.
        let _ = SOCKS.update(cookie, unsafe { &mut *ctx.ops }, BPF_ANY as u64);
    }
    0
}

#[sk_msg]
pub fn inject_sk_msg(ctx: SkMsgContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(plan) = PLANS.get_ptr_mut(pid_tgid) else {
        return SK_PASS;
    };
    // SAFETY: a valid map value pointer; only this thread's send uses this entry.
    let plan = unsafe { &mut *plan };
    if plan.done != 0 {
        // Only the first message of a send starts where the request starts.
        return SK_PASS;
    }
    plan.done = 1;
    if plan.kind == PLAN_H2 {
        plan.outcome = h2_field(&ctx, plan) as u8;
        return SK_PASS;
    }
    let at = plan.at;
    if !(2..=1024).contains(&at) || ctx.size() < at {
        plan.outcome = InjectOutcome::SkipHeadersIncomplete as u8;
        return SK_PASS;
    }
    // Check, on the bytes really being sent, that the request line ends at `at`.
    // SAFETY: the message pointer is the program's own argument.
    if unsafe { bpf_msg_pull_data(ctx.msg, at - 2, at, 0) } != 0 {
        plan.outcome = InjectOutcome::SkipPushFailed as u8;
        return SK_PASS;
    }
    let (data, end) = (ctx.data(), ctx.data_end());
    if data + 2 > end {
        plan.outcome = InjectOutcome::SkipPushFailed as u8;
        return SK_PASS;
    }
    // SAFETY: bounds checked against data_end just above.
    let crlf = unsafe { [*(data as *const u8), *((data + 1) as *const u8)] };
    if crlf != *b"\r\n" {
        plan.outcome = InjectOutcome::SkipRequestLine as u8;
        return SK_PASS;
    }
    if ctx.push_data(at, HEADER_LEN as u32, 0).is_err() {
        plan.outcome = InjectOutcome::SkipPushFailed as u8;
        return SK_PASS;
    }
    // SAFETY: as above.
    if unsafe { bpf_msg_pull_data(ctx.msg, at, at + HEADER_LEN as u32, 0) } != 0 {
        // The message grew but the bytes cannot be written: undo.
        let _ = ctx.pop_data(at, HEADER_LEN as u32, 0);
        plan.outcome = InjectOutcome::SkipPushFailed as u8;
        return SK_PASS;
    }
    let (data, end) = (ctx.data(), ctx.data_end());
    if data + HEADER_LEN > end {
        let _ = ctx.pop_data(at, HEADER_LEN as u32, 0);
        plan.outcome = InjectOutcome::SkipPushFailed as u8;
        return SK_PASS;
    }
    let mut i = 0;
    while i < HEADER_LEN {
        // SAFETY: `data + i < data + HEADER_LEN <= data_end`, checked above.
        unsafe { *((data + i) as *mut u8) = plan.header[i] };
        i += 1;
    }
    plan.outcome = InjectOutcome::Injected as u8;
    SK_PASS
}

/// HTTP/2: appends the planned header field to the HEADERS frame at `plan.frame_off` and
/// grows the frame's length by as much, after checking that the frame header in the message
/// is the one the plan was made for.
#[inline(always)]
fn h2_field(ctx: &SkMsgContext, plan: &Plan) -> InjectOutcome {
    let (off, len, at) = (plan.frame_off, plan.frame_len, plan.at);
    if off > 16_384 || at != off + 9 + len || ctx.size() < at {
        return InjectOutcome::SkipHeadersIncomplete;
    }
    // SAFETY: the message pointer is the program's own argument.
    if unsafe { bpf_msg_pull_data(ctx.msg, off, off + 9, 0) } != 0 {
        return InjectOutcome::SkipPushFailed;
    }
    let (data, end) = (ctx.data(), ctx.data_end());
    if data + 9 > end {
        return InjectOutcome::SkipPushFailed;
    }
    // SAFETY: bounds checked against data_end just above.
    let head = unsafe { *(data as *const [u8; 9]) };
    let seen = (head[0] as u32) << 16 | (head[1] as u32) << 8 | head[2] as u32;
    if seen != len || head[3] != 0x1 {
        return InjectOutcome::SkipNotAtBoundary;
    }
    if ctx.push_data(at, FIELD_LEN as u32, 0).is_err() {
        return InjectOutcome::SkipPushFailed;
    }
    // SAFETY: as above.
    if unsafe { bpf_msg_pull_data(ctx.msg, at, at + FIELD_LEN as u32, 0) } != 0 {
        let _ = ctx.pop_data(at, FIELD_LEN as u32, 0);
        return InjectOutcome::SkipPushFailed;
    }
    let (data, end) = (ctx.data(), ctx.data_end());
    if data + FIELD_LEN > end {
        let _ = ctx.pop_data(at, FIELD_LEN as u32, 0);
        return InjectOutcome::SkipPushFailed;
    }
    let mut i = 0;
    while i < FIELD_LEN {
        // SAFETY: `data + i < data + FIELD_LEN <= data_end`, checked above.
        unsafe { *((data + i) as *mut u8) = plan.header[i] };
        i += 1;
    }
    // The frame's length, now that its payload grew.
    // SAFETY: as above.
    if unsafe { bpf_msg_pull_data(ctx.msg, off, off + 3, 0) } != 0 {
        let _ = ctx.pop_data(at, FIELD_LEN as u32, 0);
        return InjectOutcome::SkipPushFailed;
    }
    let (data, end) = (ctx.data(), ctx.data_end());
    if data + 3 > end {
        let _ = ctx.pop_data(at, FIELD_LEN as u32, 0);
        return InjectOutcome::SkipPushFailed;
    }
    let grown = len + FIELD_LEN as u32;
    // SAFETY: bounds checked just above.
    unsafe {
        *(data as *mut u8) = (grown >> 16) as u8;
        *((data + 1) as *mut u8) = (grown >> 8) as u8;
        *((data + 2) as *mut u8) = grown as u8;
    }
    InjectOutcome::Injected
}
