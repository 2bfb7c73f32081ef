//! When the agent gives freed memory back to the OS (the binary's allocator is mimalloc, see
//! `main.rs`).
//!
//! Start-up frees a lot at once (the kernel BTF, the ELF files inspected for TLS): it goes back
//! at once, so that it does not add to the steady state's peak. Afterwards freed memory waits
//! 50 ms (mimalloc's default is 1 s, and ten times that for its arenas), which keeps the
//! allocator's speed. Measured with nginx under `wrk` (`bench/profile.sh`, which prints the
//! agent's peak RSS): 54 MiB peak at saturation and 52 MiB with 1,000 open connections, as with
//! glibc's malloc (53 and 51), where mimalloc's defaults gave 100 and 70.

use std::ffi::{c_int, c_long};

// The mimalloc library is linked through the crate, whether or not it is the global allocator
// (it is in the `sonde` binary; in tests these calls only tune an unused heap).
use mimalloc as _;

unsafe extern "C" {
    fn mi_option_set(option: c_int, value: c_long);
    fn mi_collect(force: bool);
}

/// `mi_option_purge_delay` in mimalloc v3's `mi_option_t` (mimalloc.h).
const MI_OPTION_PURGE_DELAY: c_int = 15;
/// The purge delay once the agent runs.
const STEADY_PURGE_DELAY_MS: c_long = 50;

/// Before start-up: freed memory goes back at once.
pub fn startup() {
    // SAFETY: sets a plain integer option, read by mimalloc at its next purge.
    unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
}

/// Start-up is over: what it freed is returned now, and later frees wait a little.
pub fn steady() {
    // SAFETY: as above; `mi_collect` only walks mimalloc's own free lists.
    unsafe {
        mi_collect(true);
        mi_option_set(MI_OPTION_PURGE_DELAY, STEADY_PURGE_DELAY_MS);
    }
}
