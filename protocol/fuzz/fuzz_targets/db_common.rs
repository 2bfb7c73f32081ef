//! The harness shared by the database fuzz targets (`mysql`, `postgres`, `redis`): the input's
//! steps and the checks, the same for every parser.
//!
//! ```text
//! input               the steps of `steps.rs`
//! first selector      bit 3: tight limits; bit 4: joined midway
//! ```
//!
//! Checks what must hold whatever the bytes: no panic, bounded buffers and queues, and, when the
//! parser never lost its place, the same events when every data step is fed one byte at a time.

use sonde_protocol::db::{Limits, Side};

#[path = "steps.rs"]
mod input;

pub type Step<'a> = input::Step<'a, Side>;

pub fn steps(data: &[u8]) -> Vec<Step<'_>> {
    input::steps(data, Side::Request, Side::Response)
}

/// Default limits, or tight ones when bit 3 of the first byte is set.
pub fn limits(sel: u8) -> Limits {
    if sel & 8 != 0 {
        Limits {
            max_message_bytes: 64,
            max_declared_len: 4096,
            max_pending: 4,
            max_statements: 2,
            max_depth: 3,
        }
    } else {
        Limits::default()
    }
}

/// The fuzz target for one database connection type: `$conn` has `new`/`joined(Limits)`,
/// `data`, `gap`, `close`, `buffered` and `pending`; an `$event::Error` whose kind
/// `loses_place()` means it lost its place (a statement let go at a limit does not).
macro_rules! db_fuzz_target {
    ($conn:ident, $event:ident) => {
        fn run(
            steps: &[common::Step<'_>],
            limits: &sonde_protocol::db::Limits,
            joined: bool,
            bytewise: bool,
        ) -> Vec<$event> {
            use sonde_protocol::db::{EndReason, Side};
            let mut conn = if joined {
                $conn::joined(limits.clone())
            } else {
                $conn::new(limits.clone())
            };
            let mut out = Vec::new();
            let mut off = [0u64; 2];
            for step in steps {
                match *step {
                    common::Step::Data(side, bytes) => {
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
                    common::Step::Gap(side, len) => {
                        conn.gap(side, off[side as usize], len, &mut out);
                        off[side as usize] += len;
                    }
                }
                for side in [Side::Request, Side::Response] {
                    assert!(conn.buffered(side) <= limits.max_message_bytes + 1024);
                }
                assert!(conn.pending() <= limits.max_pending.max(1) + 1);
            }
            conn.close(EndReason::Closed, &mut out);
            out
        }

        libfuzzer_sys::fuzz_target!(|data: &[u8]| {
            let sel = data.first().copied().unwrap_or(0);
            let limits = common::limits(sel);
            let joined = sel & 16 != 0;
            let steps = common::steps(data);
            let whole = run(&steps, &limits, joined, false);
            let in_sync = !whole
                .iter()
                .any(|e| matches!(e, $event::Error(err) if err.kind.loses_place()));
            if in_sync && !joined {
                assert_eq!(whole, run(&steps, &limits, joined, true));
            }
        });
    };
}
