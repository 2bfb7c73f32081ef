//! Properties of the database parsers, on the recorded fixtures and pseudo-random bytes:
//!
//! - cutting the byte streams anywhere gives the same events;
//! - arbitrary and mutated bytes never panic, and buffers, queues and statement maps stay
//!   within the limits (checked after every call by `dbcommon::drive`);
//! - a connection joined at any record boundary, or after a gap, never reports an operation
//!   the complete run did not (it reports fewer, and says why).

mod dbcommon;

use std::collections::HashSet;

use dbcommon::{DbConn, Rng, Step, db_fixtures, drive, load_db, render_all};
use sonde_protocol::db::{EndReason, Limits, Side};
use sonde_protocol::mysql::MyConn;
use sonde_protocol::postgres::PgConn;
use sonde_protocol::redis::RedisConn;

fn each<C: DbConn>(
    prefix: &str,
    new: impl Fn() -> C,
    check: impl Fn(&str, &[Step], &dyn Fn() -> C),
) {
    let names = db_fixtures(prefix);
    assert!(!names.is_empty(), "no {prefix} fixtures");
    for name in names {
        let steps = load_db(&name);
        check(&name, &steps, &new);
    }
}

fn split_invariant<C: DbConn>(name: &str, steps: &[Step], new: &dyn Fn() -> C) {
    let whole = render_all::<C>(&drive(new(), steps, |_| Vec::new()));
    let mut rng = Rng(name.len() as u64 * 7919);
    for round in 0..40 {
        let cut = render_all::<C>(&drive(new(), steps, |b| rng.cuts(b.len())));
        assert_eq!(whole, cut, "{name}: round {round}");
    }
    let bytewise = render_all::<C>(&drive(new(), steps, |b| (1..b.len()).collect()));
    assert_eq!(whole, bytewise, "{name}: byte by byte");
}

#[test]
fn postgres_split_anywhere() {
    each("pg_", || PgConn::new(Limits::default()), split_invariant);
}

#[test]
fn mysql_split_anywhere() {
    each("mysql_", || MyConn::new(Limits::default()), split_invariant);
}

#[test]
fn redis_split_anywhere() {
    each(
        "redis_",
        || RedisConn::new(Limits::default()),
        split_invariant,
    );
}

/// Is this rendered event a completed operation (not an error or an incomplete one)?
fn completed(line: &str) -> bool {
    let op = line.starts_with("OP ") || line.starts_with("CMD ") || line.starts_with("COM_");
    op && !line.contains("incomplete(")
}

/// `db=<x>` → `db=-`.
fn unknown_db(l: &str) -> String {
    match l.find(" db=") {
        Some(i) => {
            let end = l[i + 4..].find(' ').map_or(l.len(), |j| i + 4 + j);
            format!("{} db=-{}", &l[..i], &l[end..])
        }
        None => l.to_string(),
    }
}

/// The first quoted query → `"-"` (Postgres and MySQL renderings).
fn unknown_query(l: &str) -> String {
    let (Some(a), Some(b)) = (
        l.find(" \""),
        l.find("\" stmt=").or_else(|| l.find("\" id=")),
    ) else {
        return l.to_string();
    };
    format!("{} \"-{}", &l[..a], &l[b..])
}

/// Feeds the steps from `from` on at their true offsets, to a connection joined there.
fn joined_run<C: DbConn>(
    conn: C,
    steps: &[Step],
    from: usize,
    gap_at: Option<usize>,
) -> Vec<String> {
    let mut conn = conn;
    let mut out = Vec::new();
    let mut off = [0u64; 2];
    for (i, step) in steps.iter().enumerate() {
        if let Step::Data(side, bytes) = step {
            let o = &mut off[*side as usize];
            if i >= from {
                if gap_at == Some(i) && bytes.len() > 2 {
                    // Lose the middle of this record.
                    let k = bytes.len() / 2;
                    conn.data(*side, *o, &bytes[..1], &mut out);
                    conn.gap(*side, *o + 1, k as u64, &mut out);
                    conn.data(*side, *o + 1 + k as u64, &bytes[1 + k..], &mut out);
                } else {
                    conn.data(*side, *o, bytes, &mut out);
                }
                conn.check();
            }
            *o += bytes.len() as u64;
        }
    }
    conn.close(EndReason::Closed, &mut out);
    render_all::<C>(&out)
}

fn never_wrong<C: DbConn>(name: &str, steps: &[Step], new: &dyn Fn() -> C, joined: &dyn Fn() -> C) {
    let whole = render_all::<C>(&drive(new(), steps, |_| Vec::new()));
    // A joined connection may know less (a statement prepared before it joined, the database
    // selected before): the same line with those unknown is not wrong.
    let truth: HashSet<String> = whole
        .iter()
        .filter(|l| completed(l))
        .flat_map(|l| {
            let q = unknown_query(l);
            [unknown_db(l), unknown_db(&q), q, l.clone()]
        })
        .collect();
    let mut resynced = 0;
    for from in 1..steps.len() {
        let got = joined_run(joined(), steps, from, None);
        for line in got.iter().filter(|l| completed(l)) {
            assert!(
                truth.contains(line.as_str()),
                "{name} joined at step {from}: {line}\nwhole: {whole:#?}"
            );
        }
        resynced += usize::from(got.iter().any(|l| completed(l)));
    }
    for at in 0..steps.len() {
        let got = joined_run(new(), steps, 0, Some(at));
        for line in got.iter().filter(|l| completed(l)) {
            assert!(
                truth.contains(line.as_str()),
                "{name} gap at step {at}: {line}"
            );
        }
    }
    // Joining is not only safe but useful: most join points find their place again.
    // (Inline Redis commands are not resynchronisation points: see `redis::RedisConn::joined`.)
    if whole.iter().filter(|l| completed(l)).count() > 3 && !name.contains("inline") {
        assert!(resynced > 0, "{name}: never resynchronised");
    }
}

#[test]
fn postgres_joined_midway_never_wrong() {
    each(
        "pg_",
        || PgConn::new(Limits::default()),
        |n, s, new| never_wrong(n, s, new, &|| PgConn::joined(Limits::default())),
    );
}

#[test]
fn mysql_joined_midway_never_wrong() {
    each(
        "mysql_",
        || MyConn::new(Limits::default()),
        |n, s, new| never_wrong(n, s, new, &|| MyConn::joined(Limits::default())),
    );
}

#[test]
fn redis_joined_midway_never_wrong() {
    each(
        "redis_",
        || RedisConn::new(Limits::default()),
        |n, s, new| never_wrong(n, s, new, &|| RedisConn::joined(Limits::default())),
    );
}

/// Small limits so random input reaches them.
fn tight() -> Limits {
    Limits {
        max_message_bytes: 64,
        max_declared_len: 4096,
        max_pending: 4,
        max_statements: 2,
        max_depth: 3,
    }
}

fn random_steps(rng: &mut Rng, seed_bytes: &[Vec<u8>]) -> Vec<Step> {
    let mut steps = Vec::new();
    for _ in 0..rng.below(12) {
        let side = if rng.below(2) == 0 {
            Side::Request
        } else {
            Side::Response
        };
        match rng.below(10) {
            0 => steps.push(Step::Gap(side, rng.below(100) as u64 + 1)),
            1..=4 if !seed_bytes.is_empty() => {
                let mut b = seed_bytes[rng.below(seed_bytes.len())].clone();
                for _ in 0..rng.below(4) {
                    if !b.is_empty() {
                        let i = rng.below(b.len());
                        b[i] = rng.next() as u8;
                    }
                }
                steps.push(Step::Data(side, b));
            }
            _ => {
                let n = rng.below(80);
                steps.push(Step::Data(side, rng.bytes(n)));
            }
        }
    }
    steps
}

fn records(prefix: &str) -> Vec<Vec<u8>> {
    db_fixtures(prefix)
        .iter()
        .flat_map(|n| load_db(n))
        .filter_map(|s| match s {
            Step::Data(_, b) => Some(b),
            _ => None,
        })
        .collect()
}

fn arbitrary<C: DbConn>(prefix: &str, make: &dyn Fn(bool, bool) -> C) {
    let seeds = records(prefix);
    let mut rng = Rng(0xdb5 + prefix.len() as u64);
    // DB_PROPERTY_ROUNDS=200000 for a longer run.
    let rounds: usize = std::env::var("DB_PROPERTY_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3000);
    for _ in 0..rounds {
        let steps = random_steps(&mut rng, &seeds);
        let (tight, joined) = (rng.below(2) == 0, rng.below(3) == 0);
        let _ = drive(make(tight, joined), &steps, |b| rng.cuts(b.len()));
    }
    // Whole fixtures with bytes flipped.
    for name in db_fixtures(prefix) {
        let steps = load_db(&name);
        for _ in 0..200 {
            let mut s = steps.clone();
            for _ in 0..1 + rng.below(3) {
                let i = rng.below(s.len());
                if let Step::Data(_, b) = &mut s[i]
                    && !b.is_empty()
                {
                    let j = rng.below(b.len());
                    b[j] = rng.next() as u8;
                }
            }
            let _ = drive(make(false, false), &s, |_| Vec::new());
        }
    }
}

fn limits(tight_limits: bool) -> Limits {
    if tight_limits {
        tight()
    } else {
        Limits::default()
    }
}

#[test]
fn postgres_arbitrary_bytes() {
    arbitrary("pg_", &|t, j| {
        if j {
            PgConn::joined(limits(t))
        } else {
            PgConn::new(limits(t))
        }
    });
}

#[test]
fn mysql_arbitrary_bytes() {
    arbitrary("mysql_", &|t, j| {
        if j {
            MyConn::joined(limits(t))
        } else {
            MyConn::new(limits(t))
        }
    });
}

#[test]
fn redis_arbitrary_bytes() {
    arbitrary("redis_", &|t, j| {
        if j {
            RedisConn::joined(limits(t))
        } else {
            RedisConn::new(limits(t))
        }
    });
}
