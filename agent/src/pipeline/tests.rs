//! The whole userspace pipeline without root: recorded connections (the real-traffic fixtures
//! of `protocol/tests/fixtures`, turned into the events the kernel would have written) go
//! through the driver, connection tracking, the span stage, linking and the policy sink into
//! memory, and the spans are checked.

use std::sync::Arc;

use bytes::Bytes;
use sonde_model::{Resource, Span, SpanId, SpanKind, TraceId, Value};
use sonde_proto::{CloseReason, ConnSource, CtxKind, CtxSource, Direction, InjectOutcome, Role};

use super::{Driver, NoKernel};
use crate::{
    clock::WallClock,
    conn::{ConnTracker, Limits},
    events::{ConnCloseEv, ConnOpenEv, DataEv, Event, Meta, TraceCtxEv, VecSource},
    privacy::{Policy, PrivacySection},
    sampling::{RootSampler, SamplingConfig, sink::PolicySink},
    span::{FixedResource, HttpConfig, SpanStage},
};

/// Nanoseconds between two recorded syscalls.
const STEP: u64 = 1_000_000;

/// One recorded `recv()` of a fixture: the request side or the response side, and its bytes.
fn fixture(name: &str) -> Vec<(bool, Vec<u8>)> {
    let path = format!(
        "{}/../protocol/tests/fixtures/{name}.trace",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut t = &text[..];
    let mut out = Vec::new();
    while !t.is_empty() {
        let nl = t.iter().position(|&b| b == b'\n').expect("line end");
        let line = std::str::from_utf8(&t[..nl]).expect("header line");
        t = &t[nl + 1..];
        let words: Vec<&str> = line.split(' ').collect();
        match words[..] {
            [w, ..] if w.starts_with('#') => {}
            [side @ ("req" | "resp"), n] => {
                let n: usize = n.parse().expect("length");
                out.push((side == "req", t[..n].to_vec()));
                t = &t[n + 1..];
            }
            ["end", _] => {}
            _ => panic!("{name}: unexpected line {line:?}"),
        }
    }
    out
}

/// Builds the events of connections as the kernel reports them.
struct Recorder {
    events: Vec<Event>,
    now: u64,
}

impl Recorder {
    fn new() -> Self {
        Self {
            events: Vec::new(),
            now: STEP,
        }
    }

    fn meta(&mut self, pid: u32) -> Meta {
        self.now += STEP;
        Meta {
            pid,
            tid: pid,
            cpu: 0,
            enter_ns: self.now - STEP / 2,
            exit_ns: self.now,
        }
    }

    fn open(&mut self, id: u64, pid: u32, role: Role, local: &str, remote: &str) {
        let meta = self.meta(pid);
        self.events.push(Event::ConnOpen(ConnOpenEv {
            meta,
            conn_id: id,
            fd: id as u32,
            role,
            source: if role == Role::Client {
                ConnSource::Connect
            } else {
                ConnSource::Accept
            },
            local: local.parse().unwrap(),
            remote: remote.parse().unwrap(),
            tcp_state: 1,
            netns: 0,
            comm: "test".into(),
            cgroup_id: 0,
        }));
    }

    /// One syscall's bytes; returns the syscall's metadata.
    fn data(&mut self, id: u64, pid: u32, role: Role, dir: Direction, seq: u64, b: &[u8]) -> Meta {
        let meta = self.meta(pid);
        self.events.push(Event::Data(DataEv {
            meta,
            conn_id: id,
            seq,
            direction: dir,
            role,
            syscall: if dir == Direction::Ingress {
                sonde_proto::Syscall::Read
            } else {
                sonde_proto::Syscall::Write
            },
            fd: id as u32,
            orig_len: b.len() as u32,
            payload: Bytes::copy_from_slice(b),
            iov_limit: false,
            read_failed: false,
            tls: false,
        }));
        meta
    }

    fn close(&mut self, id: u64, pid: u32) {
        let meta = self.meta(pid);
        self.events.push(Event::ConnClose(ConnCloseEv {
            meta,
            conn_id: id,
            fd: id as u32,
            reason: CloseReason::Close,
            tx_bytes: 0,
            rx_bytes: 0,
        }));
    }

    /// A whole fixture on one connection, seen from `role`'s process; returns the metadata of
    /// each syscall in order.
    fn connection(&mut self, id: u64, pid: u32, role: Role, name: &str) -> Vec<(bool, Meta)> {
        let (local, remote) = addrs(role);
        self.open(id, pid, role, local, remote);
        let metas = self.records(id, pid, role, &fixture(name), &mut [0, 0]);
        self.close(id, pid);
        metas
    }

    /// Records on an open connection; `seqs` holds the next offset of [request, response].
    fn records(
        &mut self,
        id: u64,
        pid: u32,
        role: Role,
        records: &[(bool, Vec<u8>)],
        seqs: &mut [u64; 2],
    ) -> Vec<(bool, Meta)> {
        let mut metas = Vec::new();
        for (req, bytes) in records {
            // Requests come in to servers and go out of clients.
            let dir = match (req, role) {
                (true, Role::Client) | (false, Role::Server) => Direction::Egress,
                _ => Direction::Ingress,
            };
            let i = usize::from(!req);
            metas.push((*req, self.data(id, pid, role, dir, seqs[i], bytes)));
            seqs[i] += bytes.len() as u64;
        }
        metas
    }

    /// The kernel's trace context for the request at `seq`.
    fn ctx(&mut self, id: u64, pid: u32, kind: CtxKind, seq: u64, ids: (u8, u8, u8), flags: u8) {
        let meta = self.meta(pid);
        self.events.push(Event::TraceCtx(TraceCtxEv {
            meta,
            conn_id: id,
            seq,
            kind,
            source: CtxSource::NewTrace,
            inject: InjectOutcome::NotAttempted,
            trace_id: [ids.0; 16],
            span_id: [ids.1; 8],
            parent_span_id: (ids.2 != 0).then_some([ids.2; 8]),
            flags,
        }));
    }
}

fn addrs(role: Role) -> (&'static str, &'static str) {
    match role {
        Role::Client => ("127.0.0.1:40000", "127.0.0.1:8080"),
        _ => ("127.0.0.1:8080", "127.0.0.1:40000"),
    }
}

/// Runs `events` through driver → conn → span stage → policy → memory.
fn pipeline(events: Vec<Event>, http: HttpConfig, sampling: SamplingConfig) -> Vec<Span> {
    pipeline_of(events, http, sampling, Resource::default())
}

/// [`pipeline`] with every span from the process `resource` describes.
fn pipeline_of(
    events: Vec<Event>,
    http: HttpConfig,
    sampling: SamplingConfig,
    resource: Resource,
) -> Vec<Span> {
    let mut sink = run_stage(events, http, sampling, resource).into_out();
    sink.finish();
    std::mem::take(sink.inner_mut())
}

/// [`pipeline_of`], returning the span stage (its statistics, and the spans in its sink).
fn run_stage(
    events: Vec<Event>,
    http: HttpConfig,
    sampling: SamplingConfig,
    resource: Resource,
) -> SpanStage<PolicySink<Vec<Span>>, FixedResource> {
    let policy = Policy::new(&PrivacySection::default()).unwrap();
    let sink = PolicySink::new(Vec::new(), sampling, policy, None);
    let stage = SpanStage::new(
        http,
        WallClock::with_offset(0),
        FixedResource(Arc::new(resource)),
        sink,
    );
    let driver = Driver::new(ConnTracker::without_role_resolver(Limits::default()), stage);
    let mut source = VecSource::new(events.chunks(7).map(<[Event]>::to_vec));
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(driver.run_recorded(&mut source, &mut NoKernel))
        .unwrap()
}

fn str_attr<'a>(s: &'a Span, key: &str) -> &'a str {
    match s.attr(key) {
        Some(Value::Str(v)) => v,
        other => panic!("{}: {key} = {other:?}", s.name),
    }
}

fn int_attr(s: &Span, key: &str) -> i64 {
    match s.attr(key) {
        Some(Value::Int(v)) => *v,
        other => panic!("{}: {key} = {other:?}", s.name),
    }
}

#[test]
fn http1_keep_alive_and_pipelining_give_one_span_per_request_with_syscall_timing() {
    for (name, want) in [
        (
            "curl_keepalive_nginx",
            [
                ("GET", "/index.html", 200),
                ("GET", "/missing", 404),
                ("GET", "/small.txt", 200),
            ],
        ),
        (
            "pipelined_nginx",
            [
                ("GET", "/index.html", 200),
                ("GET", "/small.txt", 200),
                ("GET", "/missing", 404),
            ],
        ),
    ] {
        let mut r = Recorder::new();
        let metas = r.connection(1, 10, Role::Server, name);
        let spans = pipeline(r.events, HttpConfig::default(), SamplingConfig::default());
        let got: Vec<(&str, &str, i64)> = spans
            .iter()
            .map(|s| {
                (
                    str_attr(s, "http.request.method"),
                    str_attr(s, "url.path"),
                    int_attr(s, "http.response.status_code"),
                )
            })
            .collect();
        assert_eq!(got, want, "{name}");
        assert!(spans.iter().all(|s| s.kind == SpanKind::Server), "{name}");
        // The first span starts when the read of the first request byte returned.
        let first_read = metas.iter().find(|(req, _)| *req).unwrap().1;
        assert_eq!(spans[0].start_unix_nanos, first_read.exit_ns, "{name}");
        // The last ends when the write of the last response byte returned.
        let last_write = metas.iter().rev().find(|(req, _)| !*req).unwrap().1;
        assert_eq!(spans[2].end_unix_nanos, last_write.exit_ns, "{name}");
        // Three traces, each a root: no kernel context was given, no header carried one.
        let traces: std::collections::HashSet<TraceId> = spans.iter().map(|s| s.trace_id).collect();
        assert_eq!(traces.len(), 3, "{name}");
        assert!(spans.iter().all(|s| s.parent_span_id.is_none()), "{name}");
    }
}

#[test]
fn grpc_over_h2c_and_an_h2c_upgrade_become_spans() {
    let mut r = Recorder::new();
    r.connection(1, 10, Role::Server, "h2/h2_grpc_python");
    let spans = pipeline(r.events, HttpConfig::default(), SamplingConfig::default());
    assert!(!spans.is_empty());
    for s in &spans {
        assert_eq!(s.kind, SpanKind::Server);
        assert_eq!(str_attr(s, "rpc.system"), "grpc");
        let (service, method) = (str_attr(s, "rpc.service"), str_attr(s, "rpc.method"));
        assert_eq!(s.name, format!("{service}/{method}"));
    }
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    let want = protocol_grpc_calls("h2/h2_grpc_python");
    assert_eq!(names, want);

    // curl's `Upgrade: h2c` then two more requests: the 101 is not a span, stream 1 continues
    // the HTTP/1.1 request.
    let mut r = Recorder::new();
    r.connection(1, 10, Role::Client, "h2/h2_upgrade_curl");
    let spans = pipeline(r.events, HttpConfig::default(), SamplingConfig::default());
    let got: Vec<(&str, i64, i64)> = spans
        .iter()
        .map(|s| {
            assert_eq!(s.kind, SpanKind::Client);
            assert_eq!(str_attr(s, "network.protocol.version"), "2");
            (
                s.name.as_str(),
                int_attr(s, "sonde.h2.stream_id"),
                int_attr(s, "http.response.status_code"),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("GET /first", 1, 200),
            ("GET /second", 3, 200),
            ("GET /missing", 5, 404)
        ]
    );
}

/// The gRPC methods a fixture's client called, in order, read from its `:path` headers by the
/// protocol crate's own parser (independently of the span stage).
fn protocol_grpc_calls(name: &str) -> Vec<String> {
    use sonde_protocol::http2::{H2Conn, H2Event, Limits, Side};
    let mut conn = H2Conn::new(Limits::default());
    let mut events = Vec::new();
    let mut seqs = [0u64; 2];
    for (req, bytes) in fixture(name) {
        let (side, i) = if req {
            (Side::Request, 0)
        } else {
            (Side::Response, 1)
        };
        conn.data(side, seqs[i], &bytes, &mut events);
        seqs[i] += bytes.len() as u64;
    }
    events
        .iter()
        .filter_map(|e| match e {
            H2Event::Exchange(x) => x.request.as_ref()?.path.as_deref(),
            H2Event::Error(_) => None,
        })
        .map(|p| p.trim_start_matches('/').to_owned())
        .collect()
}

#[test]
fn a_client_call_is_a_child_of_the_server_request_that_caused_it() {
    // Process 10 serves an HTTP/1 request (the kernel chose its context: trace 0x7a, span
    // 0x5e) and, while serving it, makes gRPC calls over HTTP/2 (contexts decided in
    // userspace).
    let mut r = Recorder::new();
    let request = b"GET /orders/42 HTTP/1.1\r\nHost: shop\r\n\r\n";
    let response = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    r.open(1, 10, Role::Server, "127.0.0.1:8080", "127.0.0.1:40000");
    r.data(1, 10, Role::Server, Direction::Ingress, 0, request);
    r.ctx(1, 10, CtxKind::Server, 0, (0x7a, 0x5e, 0), 1);
    r.connection(2, 10, Role::Client, "h2/h2_grpc_python");
    r.data(1, 10, Role::Server, Direction::Egress, 0, response);
    r.close(1, 10);
    // Another process's call at the same time is not linked to it.
    r.connection(3, 11, Role::Client, "h2/h2_grpc_python");
    let spans = pipeline(r.events, HttpConfig::default(), SamplingConfig::default());
    let server: Vec<&Span> = spans
        .iter()
        .filter(|s| s.kind == SpanKind::Server)
        .collect();
    assert_eq!(server.len(), 1);
    assert_eq!(server[0].name, "GET /orders/{id}");
    assert_eq!(
        (server[0].trace_id, server[0].span_id),
        (TraceId([0x7a; 16]), SpanId([0x5e; 8]))
    );
    let calls = protocol_grpc_calls("h2/h2_grpc_python").len();
    let linked: Vec<&Span> = spans
        .iter()
        .filter(|s| s.kind == SpanKind::Client && s.trace_id == TraceId([0x7a; 16]))
        .collect();
    assert_eq!(linked.len(), calls, "every call of process 10: {spans:#?}");
    for s in &linked {
        assert_eq!(s.parent_span_id, Some(SpanId([0x5e; 8])), "{}", s.name);
        assert_eq!(str_attr(s, "sonde.trace.link"), "linked");
    }
    let others: Vec<&Span> = spans
        .iter()
        .filter(|s| s.kind == SpanKind::Client && s.trace_id != TraceId([0x7a; 16]))
        .collect();
    assert_eq!(others.len(), calls, "process 11's calls");
    assert!(others.iter().all(|s| s.parent_span_id.is_none()));
}

#[test]
fn a_sampled_out_trace_is_not_exported_and_a_kept_one_is() {
    let events = || {
        let mut r = Recorder::new();
        r.connection(1, 10, Role::Server, "pipelined_nginx");
        r.events
    };
    let keep_none = SamplingConfig {
        ratio: 0.0,
        ..SamplingConfig::default()
    };
    let http = HttpConfig {
        root_sampler: keep_none.root_sampler(),
        ..HttpConfig::default()
    };
    // New roots are decided with ratio 0: unsampled; the 404 is not an error of a server span,
    // so the tail keeps nothing either.
    let spans = pipeline(events(), http, keep_none);
    assert_eq!(spans, Vec::<Span>::new());
    // The same traffic with ratio 1: all three.
    let http = HttpConfig {
        root_sampler: RootSampler::ratio(1.0),
        ..HttpConfig::default()
    };
    let spans = pipeline(events(), http, SamplingConfig::default());
    assert_eq!(spans.len(), 3);
    assert!(spans.iter().all(|s| s.flags & 1 == 1));
}

#[test]
fn query_values_are_redacted_unless_allowed() {
    let mut r = Recorder::new();
    r.open(1, 10, Role::Server, "127.0.0.1:8080", "127.0.0.1:40000");
    r.data(
        1,
        10,
        Role::Server,
        Direction::Ingress,
        0,
        b"GET /search?q=my+secret&page=2&token=abc HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cr3t\r\n\r\n",
    );
    r.data(
        1,
        10,
        Role::Server,
        Direction::Egress,
        0,
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    );
    r.close(1, 10);
    let http = HttpConfig {
        query_allowlist: vec!["page".into()],
        capture_request_headers: vec!["authorization".into()],
        ..HttpConfig::default()
    };
    let spans = pipeline(r.events, http, SamplingConfig::default());
    assert_eq!(spans.len(), 1);
    assert_eq!(
        str_attr(&spans[0], "url.query"),
        "q=REDACTED&page=2&token=REDACTED"
    );
    // Even when asked for, a sensitive header never becomes an attribute.
    assert!(
        spans[0]
            .attributes
            .iter()
            .all(|kv| !kv.key.contains("authorization")),
        "{:?}",
        spans[0].attributes
    );
    assert!(!format!("{:?}", spans[0]).contains("s3cr3t"));
}

/// A database fixture on a client connection of process 10 to `server` (role client).
fn db_client(r: &mut Recorder, id: u64, pid: u32, name: &str, server: &str) -> Vec<(bool, Meta)> {
    r.open(id, pid, Role::Client, "127.0.0.1:41000", server);
    let metas = r.records(id, pid, Role::Client, &fixture(name), &mut [0, 0]);
    r.close(id, pid);
    metas
}

fn kind_of(spans: &[Span], kind: SpanKind) -> Vec<&Span> {
    spans.iter().filter(|s| s.kind == kind).collect()
}

#[test]
fn postgres_operations_become_client_spans_with_sanitised_text_and_errors() {
    let mut r = Recorder::new();
    let metas = db_client(&mut r, 1, 10, "db/pg_simple_psycopg", "127.0.0.1:5432");
    let spans = pipeline(r.events, HttpConfig::default(), SamplingConfig::default());
    // 15 operations after the startup (protocol/tests/db_fixtures.rs lists them).
    assert_eq!(spans.len(), 15, "{spans:#?}");
    for s in &spans {
        assert_eq!(s.kind, SpanKind::Client, "{}", s.name);
        assert_eq!(str_attr(s, "db.system.name"), "postgresql");
        assert_eq!(str_attr(s, "db.namespace"), "sonde");
        assert_eq!(str_attr(s, "server.address"), "127.0.0.1");
        assert_eq!(int_attr(s, "server.port"), 5432);
        let text = str_attr(s, "db.query.text");
        assert!(!text.contains("'x'") && !text.contains("payload"), "{text}");
    }
    let update = spans
        .iter()
        .find(|s| str_attr(s, "db.query.text").contains("UPDATE users SET name = ?"))
        .expect("the multi-statement query");
    assert_eq!(str_attr(update, "db.operation.name"), "SELECT");
    let failed: Vec<&Span> = spans
        .iter()
        .filter(|s| s.status.code == sonde_model::StatusCode::Error)
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(str_attr(failed[0], "db.response.status_code"), "42P01");
    assert_eq!(str_attr(failed[0], "error.type"), "42P01");
    assert_eq!(str_attr(failed[0], "db.collection.name"), "missing_table");
    assert_eq!(failed[0].name, "SELECT missing_table");
    // Timing: the first operation starts when the write of its first byte entered and ends
    // when the read of its answer's last byte returned.
    let first_write = metas.iter().filter(|(req, _)| *req).nth(1).unwrap().1;
    assert_eq!(spans[0].start_unix_nanos, first_write.enter_ns);
    assert!(spans[0].end_unix_nanos > spans[0].start_unix_nanos);
}

#[test]
fn mariadb_and_redis_operations_become_spans_and_auth_never_leaves() {
    let mut r = Recorder::new();
    db_client(&mut r, 1, 10, "db/mysql_pymysql", "127.0.0.1:3306");
    let spans = pipeline(r.events, HttpConfig::default(), SamplingConfig::default());
    assert_eq!(spans.len(), 9, "{spans:#?}");
    assert!(
        spans
            .iter()
            .all(|s| str_attr(s, "db.system.name") == "mariadb")
    );
    let err: Vec<&Span> = spans
        .iter()
        .filter(|s| s.status.code == sonde_model::StatusCode::Error)
        .collect();
    assert_eq!(err.len(), 1);
    assert_eq!(str_attr(err[0], "db.response.status_code"), "1146");
    assert_eq!(str_attr(err[0], "db.namespace"), "sonde");
    let ping = spans.last().unwrap();
    assert_eq!(ping.name, "PING");
    assert_eq!(str_attr(ping, "db.namespace"), "mysql", "after COM_INIT_DB");
    let insert = &spans[3];
    assert_eq!(
        str_attr(insert, "db.query.text"),
        "INSERT INTO users VALUES (?, ?), (?, ?)"
    );
    assert!(!format!("{spans:?}").contains("ann"));

    let mut r = Recorder::new();
    db_client(&mut r, 1, 10, "db/redis_resp2_redispy", "127.0.0.1:6379");
    let spans = pipeline(r.events, HttpConfig::default(), SamplingConfig::default());
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        &names[..6],
        ["AUTH", "CLIENT", "CLIENT", "SELECT", "SET", "GET"]
    );
    assert_eq!(str_attr(&spans[0], "db.query.text"), "AUTH ?");
    assert!(
        !format!("{spans:?}").contains("s3cret"),
        "the AUTH password"
    );
    assert_eq!(str_attr(&spans[4], "db.namespace"), "2", "after SELECT 2");
    let wrongtype = spans.iter().find(|s| s.name == "LPUSH").unwrap();
    assert_eq!(str_attr(wrongtype, "db.response.status_code"), "WRONGTYPE");
    assert_eq!(wrongtype.status.code, sonde_model::StatusCode::Error);
    // Pushed pub/sub messages are not operations.
    assert!(!names.contains(&"message"));
}

#[test]
fn a_query_is_a_child_of_the_request_its_process_serves() {
    let mut r = Recorder::new();
    r.open(1, 10, Role::Server, "127.0.0.1:8080", "127.0.0.1:40000");
    r.data(
        1,
        10,
        Role::Server,
        Direction::Ingress,
        0,
        b"GET /users HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    r.ctx(1, 10, CtxKind::Server, 0, (0x3c, 0x4d, 0), 1);
    db_client(&mut r, 2, 10, "db/pg_pipeline_psycopg", "127.0.0.1:5432");
    r.data(
        1,
        10,
        Role::Server,
        Direction::Egress,
        0,
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    );
    r.close(1, 10);
    let spans = pipeline(r.events, HttpConfig::default(), SamplingConfig::default());
    let server = kind_of(&spans, SpanKind::Server);
    assert_eq!(server.len(), 1);
    let queries = kind_of(&spans, SpanKind::Client);
    assert_eq!(queries.len(), 8);
    for q in queries {
        assert_eq!(q.trace_id, TraceId([0x3c; 16]), "{}", q.name);
        assert_eq!(q.parent_span_id, Some(SpanId([0x4d; 8])), "{}", q.name);
    }
}

#[test]
fn an_operation_is_reported_once_whichever_ends_are_traced() {
    let client_addr = "127.0.0.1:41000";
    let server_addr = "127.0.0.1:5432";
    let records = fixture("db/pg_simple_psycopg");
    // Both ends traced: the client's connect and the server's accept of one connection.
    let mut r = Recorder::new();
    r.open(1, 10, Role::Client, client_addr, server_addr);
    r.open(2, 20, Role::Server, server_addr, client_addr);
    let (mut cs, mut ss) = ([0, 0], [0, 0]);
    for rec in &records {
        // The writer's syscall, then the reader's.
        let (first, second) = if rec.0 {
            ((1, 10, Role::Client), (2, 20, Role::Server))
        } else {
            ((2, 20, Role::Server), (1, 10, Role::Client))
        };
        let one = std::slice::from_ref(rec);
        r.records(
            first.0,
            first.1,
            first.2,
            one,
            if first.0 == 1 { &mut cs } else { &mut ss },
        );
        r.records(
            second.0,
            second.1,
            second.2,
            one,
            if second.0 == 1 { &mut cs } else { &mut ss },
        );
    }
    r.close(1, 10);
    r.close(2, 20);
    let spans = pipeline(r.events, HttpConfig::default(), SamplingConfig::default());
    assert_eq!(spans.len(), 15, "{spans:#?}");
    assert!(spans.iter().all(|s| s.kind == SpanKind::Client));

    // Only the server traced: the same operations, reported by the server, with the client as
    // the peer.
    let mut r = Recorder::new();
    r.open(2, 20, Role::Server, server_addr, client_addr);
    r.records(2, 20, Role::Server, &records, &mut [0, 0]);
    r.close(2, 20);
    let spans = pipeline(r.events, HttpConfig::default(), SamplingConfig::default());
    assert_eq!(spans.len(), 15);
    for s in &spans {
        assert_eq!(s.kind, SpanKind::Server);
        assert_eq!(int_attr(s, "network.peer.port"), 41000);
        assert_eq!(int_attr(s, "server.port"), 5432);
    }
}

#[test]
fn query_text_keeps_its_literals_only_for_the_services_named() {
    let run = |service: &str| {
        let mut r = Recorder::new();
        db_client(&mut r, 1, 10, "db/mysql_pymysql", "127.0.0.1:3306");
        let http = HttpConfig {
            raw_query_services: vec!["orders".into()],
            ..HttpConfig::default()
        };
        let resource = Resource {
            attributes: vec![sonde_model::KeyValue::new(
                "service.name",
                service.to_owned(),
            )],
        };
        pipeline_of(r.events, http, SamplingConfig::default(), resource)
    };
    let insert = |spans: &[Span]| str_attr(&spans[3], "db.query.text").to_owned();
    assert_eq!(
        insert(&run("orders")),
        "INSERT INTO users VALUES (1, 'ann'), (2, 'bob')"
    );
    assert_eq!(
        insert(&run("billing")),
        "INSERT INTO users VALUES (?, ?), (?, ?)"
    );
}

/// An HTTP/2 client connection that sends its preface, SETTINGS and a HEADERS frame without
/// END_HEADERS, then `n` CONTINUATION frames of `size` bytes, never finishing the block.
fn open_h2_header_block(r: &mut Recorder, id: u64, pid: u32, n: usize, size: usize) {
    let (local, remote) = addrs(Role::Client);
    r.open(id, pid, Role::Client, local, remote);
    let frame = |kind: u8, flags: u8, stream: u32, payload: &[u8]| -> Vec<u8> {
        let len = payload.len() as u32;
        let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    };
    let mut first = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    first.extend(frame(0x4, 0, 0, &[]));
    // HEADERS (no END_HEADERS): :method GET, then a literal without indexing whose value
    // goes on in the CONTINUATION frames.
    first.extend(frame(
        0x1,
        0x1,
        1,
        &[0x82, 0x00, 0x01, b'x', 0x7f, 0xff, 0x7f],
    ));
    let mut seq = 0;
    r.data(id, pid, Role::Client, Direction::Egress, seq, &first);
    seq += first.len() as u64;
    for _ in 0..n {
        let c = frame(0x9, 0, 1, &vec![b'a'; size]);
        r.data(id, pid, Role::Client, Direction::Egress, seq, &c);
        seq += c.len() as u64;
    }
}

#[test]
fn connection_state_stays_within_its_budget_and_other_traffic_still_gives_spans() {
    let mut r = Recorder::new();
    // 40 connections each holding an unfinished 60 KB header block: over 2 MB of state.
    for id in 1..=40 {
        open_h2_header_block(&mut r, id, 7, 15, 4000);
    }
    // An ordinary HTTP/1 connection after the budget's once-a-second check has run.
    r.now += 2_000_000_000;
    r.connection(100, 8, Role::Server, "curl_keepalive_nginx");
    let budget = 1 << 20;
    let http = HttpConfig {
        state_budget_bytes: Some(budget),
        ..HttpConfig::default()
    };
    let mut stage = run_stage(
        r.events,
        http,
        SamplingConfig::default(),
        Resource::default(),
    );
    let stats = stage.stats().clone();
    assert!(
        stats.state_evictions >= 10,
        "the oldest blocks' state was dropped: {stats:?}"
    );
    assert!(
        stats.state_evicted_bytes >= 10 * 50_000,
        "each dropped state held its block: {stats:?}"
    );
    assert!(
        stats.state_bytes <= budget as u64,
        "within the budget after the check: {stats:?}"
    );
    // The HTTP/1 connection, active after the flood, still gives its spans.
    let sink = stage.out_mut();
    sink.finish();
    let spans = std::mem::take(sink.inner_mut());
    // (The flood's connections still open at the end give client spans of their own.)
    let paths: Vec<&str> = kind_of(&spans, SpanKind::Server)
        .into_iter()
        .map(|s| str_attr(s, "url.path"))
        .collect();
    assert_eq!(
        paths,
        ["/index.html", "/missing", "/small.txt"],
        "{spans:#?}"
    );
}

#[test]
fn live_batches_are_timed_one_in_32_by_stage() {
    // 64 keep-alive connections, one batch of events each, through `pull` (the live path).
    let mut r = Recorder::new();
    let batches: Vec<Vec<Event>> = (1..=64)
        .map(|id| {
            r.connection(id, 10, Role::Server, "curl_keepalive_nginx");
            std::mem::take(&mut r.events)
        })
        .collect();
    let events: usize = batches.iter().map(Vec::len).sum();
    let policy = Policy::new(&PrivacySection::default()).unwrap();
    let sink = PolicySink::new(Vec::new(), SamplingConfig::default(), policy, None);
    let stage = SpanStage::new(
        HttpConfig::default(),
        WallClock::with_offset(0),
        FixedResource(Arc::new(Resource::default())),
        sink,
    );
    let mut driver = Driver::new(ConnTracker::without_role_resolver(Limits::default()), stage);
    let mut source = VecSource::new(batches);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    while rt
        .block_on(driver.pull(&mut source, &mut NoKernel))
        .unwrap()
    {}
    let st = &driver.stages;
    assert_eq!(st.batches, 65, "64 batches and the empty last pull");
    assert_eq!(st.events, events as u64);
    assert_eq!(st.sampled_batches, 2, "batches 1 and 33");
    assert_eq!(
        st.sampled_events * 32,
        st.events,
        "every batch is the same size"
    );
    // Each sampled batch parsed requests and built and handed on spans: every stage took time.
    let [conn, parse, span, policy] = st.sampled_ns;
    assert!(
        conn > 0 && parse > 0 && span > 0 && policy > 0,
        "{:?}",
        st.sampled_ns
    );
    assert_eq!(driver.sink.stats().spans_created, 64 * 3);
}
