//! Arbitrary text through the SQL sanitiser and summary, in both dialects: no panic and
//! bounded outputs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sonde_protocol::sql::{Dialect, MAX_SUMMARY, sanitize, summarize};

fuzz_target!(|data: &[u8]| {
    let q = String::from_utf8_lossy(data);
    for d in [Dialect::Postgres, Dialect::MySql] {
        let s = sanitize(&q, d);
        assert!(s.len() <= q.len() + 4);
        let sum = summarize(&q, d);
        assert!(sum.summary.map_or(0, |s| s.len()) <= MAX_SUMMARY);
    }
});
