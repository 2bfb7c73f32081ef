//! Shared by the HTTP/2 integration tests: drivers that feed a trace (the format of
//! `tests/fixtures/README.md`) to an [`H2Conn`] with any re-chunking, and a one-line rendering
//! of events.
#![allow(dead_code, unused_imports)] // Each test binary uses a different part.

pub use crate::common::{Rng, Step, mutate};
use sonde_protocol::http2::{EndReason, Extent, H2Conn, H2Event, H2Exchange, Limits, Side};
use std::collections::BTreeMap;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Header fields sent on one stream: `[request side, response side]`, every block together.
pub type Sent = BTreeMap<u32, [Vec<(String, Vec<u8>)>; 2]>;

/// What a fixture's header blocks say, read independently of the parser under test: frames
/// walked by length, blocks decoded by `httlib-hpack`. PUSH_PROMISE blocks count as the
/// promised stream's request.
pub fn sent(steps: &[Step]) -> Sent {
    let mut bytes = [Vec::new(), Vec::new()];
    for step in steps {
        if let Step::Data(side, b) = step {
            bytes[*side as usize].extend_from_slice(b);
        }
    }
    let mut out = Sent::new();
    for side in [Side::Request, Side::Response] {
        let b = &bytes[side as usize];
        let mut at = if b.starts_with(PREFACE) {
            PREFACE.len()
        } else if b.starts_with(b"HTTP/1.1 101") || b.starts_with(b"GET ") {
            b.windows(4)
                .position(|w| w == b"\r\n\r\n")
                .expect("HTTP/1 head")
                + 4
        } else {
            0
        };
        if side == Side::Request
            && !b.starts_with(PREFACE)
            && let Some(p) = b.windows(PREFACE.len()).position(|w| w == PREFACE)
        {
            at = p + PREFACE.len();
        }
        let mut decoder = httlib_hpack::Decoder::default();
        let mut block: Vec<u8> = Vec::new();
        let mut target = 0u32;
        while at + 9 <= b.len() {
            let len =
                usize::from(b[at]) << 16 | usize::from(b[at + 1]) << 8 | usize::from(b[at + 2]);
            let (kind, flags) = (b[at + 3], b[at + 4]);
            let id = u32::from_be_bytes([b[at + 5], b[at + 6], b[at + 7], b[at + 8]]) & 0x7fff_ffff;
            let Some(payload) = b.get(at + 9..at + 9 + len) else {
                break;
            };
            at += 9 + len;
            let mut body = payload;
            if matches!(kind, 1 | 5) {
                let pad = if flags & 0x8 != 0 {
                    usize::from(body[0])
                } else {
                    0
                };
                body = &body[usize::from(flags & 0x8 != 0)..body.len() - pad];
                if kind == 1 && flags & 0x20 != 0 {
                    body = &body[5..];
                }
                target = id;
                if kind == 5 {
                    target = u32::from_be_bytes([body[0], body[1], body[2], body[3]]) & 0x7fff_ffff;
                    body = &body[4..];
                }
                block.clear();
            }
            if matches!(kind, 1 | 5 | 9) {
                block.extend_from_slice(body);
                if flags & 0x4 != 0 {
                    let mut buf = std::mem::take(&mut block);
                    let mut fields = Vec::new();
                    decoder
                        .decode(&mut buf, &mut fields)
                        .expect("the fixture's HPACK decodes");
                    let slot = if kind == 5 { 0 } else { side as usize };
                    out.entry(target).or_default()[slot].extend(
                        fields
                            .into_iter()
                            .map(|(n, v, _)| (String::from_utf8(n).expect("ASCII name"), v)),
                    );
                }
            }
        }
    }
    out
}

/// The HTTP/2 fixtures (`tests/fixtures/h2/*.trace`), by name.
pub fn fixture_names() -> Vec<String> {
    let dir = format!("{}/tests/fixtures/h2", env!("CARGO_MANIFEST_DIR"));
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

pub fn load(name: &str) -> Vec<Step> {
    crate::common::load(&format!("h2/{name}"))
}

/// How a connection is started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// `H2Conn::new`: prior knowledge, from the first byte.
    New,
    /// `H2Conn::attach`: joined in the middle.
    Attach,
}

pub fn conn(start: Start, limits: &Limits) -> H2Conn {
    match start {
        Start::New => H2Conn::new(limits.clone()),
        Start::Attach => H2Conn::attach(limits.clone()),
    }
}

/// Feeds `steps` to `conn`; each data step is cut where `cuts` says (indices into it). Checks
/// the memory bounds after every call.
pub fn feed(
    conn: &mut H2Conn,
    steps: &[Step],
    offsets: [u64; 2],
    mut cuts: impl FnMut(&[u8]) -> Vec<usize>,
) -> Vec<H2Event> {
    let limits = conn.limits().clone();
    let mut out = Vec::new();
    let mut off = offsets;
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
                    check_bounds(conn, &limits);
                }
            }
            Step::Gap(side, len) => {
                let o = &mut off[*side as usize];
                conn.gap(*side, *o, *len, &mut out);
                *o += len;
                check_bounds(conn, &limits);
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

pub fn run_with(
    start: Start,
    steps: &[Step],
    limits: &Limits,
    cuts: impl FnMut(&[u8]) -> Vec<usize>,
) -> Vec<H2Event> {
    feed(&mut conn(start, limits), steps, [0, 0], cuts)
}

pub fn run(steps: &[Step]) -> Vec<H2Event> {
    run_with(Start::New, steps, &Limits::default(), |_| Vec::new())
}

pub fn check_bounds(conn: &H2Conn, limits: &Limits) {
    for side in [Side::Request, Side::Response] {
        assert!(
            conn.buffered(side) <= limits.max_header_block_bytes + 1024,
            "{side} buffered {}",
            conn.buffered(side)
        );
    }
    assert!(
        conn.streams() <= limits.max_streams.max(1),
        "too many streams"
    );
}

/// One line per event:
///
/// ```text
/// X 1 POST /a.B/C 200 req[91-369 b14 m1] resp[72-239 b17 m1] - u0
///   extents: first-last, body bytes; u<n> uncaptured, m<n> gRPC messages (~ inexact),
///   L frames maybe lost, ! not complete; then the incomplete label and the unrecovered field count (? when a
///   pseudo-header is unknown), and R<side>:<code> for a RST_STREAM
/// E request desync @12 s3                      error: side, label, offset, stream
/// ```
pub fn render(ev: &H2Event) -> String {
    match ev {
        H2Event::Exchange(x) => render_exchange(x),
        H2Event::Error(e) => {
            let s = e.stream_id.map_or(String::new(), |s| format!(" s{s}"));
            format!("E {} {} @{}{s}", e.side, e.kind.as_str(), e.offset)
        }
    }
}

pub fn render_exchange(x: &H2Exchange) -> String {
    let opt = |v: Option<&str>| v.unwrap_or("-").to_string();
    let status = x.status().map_or("-".to_string(), |s| s.to_string());
    let ext = |e: &Option<Extent>| e.as_ref().map_or("-".to_string(), extent);
    let inc = x.incomplete.map_or("-", |i| i.as_str());
    let reset = x
        .reset
        .map_or(String::new(), |r| format!(" R{}:{}", r.by, r.code));
    let pseudo = if x.pseudo_unknown() { "?" } else { "" };
    let interim: String = x
        .interim
        .iter()
        .map(|i| format!(" {}@{}", i.status, i.first))
        .collect();
    format!(
        "X {} {} {} {status}{interim} req{} resp{} {inc} u{}{pseudo}{reset}",
        x.stream_id,
        opt(x.method()),
        opt(x.path()),
        ext(&x.request_extent),
        ext(&x.response_extent),
        x.unrecovered(),
    )
}

fn extent(e: &Extent) -> String {
    let mut flags = String::new();
    if e.uncaptured > 0 {
        flags.push_str(&format!(" u{}", e.uncaptured));
    }
    if let Some(m) = e.messages {
        flags.push_str(&format!(" m{}{}", m.count, if m.exact { "" } else { "~" }));
    }
    if e.lost {
        flags.push_str(" L");
    }
    if !e.complete {
        flags.push('!');
    }
    format!("[{}-{} b{}{flags}]", e.first, e.last, e.body_len)
}

pub fn render_all(events: &[H2Event]) -> Vec<String> {
    events.iter().map(render).collect()
}

pub fn exchanges(events: &[H2Event]) -> Vec<&H2Exchange> {
    events
        .iter()
        .filter_map(|e| match e {
            H2Event::Exchange(x) => Some(&**x),
            H2Event::Error(_) => None,
        })
        .collect()
}
