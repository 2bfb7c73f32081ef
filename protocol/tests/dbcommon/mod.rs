//! Shared by the database tests: one driver for the three parsers (they have the same shape),
//! the fixture loader, and one-line renderings of their events.
#![allow(dead_code, unused_imports)] // Each test binary uses a different part.

#[path = "../common/mod.rs"]
mod common;

pub use common::{Rng, Step, parse_trace};
use sonde_protocol::db::{EndReason, Side};
use sonde_protocol::mysql::{MyConn, MyEvent};
use sonde_protocol::postgres::{PgConn, PgEvent, PgOutcome};
use sonde_protocol::redis::{RedisConn, RedisEvent};

/// What the drivers need from a parser.
pub trait DbConn {
    type Event;
    fn data(&mut self, side: Side, offset: u64, bytes: &[u8], out: &mut Vec<Self::Event>);
    fn gap(&mut self, side: Side, offset: u64, len: u64, out: &mut Vec<Self::Event>);
    fn close(&mut self, reason: EndReason, out: &mut Vec<Self::Event>);
    /// Checks the memory bounds.
    fn check(&self);
    fn render(ev: &Self::Event) -> String;
}

impl DbConn for PgConn {
    type Event = PgEvent;
    fn data(&mut self, side: Side, offset: u64, bytes: &[u8], out: &mut Vec<PgEvent>) {
        PgConn::data(self, side, offset, bytes, out)
    }
    fn gap(&mut self, side: Side, offset: u64, len: u64, out: &mut Vec<PgEvent>) {
        PgConn::gap(self, side, offset, len, out)
    }
    fn close(&mut self, reason: EndReason, out: &mut Vec<PgEvent>) {
        PgConn::close(self, reason, out)
    }
    fn check(&self) {
        for side in [Side::Request, Side::Response] {
            assert!(
                self.buffered(side) <= 64 * 1024 + 8,
                "{side} buffered too much"
            );
        }
        assert!(self.pending() <= 257, "too many pending");
        assert!(self.statements() <= 1024);
    }
    fn render(ev: &PgEvent) -> String {
        render_pg(ev)
    }
}

pub fn load_db(name: &str) -> Vec<Step> {
    let path = format!(
        "{}/tests/fixtures/db/{name}.trace",
        env!("CARGO_MANIFEST_DIR")
    );
    parse_trace(&std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}")))
}

/// Every database fixture whose name starts with `prefix`.
pub fn db_fixtures(prefix: &str) -> Vec<String> {
    let dir = format!("{}/tests/fixtures/db", env!("CARGO_MANIFEST_DIR"));
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
        .filter(|n| n.starts_with(prefix))
        .collect();
    names.sort();
    names
}

/// Feeds `steps` to `conn`, each data step cut where `cuts` says.
pub fn drive<C: DbConn>(
    mut conn: C,
    steps: &[Step],
    mut cuts: impl FnMut(&[u8]) -> Vec<usize>,
) -> Vec<C::Event> {
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
                    conn.check();
                }
            }
            Step::Gap(side, len) => {
                let o = &mut off[*side as usize];
                conn.gap(*side, *o, *len, &mut out);
                *o += len;
                conn.check();
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

pub fn render_all<C: DbConn>(events: &[C::Event]) -> Vec<String> {
    events.iter().map(C::render).collect()
}

fn ext(e: &sonde_protocol::db::Extent) -> String {
    format!("{}-{}", e.first, e.last)
}

fn opt_ext(e: &Option<sonde_protocol::db::Extent>) -> String {
    e.as_ref().map_or("-".into(), ext)
}

/// `OP kind "query" cmd rows=.. drows=.. n=.. req a-b resp c-d outcome [copy]`.
pub fn render_pg(ev: &PgEvent) -> String {
    match ev {
        PgEvent::Startup(s) => format!(
            "STARTUP {}.{} user={} db={} app={} req {} resp {} err={}",
            s.version.0,
            s.version.1,
            s.user.as_deref().unwrap_or("-"),
            s.database.as_deref().unwrap_or("-"),
            s.application_name.as_deref().unwrap_or("-"),
            ext(&s.request),
            opt_ext(&s.response),
            s.error.as_ref().map_or("-".into(), |e| e.code.clone()),
        ),
        PgEvent::Operation(op) => {
            let outcome = match &op.outcome {
                PgOutcome::Ok => "ok".to_string(),
                PgOutcome::Error(e) => format!("error({} {} {})", e.severity, e.code, e.message),
                PgOutcome::NotExecuted => "not_executed".into(),
                PgOutcome::Incomplete(i) => format!("incomplete({})", i.as_str()),
            };
            let copy = op.copy.map_or(String::new(), |c| {
                format!(" copy({:?} {}B {}m)", c.direction, c.bytes, c.messages)
            });
            format!(
                "OP {} {:?}{} stmt={} cmd={} rows={} drows={} n={} req {} resp {} {outcome}{copy}{}",
                op.kind.as_str(),
                op.query.as_deref().unwrap_or("-"),
                if op.query_truncated { "…" } else { "" },
                op.statement.as_deref().unwrap_or("-"),
                op.command.as_deref().unwrap_or("-"),
                op.rows.map_or("-".into(), |r| r.to_string()),
                op.data_rows,
                op.statements,
                ext(&op.request),
                opt_ext(&op.response),
                if op.suspended { " suspended" } else { "" },
            )
        }
        PgEvent::Cancel {
            process_id,
            request,
        } => format!("CANCEL {process_id} req {}", ext(request)),
        PgEvent::Error(e) => format!("E {} {} @{}", e.side, e.kind.as_str(), e.offset),
        PgEvent::Stopped {
            reason,
            response_offset,
        } => format!("STOP {reason:?} resp@{response_offset}"),
    }
}

impl DbConn for RedisConn {
    type Event = RedisEvent;
    fn data(&mut self, side: Side, offset: u64, bytes: &[u8], out: &mut Vec<RedisEvent>) {
        RedisConn::data(self, side, offset, bytes, out)
    }
    fn gap(&mut self, side: Side, offset: u64, len: u64, out: &mut Vec<RedisEvent>) {
        RedisConn::gap(self, side, offset, len, out)
    }
    fn close(&mut self, reason: EndReason, out: &mut Vec<RedisEvent>) {
        RedisConn::close(self, reason, out)
    }
    fn check(&self) {
        for side in [Side::Request, Side::Response] {
            assert!(
                self.buffered(side) <= 64 * 1024 + 1024,
                "{side} buffered too much"
            );
        }
        assert!(self.pending() <= 256, "too many pending");
    }
    fn render(ev: &RedisEvent) -> String {
        render_redis(ev)
    }
}

/// `CMD "text" db=.. req a-b resp c-d reply(kind len) [error]`.
pub fn render_redis(ev: &RedisEvent) -> String {
    match ev {
        RedisEvent::Operation(op) => {
            let reply = op.reply.as_ref().map_or("-".to_string(), |r| {
                let mut s = format!("{:?}", r.kind);
                if let Some(n) = r.len {
                    s.push_str(&format!("({n})"));
                }
                if let Some(e) = &r.error {
                    s.push_str(&format!(" {} {:?}", e.code, e.message));
                }
                s
            });
            format!(
                "CMD {:?}{} db={} req {} resp {} {reply}{}",
                op.query_text(),
                if op.inline { " inline" } else { "" },
                op.database.map_or("-".into(), |d| d.to_string()),
                ext(&op.request),
                opt_ext(&op.response),
                op.incomplete
                    .map_or(String::new(), |i| format!(" incomplete({})", i.as_str())),
            )
        }
        RedisEvent::Push { kind, response } => format!("PUSH {kind} resp {}", ext(response)),
        RedisEvent::Error(e) => format!("E {} {} @{}", e.side, e.kind.as_str(), e.offset),
    }
}

impl DbConn for MyConn {
    type Event = MyEvent;
    fn data(&mut self, side: Side, offset: u64, bytes: &[u8], out: &mut Vec<MyEvent>) {
        MyConn::data(self, side, offset, bytes, out)
    }
    fn gap(&mut self, side: Side, offset: u64, len: u64, out: &mut Vec<MyEvent>) {
        MyConn::gap(self, side, offset, len, out)
    }
    fn close(&mut self, reason: EndReason, out: &mut Vec<MyEvent>) {
        MyConn::close(self, reason, out)
    }
    fn check(&self) {
        for side in [Side::Request, Side::Response] {
            assert!(
                self.buffered(side) <= 64 * 1024 + 8,
                "{side} buffered too much"
            );
        }
        assert!(self.pending() <= 256, "too many pending");
        assert!(self.statements() <= 1024);
    }
    fn render(ev: &MyEvent) -> String {
        render_my(ev)
    }
}

/// `COM_X "text" id=.. db=.. rows=.. affected=.. results=.. req a-b resp c-d [error]`.
pub fn render_my(ev: &MyEvent) -> String {
    match ev {
        MyEvent::Handshake(h) => format!(
            "HANDSHAKE {} mariadb={} user={} db={} deprecate_eof={} greeting {} req {} err={}",
            h.server_version,
            h.mariadb,
            h.user.as_deref().unwrap_or("-"),
            h.database.as_deref().unwrap_or("-"),
            h.capabilities & sonde_protocol::mysql::caps::DEPRECATE_EOF != 0,
            ext(&h.greeting),
            opt_ext(&h.request),
            h.error.as_ref().map_or("-".into(), |e| e.code.to_string()),
        ),
        MyEvent::Operation(op) => format!(
            "{} {:?}{} id={} db={} rows={} affected={} results={} req {} resp {}{}{}",
            op.command.as_str(),
            op.query.as_deref().unwrap_or("-"),
            if op.query_truncated { "…" } else { "" },
            op.statement_id.map_or("-".into(), |i| i.to_string()),
            op.database.as_deref().unwrap_or("-"),
            op.rows,
            op.affected_rows.map_or("-".into(), |a| a.to_string()),
            op.results,
            ext(&op.request),
            opt_ext(&op.response),
            op.error.as_ref().map_or(String::new(), |e| format!(
                " error({} {} {})",
                e.code,
                e.sql_state.as_deref().unwrap_or("-"),
                e.message
            )),
            op.incomplete
                .map_or(String::new(), |i| format!(" incomplete({})", i.as_str())),
        ),
        MyEvent::Error(e) => format!("E {} {} @{}", e.side, e.kind.as_str(), e.offset),
        MyEvent::Stopped {
            reason,
            request_offset,
            response_offset,
        } => format!("STOP {reason:?} req@{request_offset} resp@{response_offset}"),
    }
}
