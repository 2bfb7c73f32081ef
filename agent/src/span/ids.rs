//! Trace and span ids: random, never zero (an all-zero id is invalid in W3C Trace Context).
//!
//! Ids need to be unique and unpredictable enough to sample on, not secret: a per-thread
//! xoshiro256++ generator seeded once from the operating system's entropy is an order of
//! magnitude cheaper per id than a cryptographic generator.

use std::cell::RefCell;

use sonde_model::{SpanId, TraceId};

struct Xoshiro256pp([u64; 4]);

impl Xoshiro256pp {
    fn seeded() -> Self {
        loop {
            let s: [u64; 4] = rand::random();
            if s != [0; 4] {
                return Self(s);
            }
        }
    }

    fn next_u64(&mut self) -> u64 {
        let s = &mut self.0;
        let result = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }
}

thread_local! {
    static RNG: RefCell<Xoshiro256pp> = RefCell::new(Xoshiro256pp::seeded());
}

fn next() -> u64 {
    RNG.with(|r| r.borrow_mut().next_u64())
}

pub fn trace_id() -> TraceId {
    loop {
        let (a, b) = (next(), next());
        if a != 0 || b != 0 {
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&a.to_be_bytes());
            id[8..].copy_from_slice(&b.to_be_bytes());
            return TraceId(id);
        }
    }
}

pub fn span_id() -> SpanId {
    loop {
        let v = next();
        if v != 0 {
            return SpanId(v.to_be_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_valid_and_distinct() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            let t = trace_id();
            assert!(t.is_valid());
            assert!(seen.insert(t.0));
            assert!(span_id().is_valid());
        }
        // Both halves of a trace id vary (no constant bytes).
        let a = trace_id();
        let b = trace_id();
        assert_ne!(a.0[..8], b.0[..8]);
        assert_ne!(a.0[8..], b.0[8..]);
    }
}
