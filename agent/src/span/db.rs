//! PostgreSQL, MySQL/MariaDB and Redis behind the protocol seam: the parsers of
//! `sonde_protocol::{postgres, mysql, redis}` for one connection, and one span per operation,
//! named and attributed by the OpenTelemetry database conventions.
//!
//! Kind and reporting side: a traced client reports CLIENT spans. A traced database server
//! reports its operations as SERVER spans only while the client end of the connection is not
//! traced on this host; when both ends are, the operation is reported once, by the client.
//! Trace context: a client operation is a child of the one request its process is serving
//! (the linking rule of HTTP/2 calls, `super::links`); server-side operations start traces.
//!
//! Privacy: `db.query.text` is the sanitised text (literals become `?`, comments go; the
//! services named in `[privacy] raw_query_services` keep the text as sent); the
//! parsers never read passwords (PostgreSQL password messages, MySQL auth data, Redis `AUTH`
//! arguments).

use std::sync::Arc;

use sonde_model::{KeyValue, SpanKind, Status, StatusCode};
use sonde_proto::Direction;
use sonde_protocol::{
    db::{EndReason, Extent, Limits},
    mysql::{MyConn, MyEvent},
    postgres::{PgConn, PgEvent, PgOpKind, PgOutcome},
    redis::{RedisConn, RedisEvent},
    sql::{self, Dialect},
};

use super::{
    http::push,
    protocol::{Cx, Next, ProtocolConn, dir_idx, other, side_of},
    stats::ParseError,
};
use crate::conn::Chunk;

/// The database systems sonde parses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum System {
    Postgres,
    Mysql,
    Redis,
}

impl System {
    /// The protocol label (`sonde_connections_total{protocol}`, parse errors).
    pub fn label(self) -> &'static str {
        match self {
            Self::Postgres => "postgresql",
            Self::Mysql => "mysql",
            Self::Redis => "redis",
        }
    }
}

enum Parser {
    Postgres(PgConn, Vec<PgEvent>),
    Mysql(MyConn, Vec<MyEvent>),
    Redis(RedisConn, Vec<RedisEvent>),
}

/// One database connection.
pub(crate) struct Db {
    parser: Parser,
    /// Which direction carries requests.
    request_dir: Direction,
    /// `db.namespace` learnt from the start of the connection (PostgreSQL database, MySQL
    /// schema).
    namespace: Option<String>,
    /// MariaDB rather than MySQL (from the server's greeting).
    mariadb: bool,
    stopped: bool,
}

/// One operation, whatever the protocol.
struct Op {
    /// `db.operation.name` when the protocol names it (Redis commands, MySQL commands
    /// without SQL).
    operation: Option<String>,
    /// SQL as sent, for SQL systems.
    sql: Option<Arc<str>>,
    /// The text is unknown because the parser let the statement go at its limits.
    query_evicted: bool,
    /// Already-sanitised text (Redis).
    text: Option<String>,
    namespace: Option<String>,
    rows: Option<u64>,
    /// Error code and message.
    error: Option<(String, String)>,
    /// Why the answer is missing.
    incomplete: Option<&'static str>,
    request: Extent,
    response: Option<Extent>,
}

impl Db {
    /// A connection seen from its first byte (`joined`: found already open, in the middle).
    pub fn new(system: System, request_dir: Direction, joined: bool) -> Self {
        let limits = Limits::default();
        let parser = match (system, joined) {
            (System::Postgres, false) => Parser::Postgres(PgConn::new(limits), Vec::new()),
            (System::Postgres, true) => Parser::Postgres(PgConn::joined(limits), Vec::new()),
            (System::Mysql, false) => Parser::Mysql(MyConn::new(limits), Vec::new()),
            (System::Mysql, true) => Parser::Mysql(MyConn::joined(limits), Vec::new()),
            (System::Redis, false) => Parser::Redis(RedisConn::new(limits), Vec::new()),
            (System::Redis, true) => Parser::Redis(RedisConn::joined(limits), Vec::new()),
        };
        Self {
            parser,
            request_dir,
            namespace: None,
            mariadb: false,
            stopped: false,
        }
    }

    fn system_name(&self) -> &'static str {
        match &self.parser {
            Parser::Postgres(..) => "postgresql",
            Parser::Mysql(..) if self.mariadb => "mariadb",
            Parser::Mysql(..) => "mysql",
            Parser::Redis(..) => "redis",
        }
    }

    /// Turns the parser's events into spans.
    fn handle(&mut self, cx: &mut Cx<'_>, now_ns: u64) {
        let mut ops = Vec::new();
        let label = match &mut self.parser {
            Parser::Postgres(_, events) => {
                for ev in events.drain(..) {
                    match ev {
                        PgEvent::Startup(s) => self.namespace = s.database.or(s.user),
                        PgEvent::Operation(op) => {
                            let op = *op;
                            let (error, incomplete) = match op.outcome {
                                PgOutcome::Ok => (None, None),
                                PgOutcome::Error(e) => (Some((e.code, e.message)), None),
                                PgOutcome::NotExecuted => (None, Some("not_executed")),
                                PgOutcome::Incomplete(i) => (None, Some(i.as_str())),
                            };
                            ops.push(Op {
                                operation: (op.kind == PgOpKind::FunctionCall)
                                    .then(|| "FUNCTION CALL".to_owned()),
                                sql: op.query,
                                query_evicted: op.query_evicted,
                                text: None,
                                namespace: self.namespace.clone(),
                                rows: Some(op.data_rows).filter(|n| *n > 0).or(op.rows),
                                error,
                                incomplete,
                                request: op.request,
                                response: op.response,
                            });
                        }
                        PgEvent::Error(e) => cx.parse_error(ParseError {
                            protocol: "postgresql",
                            kind: e.kind.as_str(),
                        }),
                        PgEvent::Stopped { .. } => self.stopped = true,
                        PgEvent::Cancel { .. } => {}
                    }
                }
                Dialect::Postgres
            }
            Parser::Mysql(_, events) => {
                for ev in events.drain(..) {
                    match ev {
                        MyEvent::Handshake(h) => {
                            self.mariadb = h.mariadb;
                            self.namespace = h.database;
                        }
                        MyEvent::Operation(op) => {
                            let op = *op;
                            let sql_command = matches!(op.command.0, 0x03 | 0x16 | 0x17);
                            ops.push(Op {
                                operation: (!sql_command).then(|| {
                                    op.command.as_str().trim_start_matches("COM_").to_owned()
                                }),
                                sql: op.query.filter(|_| sql_command),
                                query_evicted: op.query_evicted && sql_command,
                                text: None,
                                namespace: op.database.or_else(|| self.namespace.clone()),
                                // A result set of no rows (ended by EOF, no OK) is 0 rows.
                                rows: (op.rows > 0).then_some(op.rows).or(op.affected_rows).or((op
                                    .results
                                    > 0
                                    && op.error.is_none()
                                    && sql_command)
                                    .then_some(0)),
                                error: op.error.map(|e| (e.code.to_string(), e.message)),
                                incomplete: op.incomplete.map(|i| i.as_str()),
                                request: op.request,
                                response: op.response,
                            });
                        }
                        MyEvent::Error(e) => cx.parse_error(ParseError {
                            protocol: "mysql",
                            kind: e.kind.as_str(),
                        }),
                        MyEvent::Stopped { .. } => self.stopped = true,
                    }
                }
                Dialect::MySql
            }
            Parser::Redis(_, events) => {
                for ev in events.drain(..) {
                    match ev {
                        RedisEvent::Operation(op) => ops.push(Op {
                            operation: Some(op.command.clone()),
                            sql: None,
                            query_evicted: false,
                            text: Some(op.query_text()),
                            namespace: op.database.map(|d| d.to_string()),
                            rows: None,
                            error: op
                                .reply
                                .as_ref()
                                .and_then(|r| r.error.as_ref())
                                .map(|e| (e.code.clone(), e.message.clone())),
                            incomplete: op.incomplete.map(|i| i.as_str()),
                            request: op.request,
                            response: op.response,
                        }),
                        RedisEvent::Error(e) => cx.parse_error(ParseError {
                            protocol: "redis",
                            kind: e.kind.as_str(),
                        }),
                        RedisEvent::Push { .. } => {}
                    }
                }
                Dialect::Postgres
            }
        };
        for op in ops {
            self.span(cx, op, label, now_ns);
        }
    }

    fn span(&self, cx: &mut Cx<'_>, op: Op, dialect: Dialect, now_ns: u64) {
        let _stage = crate::pipeline::stages::enter(crate::pipeline::stages::Stage::Span);
        if let Some(reason) = op.incomplete {
            cx.stats.count_incomplete(reason);
        }
        let client = cx.conn.is_client();
        // The client end reports it when it is traced here too: never two spans.
        if !client && cx.peer_traced() {
            cx.stats.db_reported_by_client += 1;
            return;
        }
        let resource = cx.resource();
        let c = &*cx.conn;
        let req = &c.timing[dir_idx(self.request_dir)];
        let resp = &c.timing[dir_idx(other(self.request_dir))];
        let start_ns = req
            .at(op.request.first)
            .map_or(now_ns, |t| if client { t.enter_ns } else { t.exit_ns });
        let end_ns = op
            .response
            .and_then(|r| resp.at(r.last))
            .or_else(|| req.at(op.request.last))
            .map_or(now_ns, |t| t.exit_ns)
            .max(start_ns);

        let mut attrs: Vec<KeyValue> = Vec::with_capacity(16);
        push(&mut attrs, "db.system.name", self.system_name());
        if let Some(ns) = op.namespace {
            push(&mut attrs, "db.namespace", ns);
        }
        let summary = op.sql.as_deref().map(|q| sql::summarize(q, dialect));
        let operation = op
            .operation
            .or_else(|| summary.as_ref().and_then(|s| s.operation.clone()));
        if let Some(o) = &operation {
            push(&mut attrs, "db.operation.name", o.clone());
        }
        if let Some(col) = summary.as_ref().and_then(|s| s.collection.clone()) {
            push(&mut attrs, "db.collection.name", col);
        }
        let summary_text = summary.and_then(|s| s.summary);
        if let Some(s) = &summary_text {
            push(&mut attrs, "db.query.summary", s.clone());
        }
        let raw = resource
            .service_name()
            .is_some_and(|svc| cx.config.raw_query_services.iter().any(|s| s == svc));
        let text = op.text.or_else(|| {
            op.sql.as_deref().map(|q| {
                if raw {
                    q.to_owned()
                } else {
                    sql::sanitize(q, dialect)
                }
            })
        });
        if let Some(t) = text {
            push(&mut attrs, "db.query.text", t);
        }
        if op.query_evicted {
            push(&mut attrs, "sonde.db.query_evicted", true);
        }
        if let Some(n) = op.rows {
            push(&mut attrs, "db.response.returned_rows", n as i64);
        }
        let (server, peer) = if client {
            (c.info.remote, c.info.remote)
        } else {
            (c.info.local, c.info.remote)
        };
        let (server_ip, peer_ip) = if client {
            (&c.strings.remote_ip, &c.strings.remote_ip)
        } else {
            (&c.strings.local_ip, &c.strings.remote_ip)
        };
        if let (Some(a), Some(ip)) = (server, server_ip) {
            push(&mut attrs, "server.address", ip.clone());
            push(&mut attrs, "server.port", i64::from(a.port()));
        }
        if let (Some(a), Some(ip)) = (peer, peer_ip) {
            push(&mut attrs, "network.peer.address", ip.clone());
            push(&mut attrs, "network.peer.port", i64::from(a.port()));
        }
        let status = match (&op.error, op.incomplete) {
            (Some((code, message)), _) => {
                push(&mut attrs, "db.response.status_code", code.clone());
                push(&mut attrs, "error.type", code.clone());
                Status {
                    code: StatusCode::Error,
                    message: message.clone(),
                }
            }
            (None, Some(why)) => {
                push(&mut attrs, "error.type", why);
                Status {
                    code: StatusCode::Error,
                    message: format!("no complete answer: {why}"),
                }
            }
            (None, None) => Status::default(),
        };
        let name = summary_text
            .or(operation)
            .unwrap_or_else(|| self.system_name().to_owned());
        let ids = if client {
            // The thread that wrote the operation's first byte.
            let tid = req.at(op.request.first).map_or(0, |t| t.tid);
            cx.links
                .client_request((c.info.pid, tid), start_ns, None, None)
        } else {
            cx.links.decide_unopened(None)
        };
        let link = ids.link;
        let kind = if client {
            SpanKind::Client
        } else {
            SpanKind::Server
        };
        let unix_ns = (cx.clock.unix_ns(start_ns), cx.clock.unix_ns(end_ns));
        let span = ids.into_span(name, kind, unix_ns, attrs, status, resource);
        cx.emit(span, link, None);
    }
}

impl ProtocolConn for Db {
    fn feed(&mut self, cx: &mut Cx<'_>, direction: Direction, chunk: &Chunk) -> Next {
        let side = side_of(direction, self.request_dir);
        let now_ns = match chunk {
            Chunk::Data { meta, .. } => meta.exit_ns,
            Chunk::Gap { .. } => cx.conn.timing[dir_idx(direction)]
                .last()
                .map_or(0, |t| t.exit_ns),
        };
        match (&mut self.parser, chunk) {
            (Parser::Postgres(p, out), Chunk::Data { seq, bytes, .. }) => {
                p.data(side, *seq, bytes, out)
            }
            (Parser::Postgres(p, out), Chunk::Gap { seq, len, .. }) => p.gap(side, *seq, *len, out),
            (Parser::Mysql(p, out), Chunk::Data { seq, bytes, .. }) => {
                p.data(side, *seq, bytes, out)
            }
            (Parser::Mysql(p, out), Chunk::Gap { seq, len, .. }) => p.gap(side, *seq, *len, out),
            (Parser::Redis(p, out), Chunk::Data { seq, bytes, .. }) => {
                p.data(side, *seq, bytes, out)
            }
            (Parser::Redis(p, out), Chunk::Gap { seq, len, .. }) => p.gap(side, *seq, *len, out),
        }
        self.handle(cx, now_ns);
        if self.stopped {
            cx.stats.stopped += 1;
            Next::Stop
        } else {
            Next::Continue
        }
    }

    fn close(&mut self, cx: &mut Cx<'_>, reason: EndReason, at_ns: u64) {
        match &mut self.parser {
            Parser::Postgres(p, out) => p.close(reason, out),
            Parser::Mysql(p, out) => p.close(reason, out),
            Parser::Redis(p, out) => p.close(reason, out),
        }
        self.handle(cx, at_ns);
    }

    fn heap_bytes(&self) -> usize {
        match &self.parser {
            Parser::Postgres(p, out) => p.heap_bytes() + super::protocol::vec_heap(out),
            Parser::Mysql(p, out) => p.heap_bytes() + super::protocol::vec_heap(out),
            Parser::Redis(p, out) => p.heap_bytes() + super::protocol::vec_heap(out),
        }
    }
}
