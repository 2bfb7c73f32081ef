//! Feeds arbitrary bytes to both sides of one HTTP/2 connection, with gaps, under default or
//! tight limits, from the connection's start or joined in the middle.
//!
//! ```text
//! input               the steps of `steps.rs`
//! first selector      bit 3: tight limits; bit 4: joined mid-connection (else the client
//!                     preface is prepended on the request side); bit 5: report pushes
//! ```
//!
//! Checks what must hold whatever the bytes: no panic, bounded buffers and stream table, and,
//! while both directions stay in sync, the same events when every data step is fed one byte at
//! a time.
#![no_main]

#[path = "steps.rs"]
mod input;

use libfuzzer_sys::fuzz_target;
use sonde_protocol::http2::{EndReason, H2Conn, H2Event, Limits, Side};

type Step<'a> = input::Step<'a, Side>;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn run(steps: &[Step<'_>], limits: &Limits, attach: bool, bytewise: bool) -> (Vec<H2Event>, u64) {
    let mut conn = if attach {
        H2Conn::attach(limits.clone())
    } else {
        H2Conn::new(limits.clone())
    };
    let mut out = Vec::new();
    let mut off = [0u64; 2];
    if !attach {
        conn.data(Side::Request, 0, PREFACE, &mut out);
        off[0] = PREFACE.len() as u64;
    }
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
            assert!(conn.buffered(side) <= limits.max_header_block_bytes + 1024);
        }
        assert!(conn.streams() <= limits.max_streams.max(1));
    }
    conn.close(EndReason::Closed, &mut out);
    (out, conn.stats().sync_losses)
}

fuzz_target!(|data: &[u8]| {
    let first = data.first().copied().unwrap_or(0);
    let limits = Limits {
        report_pushed: first & 32 != 0,
        ..if first & 8 != 0 {
            Limits {
                max_streams: 3,
                max_header_block_bytes: 64,
                max_header_list_bytes: 200,
                max_string_bytes: 16,
                max_table_bytes: 128,
                max_stream_header_bytes: 256,
                max_header_bytes: 512,
                max_interim: 1,
                report_pushed: false,
            }
        } else {
            Limits::default()
        }
    };
    let attach = first & 16 != 0;
    let steps = input::steps(data, Side::Request, Side::Response);
    let (whole, losses) = run(&steps, &limits, attach, false);
    if !attach && losses == 0 {
        let (bytewise, _) = run(&steps, &limits, attach, true);
        assert_eq!(whole, bytewise);
    }
});
