//! Trivial programs of every type sonde may use, loaded only by `sonde doctor` to learn what the
//! running kernel allows. They do nothing when attached.

use aya_ebpf::{
    macros::{fentry, kprobe, map, sk_msg, sock_ops, tracepoint, uprobe},
    maps::SockHash,
    programs::{FEntryContext, ProbeContext, SkMsgContext, SockOpsContext, TracePointContext},
};

/// Target map for the sk_msg check. Doctor only; never has entries.
#[map]
pub static DOCTOR_SOCKS: SockHash<u32> = SockHash::with_max_entries(1, 0);

#[tracepoint]
pub fn doctor_tracepoint(_ctx: TracePointContext) -> u32 {
    0
}

#[uprobe]
pub fn doctor_uprobe(_ctx: ProbeContext) -> u32 {
    0
}

#[kprobe]
pub fn doctor_kprobe(_ctx: ProbeContext) -> u32 {
    0
}

#[fentry(function = "tcp_sendmsg")]
pub fn doctor_fentry(_ctx: FEntryContext) -> u32 {
    0
}

#[sock_ops]
pub fn doctor_sock_ops(_ctx: SockOpsContext) -> u32 {
    1
}

#[sk_msg]
pub fn doctor_sk_msg(_ctx: SkMsgContext) -> u32 {
    // SK_PASS
    1
}
