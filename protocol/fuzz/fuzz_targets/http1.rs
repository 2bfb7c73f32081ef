//! Feeds arbitrary bytes to both sides of one HTTP/1 connection, with gaps, under tight limits.
//!
//! ```text
//! input               the steps of `steps.rs`
//! first selector      bit 3: tight limits
//! ```
//!
//! Checks what must hold whatever the bytes: no panic, bounded buffers and queue, and the same
//! events when every data step is fed one byte at a time.
#![no_main]

#[path = "steps.rs"]
mod input;

use libfuzzer_sys::fuzz_target;
use sonde_protocol::http1::{EndReason, Http1Conn, Http1Event, Limits, Side};

type Step<'a> = input::Step<'a, Side>;

fn run(steps: &[Step<'_>], limits: &Limits, bytewise: bool) -> Vec<Http1Event> {
    let mut conn = Http1Conn::new(limits.clone());
    let mut out = Vec::new();
    let mut off = [0u64; 2];
    for step in steps {
        match *step {
            Step::Data(side, bytes) => {
                let chunks: Vec<&[u8]> = if bytewise {
                    bytes.chunks(1).collect()
                } else {
                    vec![bytes]
                };
                for chunk in chunks {
                    conn.data(side, off[side as usize], chunk, &mut out);
                    off[side as usize] += chunk.len() as u64;
                }
            }
            Step::Gap(side, len) => {
                conn.gap(side, off[side as usize], len, &mut out);
                off[side as usize] += len;
            }
        }
        for side in [Side::Request, Side::Response] {
            assert!(conn.buffered(side) <= limits.max_head_bytes);
        }
        assert!(conn.pending() <= limits.max_pending);
    }
    conn.close(EndReason::Closed, &mut out);
    out
}

fuzz_target!(|data: &[u8]| {
    let limits = match data.first() {
        Some(sel) if sel & 8 != 0 => Limits {
            max_headers: 4,
            max_head_bytes: 128,
            max_pending: 3,
            max_interim: 2,
            max_chunk_line_bytes: 8,
        },
        _ => Limits::default(),
    };
    let steps = input::steps(data, Side::Request, Side::Response);
    let whole = run(&steps, &limits, false);
    let bytewise = run(&steps, &limits, true);
    assert_eq!(whole, bytewise);
});
