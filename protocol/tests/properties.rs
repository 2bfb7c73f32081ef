//! Properties of the HTTP/1 parser, checked on deterministic pseudo-random cases:
//!
//! - cutting a byte stream anywhere (syscall boundaries are arbitrary) gives the same events;
//! - arbitrary and mutated bytes never panic, and buffered bytes and pending requests stay
//!   within the limits (checked after every call by `common::run_with`);
//! - garbage between messages costs a `desync` error, never the pairing.

mod common;

use common::{Rng, Step, fixture_names, load, mutate, parse_trace, render_all, run, run_with};
use sonde_protocol::http1::{Http1Event, Limits, Side};

/// Synthetic conversations that reach the states fixtures do not: gaps, garbage, limits,
/// invalid framing, held bytes after CONNECT.
const SYNTHETIC: &[&[u8]] = &[
    b"req 70\nPOST /u HTTP/1.1\r\nContent-Length: 30\r\n\r\n0123456789abcdefghijklmnopqrst\nresp 38\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n\n",
    b"req 51\nPOST /u HTTP/1.1\r\nContent-Length: 100\r\n\r\n0123456789\ngap req 90\nreq 18\nGET / HTTP/1.1\r\n\r\n\nresp 62\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1 204 No\r\n\r\n\n",
    b"req 22\nGET /lost HTTP/1.1\r\nHo\ngap req 10\nreq 28\nost: x\r\n\r\nGET / HTTP/1.1\r\n\r\n\nresp 83\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhiHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n\n",
    b"req 38\nGET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n\nresp 52\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nab\ngap resp 9\nresp 45\n\r\n0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n\n",
    b"req 48\n\x00\x01binary GET /x\r\n\xff\xfe\nGET /b HTTP/1.1\r\nHost: h\r\n\r\n\nresp 60\n\x16\x03garbage HTTP/1.1 2\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n\n",
    b"req 43\nCONNECT db:5432 HTTP/1.1\r\nHost: db:5432\r\n\r\n\nreq 7\n\x16\x03\x01\x00\xa5\x01\n\nresp 46\nHTTP/1.1 407 Proxy Auth\r\nContent-Length: 0\r\n\r\n\nreq 18\nGET / HTTP/1.1\r\n\r\n\nresp 40\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi\nend reset\n",
    b"req 64\nPOST /x HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!\nreq 18\nGET / HTTP/1.1\r\n\r\n\nresp 39\nHTTP/1.1 400 Bad\r\nContent-Length: x\r\n\r\n\nresp 38\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n\n",
    b"req 61\nPUT /up HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n\nresp 25\nHTTP/1.1 100 Continue\r\n\r\n\nreq 5\nhello\nresp 43\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n\nresp 10\nHTTP/1.0 2\nend evicted\n",
];

fn synthetic() -> Vec<Vec<Step>> {
    SYNTHETIC.iter().map(|t| parse_trace(t)).collect()
}

fn corpus() -> Vec<(String, Vec<Step>)> {
    let mut all: Vec<(String, Vec<Step>)> = fixture_names()
        .into_iter()
        .map(|n| {
            let s = load(&n);
            (n, s)
        })
        .collect();
    all.extend(
        synthetic()
            .into_iter()
            .enumerate()
            .map(|(i, s)| (format!("synthetic {i}"), s)),
    );
    all
}

/// Small limits so random input reaches them.
fn tight() -> Limits {
    Limits {
        max_headers: 4,
        max_head_bytes: 200,
        max_pending: 3,
        max_interim: 2,
        max_chunk_line_bytes: 16,
    }
}

fn assert_split_invariant(name: &str, steps: &[Step], limits: &Limits, rng: &mut Rng) {
    let whole = render_all(&run_with(steps, limits, |_| Vec::new()));
    let cut = render_all(&run_with(steps, limits, |b| rng.cuts(b.len())));
    assert_eq!(cut, whole, "{name}: cutting the records changed the events");
}

#[test]
fn cutting_records_anywhere_gives_the_same_events() {
    let mut rng = Rng(1);
    let mut cases = 0;
    for (name, steps) in corpus() {
        let whole = render_all(&run(&steps));
        assert!(!whole.is_empty(), "{name} produced nothing");
        let bytewise = render_all(&run_with(&steps, &Limits::default(), |b| {
            (1..b.len()).collect()
        }));
        assert_eq!(bytewise, whole, "{name}: one byte at a time");
        for _ in 0..60 {
            assert_split_invariant(&name, &steps, &Limits::default(), &mut rng);
            cases += 1;
        }
    }
    assert!(cases >= 1000, "{cases} cases");
}

#[test]
fn merging_consecutive_records_of_a_side_gives_the_same_events() {
    for (name, steps) in corpus() {
        let mut merged: Vec<Step> = Vec::new();
        for step in &steps {
            match (merged.last_mut(), step) {
                (Some(Step::Data(s, acc)), Step::Data(side, bytes)) if s == side => {
                    acc.extend_from_slice(bytes)
                }
                _ => merged.push(step.clone()),
            }
        }
        assert_eq!(
            render_all(&run(&merged)),
            render_all(&run(&steps)),
            "{name}"
        );
    }
}

/// Random bytes drawn partly from HTTP's vocabulary, so they reach deep states.
fn noise(rng: &mut Rng, len: usize) -> Vec<u8> {
    const WORDS: &[&[u8]] = &[
        b"GET ",
        b"HEAD ",
        b"POST /x ",
        b"CONNECT a:1 ",
        b"HTTP/1.1",
        b"HTTP/1.0 ",
        b"HTTP/1.1 200 OK",
        b"HTTP/1.1 100 Continue",
        b"HTTP/1.1 101 S",
        b" 204 ",
        b" 304 ",
        b"\r\n",
        b"\n",
        b"\r\n\r\n",
        b"Content-Length: 5",
        b"Content-Length: x",
        b"Transfer-Encoding: chunked",
        b"Upgrade: ws",
        b"5\r\nhello\r\n",
        b"0\r\n\r\n",
        b";ext=1",
        b"X: y",
        b" folded",
        b"\t",
        b":",
        b"/",
        b" ",
        b"GET / HTTP/1.1\r\n\r\n",
        b"HEAD /h HTTP/1.1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"\r\nX: 1\r\nX: 2\r\nX: 3\r\nX: 4\r\nX: 5\r\n",
        b"\r\nContent-Length: 3\r\n\r\n",
        b"zz\r\n",
        b"HTTP/1.1 103 Hints\r\n\r\n",
        b"\r\nX-Long: ",
        &[b'a'; 180],
    ];
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        if rng.below(3) == 0 {
            let n = 1 + rng.below(8);
            out.extend(rng.bytes(n));
        } else {
            out.extend_from_slice(WORDS[rng.below(WORDS.len())]);
        }
    }
    out
}

fn random_steps(rng: &mut Rng) -> Vec<Step> {
    let mut steps = Vec::new();
    for _ in 0..rng.below(12) + 1 {
        let side = if rng.below(2) == 0 {
            Side::Request
        } else {
            Side::Response
        };
        match rng.below(10) {
            0 => steps.push(Step::Gap(side, 1 + rng.below(300) as u64)),
            _ => {
                let len = rng.below(400);
                steps.push(Step::Data(side, noise(rng, len)));
            }
        }
    }
    steps
}

#[test]
fn arbitrary_bytes_never_panic_and_stay_bounded() {
    let mut rng = Rng(2);
    let mut seen = std::collections::BTreeSet::new();
    for case in 0..600 {
        let steps = random_steps(&mut rng);
        let limits = if case % 2 == 0 {
            tight()
        } else {
            Limits::default()
        };
        // run_with checks the bounds after every call.
        assert_split_invariant(&format!("random case {case}"), &steps, &limits, &mut rng);
        for line in render_all(&run_with(&steps, &limits, |_| Vec::new())) {
            let kind = match line.split(' ').collect::<Vec<_>>()[..] {
                ["E", _, kind, _] => kind.to_string(),
                [first, ..] => first.to_string(),
                [] => String::new(),
            };
            seen.insert(kind);
        }
    }
    // The noise must reach deep states, or this test proves little.
    for wanted in [
        "X",
        "S",
        "desync",
        "malformed_header",
        "too_many_headers",
        "head_too_large",
        "invalid_content_length",
        "invalid_chunk",
        "unexpected_response",
        "gap_in_head",
        "response_to_lost_request",
        "too_many_pending",
        "gap_between_messages",
    ] {
        assert!(seen.contains(wanted), "never reached {wanted}: {seen:?}");
    }
}

#[test]
fn mutated_traffic_never_panics_and_stays_bounded() {
    let mut rng = Rng(3);
    for (name, steps) in corpus() {
        for case in 0..40 {
            let mutated = mutate(&mut rng, &steps);
            let limits = if case % 4 == 0 {
                tight()
            } else {
                Limits::default()
            };
            assert_split_invariant(
                &format!("{name} mutation {case}"),
                &mutated,
                &limits,
                &mut rng,
            );
        }
    }
}

/// `(method, target, status, request body, response body)` of an exchange.
type Summary = (String, String, Option<u16>, u64, Option<u64>);

fn summary(events: &[Http1Event]) -> Vec<Summary> {
    events
        .iter()
        .filter_map(|e| match e {
            Http1Event::Exchange(x) => Some((
                x.request.method.clone(),
                x.request.target.clone(),
                x.status(),
                x.request_extent.body_len,
                x.response_extent.map(|r| r.body_len),
            )),
            _ => None,
        })
        .collect()
}

#[test]
fn garbage_between_messages_costs_an_error_not_the_pairing() {
    let mut rng = Rng(4);
    for name in fixture_names()
        .into_iter()
        .filter(|n| !n.contains("upgrade"))
    {
        let steps = load(&name);
        let clean = summary(&run(&steps));
        for case in 0..30 {
            // Insert garbage before records that start a message.
            let mut dirty = Vec::new();
            let mut inserted = 0;
            for step in &steps {
                if let Step::Data(side, bytes) = step {
                    let starts = match side {
                        Side::Request => bytes.first().is_some_and(u8::is_ascii_uppercase),
                        Side::Response => bytes.starts_with(b"HTTP/1."),
                    };
                    if starts && rng.below(2) == 0 {
                        // Lowercase and binary only: garbage, never a message start.
                        let n = 1 + rng.below(40);
                        let junk: Vec<u8> = rng
                            .bytes(n)
                            .into_iter()
                            .map(|b| match b {
                                b'A'..=b'Z' => b.to_ascii_lowercase(),
                                _ => b,
                            })
                            .collect();
                        dirty.push(Step::Data(*side, junk));
                        inserted += 1;
                    }
                }
                dirty.push(step.clone());
            }
            let events = run(&dirty);
            assert_eq!(summary(&events), clean, "{name} case {case}");
            let errors: Vec<String> = render_all(&events)
                .into_iter()
                .filter(|l| l.starts_with("E "))
                .collect();
            assert!(errors.len() <= inserted, "{name} case {case}: {errors:?}");
            assert!(
                errors.iter().all(|e| e.contains(" desync @")),
                "{name} case {case}: {errors:?}"
            );
        }
    }
}
