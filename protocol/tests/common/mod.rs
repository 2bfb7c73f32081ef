//! Shared by the integration tests: the fixture trace format, a driver that feeds a trace to
//! an [`Http1Conn`] with any re-chunking, a one-line rendering of events, and a small PRNG.
#![allow(dead_code)] // Each test binary uses a different part.

use sonde_protocol::http1::{EndReason, Http1Conn, Http1Event, Limits, Side};

/// One step of a recorded or synthetic connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    Data(Side, Vec<u8>),
    Gap(Side, u64),
    End(EndReason),
}

/// Parses the trace format of `tests/fixtures/README.md`.
pub fn parse_trace(mut t: &[u8]) -> Vec<Step> {
    let mut steps = Vec::new();
    while !t.is_empty() {
        let nl = t.iter().position(|&b| b == b'\n').expect("line end");
        let line = std::str::from_utf8(&t[..nl]).expect("ASCII header line");
        t = &t[nl + 1..];
        let words: Vec<&str> = line.split(' ').collect();
        let side = |w: &str| match w {
            "req" => Side::Request,
            "resp" => Side::Response,
            other => panic!("bad side {other:?}"),
        };
        match words[..] {
            [w, ..] if w.starts_with('#') => {}
            ["req" | "resp", n] => {
                let n: usize = n.parse().expect("length");
                steps.push(Step::Data(side(words[0]), t[..n].to_vec()));
                assert_eq!(t[n], b'\n', "record not followed by LF");
                t = &t[n + 1..];
            }
            ["gap", s, n] => steps.push(Step::Gap(side(s), n.parse().expect("gap length"))),
            ["end", why] => steps.push(Step::End(match why {
                "closed" => EndReason::Closed,
                "reset" => EndReason::Reset,
                "evicted" => EndReason::Evicted,
                "process_exited" => EndReason::ProcessExited,
                other => panic!("bad end {other:?}"),
            })),
            _ => panic!("bad trace line {line:?}"),
        }
    }
    steps
}

pub fn load(name: &str) -> Vec<Step> {
    let path = format!("{}/tests/fixtures/{name}.trace", env!("CARGO_MANIFEST_DIR"));
    parse_trace(&std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}")))
}

/// Every fixture's name.
pub fn fixture_names() -> Vec<String> {
    let dir = format!("{}/tests/fixtures", env!("CARGO_MANIFEST_DIR"));
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("fixtures dir")
        .filter_map(|e| {
            e.ok()?
                .file_name()
                .into_string()
                .ok()?
                .strip_suffix(".trace")
                .map(String::from)
        })
        .collect();
    names.sort();
    names
}

/// Feeds `steps` to a new connection; each data step is cut where `cuts` says (indices into it).
/// Checks the memory bounds after every call.
pub fn run_with(
    steps: &[Step],
    limits: &Limits,
    mut cuts: impl FnMut(&[u8]) -> Vec<usize>,
) -> Vec<Http1Event> {
    let mut conn = Http1Conn::new(limits.clone());
    let mut out = Vec::new();
    let mut off = [0u64; 2];
    let mut ended = false;
    for step in steps {
        match step {
            Step::Data(side, bytes) => {
                let mut start = 0;
                let mut points = cuts(bytes);
                points.push(bytes.len());
                for end in points {
                    let end = end.clamp(start, bytes.len());
                    let o = &mut off[*side as usize];
                    conn.data(*side, *o, &bytes[start..end], &mut out);
                    *o += (end - start) as u64;
                    start = end;
                    check_bounds(&conn, limits);
                }
            }
            Step::Gap(side, len) => {
                let o = &mut off[*side as usize];
                conn.gap(*side, *o, *len, &mut out);
                *o += len;
                check_bounds(&conn, limits);
            }
            Step::End(reason) => {
                conn.close(*reason, &mut out);
                ended = true;
            }
        }
    }
    if !ended {
        conn.close(EndReason::Closed, &mut out);
    }
    out
}

pub fn run(steps: &[Step]) -> Vec<Http1Event> {
    run_with(steps, &Limits::default(), |_| Vec::new())
}

fn check_bounds(conn: &Http1Conn, limits: &Limits) {
    for side in [Side::Request, Side::Response] {
        assert!(
            conn.buffered(side) <= limits.max_head_bytes,
            "{side} buffered too much"
        );
    }
    assert!(
        conn.pending() <= limits.max_pending.max(1),
        "too many pending"
    );
}

/// One line per event: the unit tests' own renderer (`src/http1/render.rs`).
#[path = "../../src/http1/render.rs"]
mod render;
pub use render::render;

pub fn render_all(events: &[Http1Event]) -> Vec<String> {
    events.iter().map(render).collect()
}

/// Flips bits, truncates, inserts junk, cuts in a gap or replaces a record by one, 1 to 4 times:
/// what a lossy capture or a hostile peer may produce.
pub fn mutate(rng: &mut Rng, steps: &[Step]) -> Vec<Step> {
    let mut out = steps.to_vec();
    for _ in 0..1 + rng.below(4) {
        let i = rng.below(out.len());
        if let Step::Data(side, bytes) = &mut out[i] {
            let side = *side;
            let at = rng.below(bytes.len() + 1);
            match rng.below(5) {
                0 if !bytes.is_empty() => {
                    let i = at.min(bytes.len() - 1);
                    bytes[i] ^= 1 << rng.below(8);
                }
                1 => bytes.truncate(at),
                2 => {
                    let n = 1 + rng.below(16);
                    let junk = rng.bytes(n);
                    bytes.splice(at..at, junk);
                }
                3 => {
                    let rest = bytes.split_off(at);
                    out.insert(i + 1, Step::Gap(side, 1 + rng.below(64) as u64));
                    out.insert(i + 2, Step::Data(side, rest));
                }
                _ => out[i] = Step::Gap(side, bytes.len().max(1) as u64),
            }
        }
    }
    out
}

/// SplitMix64: deterministic, good enough to pick cut points and bytes.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Sorted random cut points inside `0..=len`: none, a few, or every byte.
    pub fn cuts(&mut self, len: usize) -> Vec<usize> {
        match self.below(8) {
            0 => Vec::new(),
            1 => (1..len).collect(),
            k => {
                let mut v: Vec<usize> = (0..k * 2).map(|_| self.below(len + 1)).collect();
                v.sort_unstable();
                v
            }
        }
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}
