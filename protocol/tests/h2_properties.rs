//! Properties of the HTTP/2 parser, checked on deterministic pseudo-random cases drawn from the
//! recorded fixtures and from noise:
//!
//! - in sync, cutting a byte stream anywhere (syscall boundaries are arbitrary) or merging
//!   records gives the same events;
//! - whatever the observer misses (joining at any frame boundary or any offset, capture limits
//!   that cut every record, lost records, gaps anywhere), every header value it reports is the
//!   one that was sent: a missed HPACK insert costs fields, never correctness;
//! - arbitrary and mutated bytes never panic, and buffers and tracked streams stay within the
//!   limits (checked after every call by `h2common::feed`).

mod common;
mod h2common;

use h2common::{
    Rng, Sent, Start, Step, exchanges, feed, fixture_names, load, mutate, render_all, run_with,
    sent,
};
use sonde_protocol::http1::{Http1Conn, Http1Event};
use sonde_protocol::http2::{
    H2Conn, H2Event, H2Exchange, H2cUpgrade, Headers, Limits, RequestHead, ResponseHead, Side,
};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The fixtures that start with the client preface (the upgrade one starts with HTTP/1.1).
fn prior_knowledge() -> Vec<(String, Vec<Step>)> {
    fixture_names()
        .into_iter()
        .filter(|n| !n.contains("upgrade"))
        .map(|n| {
            let s = load(&n);
            (n, s)
        })
        .collect()
}

fn render(steps: &[Step], limits: &Limits, cuts: impl FnMut(&[u8]) -> Vec<usize>) -> Vec<String> {
    render_all(&run_with(Start::New, steps, limits, cuts))
}

#[test]
fn cutting_records_anywhere_gives_the_same_events() {
    let mut rng = Rng(21);
    let limits = Limits::default();
    let mut cases = 0;
    for (name, steps) in prior_knowledge() {
        let whole = render(&steps, &limits, |_| Vec::new());
        assert!(!whole.is_empty(), "{name} produced nothing");
        assert!(
            whole.iter().all(|l| l.starts_with("X ")),
            "{name}: {whole:?}"
        );
        let bytewise = render(&steps, &limits, |b| (1..b.len()).collect());
        assert_eq!(bytewise, whole, "{name}: one byte at a time");
        for _ in 0..60 {
            let cut = render(&steps, &limits, |b| rng.cuts(b.len()));
            assert_eq!(cut, whole, "{name}: cutting the records changed the events");
            cases += 1;
        }
    }
    assert!(cases >= 400, "{cases} cases");
}

#[test]
fn merging_consecutive_records_of_a_side_gives_the_same_events() {
    for (name, steps) in prior_knowledge() {
        let mut merged: Vec<Step> = Vec::new();
        for step in &steps {
            match (merged.last_mut(), step) {
                (Some(Step::Data(s, acc)), Step::Data(side, bytes)) if s == side => {
                    acc.extend_from_slice(bytes)
                }
                _ => merged.push(step.clone()),
            }
        }
        let limits = Limits::default();
        assert_eq!(
            render(&merged, &limits, |_| Vec::new()),
            render(&steps, &limits, |_| Vec::new()),
            "{name}"
        );
    }
}

/// What was sent, by stream (read independently, see `h2common::sent`): the reference.
type Truth = Sent;

fn truth(steps: &[Step]) -> Truth {
    let t = sent(steps);
    // The reference must agree with the parser on clean input before it can judge it.
    let events = run_with(Start::New, steps, &Limits::default(), |_| Vec::new());
    for x in exchanges(&events) {
        check_no_wrong_value("clean run", x, &t);
    }
    t
}

fn request_fields(r: &RequestHead) -> Vec<(String, Vec<u8>)> {
    let pseudo = [
        (":method", &r.method),
        (":scheme", &r.scheme),
        (":authority", &r.authority),
        (":path", &r.path),
        (":protocol", &r.protocol),
    ];
    pseudo
        .into_iter()
        .filter_map(|(n, v)| v.as_ref().map(|v| (n.to_string(), v.as_bytes().to_vec())))
        .chain(fields(&r.headers))
        .collect()
}

fn response_fields(r: &ResponseHead) -> Vec<(String, Vec<u8>)> {
    r.status
        .map(|s| (":status".to_string(), s.to_string().into_bytes()))
        .into_iter()
        .chain(fields(&r.headers))
        .collect()
}

fn fields(h: &Headers) -> Vec<(String, Vec<u8>)> {
    h.iter().map(|(n, v)| (n.to_string(), v.to_vec())).collect()
}

/// Every field `x` reports was sent on its stream, on that side. Returns how many fields it
/// reported.
fn check_no_wrong_value(what: &str, x: &H2Exchange, truth: &Truth) -> usize {
    let reported_req: Vec<_> = x
        .request
        .iter()
        .flat_map(request_fields)
        .chain(x.request_trailers.iter().flat_map(fields))
        .collect();
    let reported_resp: Vec<_> = x
        .response
        .iter()
        .flat_map(response_fields)
        .chain(x.response_trailers.iter().flat_map(fields))
        .collect();
    if reported_req.is_empty() && reported_resp.is_empty() {
        return 0;
    }
    let [sent_req, sent_resp] = truth
        .get(&x.stream_id)
        .unwrap_or_else(|| panic!("{what}: stream {} was never opened: {x:?}", x.stream_id));
    for f in &reported_req {
        assert!(
            sent_req.contains(f),
            "{what}: stream {} request: {f:?} was not sent",
            x.stream_id
        );
    }
    for f in &reported_resp {
        assert!(
            sent_resp.contains(f),
            "{what}: stream {} response: {f:?} was not sent",
            x.stream_id
        );
    }
    reported_req.len() + reported_resp.len()
}

fn check_all(what: &str, events: &[H2Event], truth: &Truth) -> usize {
    exchanges(events)
        .into_iter()
        .map(|x| check_no_wrong_value(what, x, truth))
        .sum()
}

/// Each side's bytes as one stream.
fn sides(steps: &[Step]) -> [Vec<u8>; 2] {
    let mut s = [Vec::new(), Vec::new()];
    for step in steps {
        if let Step::Data(side, b) = step {
            s[*side as usize].extend_from_slice(b);
        }
    }
    s
}

/// Frame boundaries of one side, walked independently of the parser.
fn boundaries(side: Side, bytes: &[u8]) -> Vec<u64> {
    let mut at = match side {
        Side::Request if bytes.starts_with(PREFACE) => PREFACE.len(),
        _ => 0,
    };
    let mut out = Vec::new();
    while at + 9 <= bytes.len() {
        out.push(at as u64);
        at += 9
            + (usize::from(bytes[at]) << 16
                | usize::from(bytes[at + 1]) << 8
                | usize::from(bytes[at + 2]));
    }
    out
}

/// The steps from offsets `from` on (per side): earlier bytes dropped, a straddling record cut.
fn from_offsets(steps: &[Step], from: [u64; 2]) -> Vec<Step> {
    let mut off = [0u64; 2];
    let mut out = Vec::new();
    for step in steps {
        match step {
            Step::Data(side, b) => {
                let i = *side as usize;
                let (start, end) = (off[i], off[i] + b.len() as u64);
                off[i] = end;
                if end > from[i] {
                    let skip = from[i].saturating_sub(start) as usize;
                    out.push(Step::Data(*side, b[skip..].to_vec()));
                }
            }
            other => out.push(other.clone()),
        }
    }
    out
}

fn attach_run(steps: &[Step], from: [u64; 2]) -> Vec<H2Event> {
    let mut conn = H2Conn::attach(Limits::default());
    feed(&mut conn, &from_offsets(steps, from), from, |_| Vec::new())
}

#[test]
fn joining_at_any_frame_boundary_never_reports_a_wrong_value() {
    let mut rng = Rng(22);
    let (mut cases, mut reported, mut paths) = (0, 0, 0);
    for (name, steps) in prior_knowledge() {
        let truth = truth(&steps);
        let [req, resp] = sides(&steps);
        let (bq, bs) = (
            boundaries(Side::Request, &req),
            boundaries(Side::Response, &resp),
        );
        for case in 0..40 {
            let from = [bq[rng.below(bq.len())], bs[rng.below(bs.len())]];
            let events = attach_run(&steps, from);
            reported += check_all(
                &format!("{name} joined at {from:?} (case {case})"),
                &events,
                &truth,
            );
            paths += exchanges(&events)
                .iter()
                .filter(|x| x.path().is_some())
                .count();
            cases += 1;
        }
        // Joining at the very first frame: the tables start empty in fact, but the parser
        // cannot know it, so it only reports what it saw inserted: here, everything.
        let events = attach_run(&steps, [PREFACE.len() as u64, 0]);
        let mine: Vec<String> = render_all(&events);
        let clean = render(&steps, &Limits::default(), |_| Vec::new());
        assert_eq!(mine, clean, "{name}: joined at the first frame");
    }
    assert!(cases >= 200);
    assert!(
        reported > 1000 && paths > 50,
        "{reported} fields, {paths} paths: too little to prove anything"
    );
}

#[test]
fn joining_at_arbitrary_offsets_never_reports_a_wrong_value() {
    let mut rng = Rng(23);
    for (name, steps) in prior_knowledge() {
        let truth = truth(&steps);
        let [req, resp] = sides(&steps);
        for case in 0..40 {
            let from = [rng.below(req.len()) as u64, rng.below(resp.len()) as u64];
            let events = attach_run(&steps, from);
            check_all(
                &format!("{name} joined at {from:?} (case {case})"),
                &events,
                &truth,
            );
        }
    }
}

/// Each record keeps its first `limit` bytes; the rest is a gap (the kernel's capture limit).
fn capture_limited(steps: &[Step], limit: usize) -> Vec<Step> {
    let mut out = Vec::new();
    for step in steps {
        match step {
            Step::Data(side, b) if b.len() > limit => {
                out.push(Step::Data(*side, b[..limit].to_vec()));
                out.push(Step::Gap(*side, (b.len() - limit) as u64));
            }
            other => out.push(other.clone()),
        }
    }
    out
}

#[test]
fn capture_limits_never_report_a_wrong_value() {
    for (name, steps) in prior_knowledge() {
        let truth = truth(&steps);
        for limit in [4096, 1024, 256, 100, 64, 30, 9, 1] {
            let cut = capture_limited(&steps, limit);
            let events = run_with(Start::New, &cut, &Limits::default(), |_| Vec::new());
            check_all(&format!("{name} limited to {limit}"), &events, &truth);
        }
    }
    // The large call: 40000 bytes up, 100014 down, captured 4096 bytes per recv().
    let steps = load("h2_grpc_python_large");
    let events = run_with(
        Start::New,
        &capture_limited(&steps, 4096),
        &Limits::default(),
        |_| Vec::new(),
    );
    let x = exchanges(&events)[0];
    assert_eq!(x.path(), Some("/sonde.fixture.Echo/Unary"));
    let req = x.request_extent.expect("request");
    assert!(req.uncaptured > 0 && req.first == 91, "{req:?}");
}

#[test]
fn lost_records_never_report_a_wrong_value() {
    let mut rng = Rng(24);
    for (name, steps) in prior_knowledge() {
        let truth = truth(&steps);
        for case in 0..40 {
            let lossy: Vec<Step> = steps
                .iter()
                .map(|s| match s {
                    Step::Data(side, b) if rng.below(6) == 0 => Step::Gap(*side, b.len() as u64),
                    other => other.clone(),
                })
                .collect();
            for start in [Start::New, Start::Attach] {
                let events = run_with(start, &lossy, &Limits::default(), |_| Vec::new());
                check_all(&format!("{name} case {case} {start:?}"), &events, &truth);
            }
        }
    }
}

#[test]
fn gaps_anywhere_never_report_a_wrong_value() {
    let mut rng = Rng(25);
    for (name, steps) in prior_knowledge() {
        let truth = truth(&steps);
        for case in 0..60 {
            let mut holed = Vec::new();
            for s in &steps {
                match s {
                    Step::Data(side, b) if b.len() > 1 && rng.below(3) == 0 => {
                        let a = rng.below(b.len());
                        let z = a + 1 + rng.below(b.len() - a);
                        holed.push(Step::Data(*side, b[..a].to_vec()));
                        holed.push(Step::Gap(*side, (z - a) as u64));
                        holed.push(Step::Data(*side, b[z..].to_vec()));
                    }
                    other => holed.push(other.clone()),
                }
            }
            let events = run_with(Start::New, &holed, &Limits::default(), |_| Vec::new());
            check_all(&format!("{name} case {case}"), &events, &truth);
        }
    }
}

/// Small limits so random input reaches them.
fn tight() -> Limits {
    Limits {
        max_streams: 3,
        max_header_block_bytes: 64,
        max_header_list_bytes: 200,
        max_string_bytes: 16,
        max_table_bytes: 128,
        max_stream_header_bytes: 256,
        max_header_bytes: 512,
        max_interim: 1,
        report_pushed: true,
    }
}

/// Frame-shaped noise: frames of every type (mostly with a consistent length) on a few
/// streams, HPACK-looking payloads, fixture fragments and random bytes.
fn noise(rng: &mut Rng, fixtures: &[Vec<u8>], len: usize, clean: bool) -> Vec<u8> {
    const HPACK: [&[u8]; 11] = [
        &[0x82, 0x86, 0x84],
        &[0x83, 0x86, 0x44, 0x02, b'/', b'x'],
        &[0x88],
        &[0x48, 0x03, b'1', b'0', b'3'],
        &[0xbe, 0xbf, 0xc0],
        &[0x40, 0x01, b'a', 0x01, b'b'],
        &[0x20, 0x3f, 0xe1, 0x1f],
        &[0x00, 0x83, 0xff, 0xff, 0xff],
        &[0x0f, 0x2f, 0x81, 0xff],
        &[
            0x00, 0x01, b'k', 0x14, b'v', b'v', b'v', b'v', b'v', b'v', b'v', b'v', b'v', b'v',
            b'v', b'v', b'v', b'v', b'v', b'v', b'v', b'v', b'v', b'v',
        ],
        &[0, 0, 0, 0, 5, 1, 2, 3, 4, 5],
    ];
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        match if clean { 9 } else { rng.below(6) } {
            9 => {
                // A frame that breaks no rule of its type.
                let kind = [0u8, 0, 1, 1, 1, 1, 2, 3, 4, 6, 7, 8][rng.below(12)];
                let id = [1u32, 3, 5, 7, 9, 11, 13][rng.below(7)];
                let (flags, id, payload): (u8, u32, Vec<u8>) = match kind {
                    0 => {
                        let n = rng.below(20);
                        ([0u8, 1][rng.below(2)], id, rng.bytes(n))
                    }
                    1 => {
                        let mut p = Vec::new();
                        for _ in 0..1 + rng.below(3) {
                            p.extend(HPACK[rng.below(HPACK.len())]);
                        }
                        ([4u8, 5][rng.below(2)], id, p)
                    }
                    2 => (0, id, vec![0, 0, 0, 0, 16]),
                    3 => (0, id, vec![0, 0, 0, rng.below(14) as u8]),
                    4 => (0, 0, vec![0, 3, 0, 0, 0, 100]),
                    6 => (0, 0, vec![0; 8]),
                    7 => (0, 0, vec![0, 0, 0, rng.below(9) as u8, 0, 0, 0, 0]),
                    _ => (0, 0, vec![0, 0, 1, 0]),
                };
                out.extend(&(payload.len() as u32).to_be_bytes()[1..]);
                out.extend([kind, flags]);
                out.extend(id.to_be_bytes());
                out.extend(payload);
            }
            0..=2 => {
                let mut payload: Vec<u8> = Vec::new();
                for _ in 0..rng.below(4) {
                    payload.extend(HPACK[rng.below(HPACK.len())]);
                }
                let kind = [0u8, 0, 1, 1, 1, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10][rng.below(15)];
                let flags = [0u8, 1, 4, 5, 8, 0x20, 0x25, 0x2d][rng.below(8)];
                let id = [0u32, 1, 2, 3, 5, 7, 9, 11, 13, 15][rng.below(10)];
                let plen = if rng.below(5) == 0 {
                    rng.below(64)
                } else {
                    payload.len()
                };
                out.extend(&(plen as u32).to_be_bytes()[1..]);
                out.extend([kind, flags]);
                out.extend(id.to_be_bytes());
                out.extend(payload);
            }
            3 => out.extend(PREFACE),
            4 => {
                let f = &fixtures[rng.below(fixtures.len())];
                let a = rng.below(f.len());
                let n = (1 + rng.below(200)).min(f.len() - a);
                out.extend(&f[a..a + n]);
            }
            _ => {
                let n = 1 + rng.below(12);
                out.extend(rng.bytes(n));
            }
        }
    }
    out.truncate(len);
    out
}

#[test]
fn arbitrary_bytes_never_panic_and_stay_bounded() {
    let mut rng = Rng(26);
    let fixtures: Vec<Vec<u8>> = prior_knowledge()
        .iter()
        .flat_map(|(_, s)| sides(s))
        .filter(|b| !b.is_empty())
        .collect();
    let mut seen = std::collections::BTreeSet::new();
    for case in 0..1500 {
        let mut steps = Vec::new();
        if case % 2 == 0 {
            steps.push(Step::Data(Side::Request, PREFACE.to_vec()));
        }
        for _ in 0..1 + rng.below(12) {
            let side = if rng.below(2) == 0 {
                Side::Request
            } else {
                Side::Response
            };
            if rng.below(10) == 0 {
                steps.push(Step::Gap(side, 1 + rng.below(300) as u64));
            } else {
                let len = rng.below(400);
                let clean = case % 5 == 0;
                steps.push(Step::Data(side, noise(&mut rng, &fixtures, len, clean)));
            }
        }
        let limits = if case % 3 == 0 {
            tight()
        } else {
            Limits::default()
        };
        let start = if case % 4 < 2 {
            Start::New
        } else {
            Start::Attach
        };
        // `feed` checks the bounds after every call.
        let mut conn = h2common::conn(start, &limits);
        let whole = feed(&mut conn, &steps, [0, 0], |_| Vec::new());
        if start == Start::New && conn.stats().sync_losses == 0 {
            let cut = run_with(start, &steps, &limits, |b| rng.cuts(b.len()));
            assert_eq!(
                render_all(&cut),
                render_all(&whole),
                "case {case}: in sync, cuts must not matter"
            );
        }
        for line in render_all(&whole) {
            let kind = match line.split(' ').collect::<Vec<_>>()[..] {
                ["E", _, kind, ..] => kind.to_string(),
                [first, ..] => first.to_string(),
                [] => String::new(),
            };
            seen.insert(kind);
        }
    }
    // The noise must reach deep states, or this test proves little.
    for wanted in [
        "X",
        "desync",
        "frame_too_large",
        "invalid_preface",
        "unexpected_continuation",
        "missing_continuation",
        "gap_between_frames",
        "hpack_invalid",
        "hpack_string_too_long",
        "header_block_too_large",
        "malformed_headers",
        "too_many_streams",
        "unexpected_frame",
    ] {
        assert!(seen.contains(wanted), "never reached {wanted}: {seen:?}");
    }
}

#[test]
fn mutated_traffic_never_panics_and_stays_bounded() {
    let mut rng = Rng(27);
    for (name, steps) in prior_knowledge() {
        for case in 0..40 {
            let mutated = mutate(&mut rng, &steps);
            let limits = if case % 4 == 0 {
                tight()
            } else {
                Limits::default()
            };
            for start in [Start::New, Start::Attach] {
                let events = run_with(start, &mutated, &limits, |b| rng.cuts(b.len()));
                assert!(events.len() < 10_000, "{name} case {case}");
            }
        }
    }
}

/// The h2c fixture through both parsers, as the agent does it, cut anywhere.
#[test]
fn h2c_upgrade_hand_over_is_cut_invariant() {
    let steps = load("h2_upgrade_curl");
    let mut rng = Rng(28);
    let run = |cuts: &mut dyn FnMut(&[u8]) -> Vec<usize>| {
        let mut h1 = Http1Conn::new(Default::default());
        let mut out = Vec::new();
        let mut off = [0u64; 2];
        for step in &steps {
            if let Step::Data(side, bytes) = step {
                h1.data(*side, off[*side as usize], bytes, &mut out);
                off[*side as usize] += bytes.len() as u64;
            }
        }
        let (x, req_off, resp_off) = match &out[..] {
            [
                Http1Event::Exchange(x),
                Http1Event::Stopped {
                    request_offset,
                    response_offset,
                    ..
                },
            ] => (x, *request_offset, *response_offset),
            other => panic!("{other:?}"),
        };
        let mut conn = H2Conn::upgraded(
            Limits::default(),
            &H2cUpgrade::from_http1(x, req_off, resp_off),
        );
        render_all(&feed(&mut conn, &steps, [0, 0], cuts))
    };
    let whole = run(&mut |_| Vec::new());
    assert_eq!(whole.len(), 3, "{whole:?}");
    for _ in 0..50 {
        assert_eq!(run(&mut |b| rng.cuts(b.len())), whole);
    }
}
