use std::sync::Arc;

use super::*;

/// A regular message: tag, length, body.
fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    m.extend_from_slice(body);
    m
}

fn startup(params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = 0x0003_0000u32.to_be_bytes().to_vec();
    for (k, v) in params {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut m = (body.len() as u32 + 4).to_be_bytes().to_vec();
    m.extend_from_slice(&body);
    m
}

fn cstr(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

fn ready() -> Vec<u8> {
    msg(b'Z', b"I")
}

fn complete(tag: &str) -> Vec<u8> {
    msg(b'C', &cstr(tag))
}

fn error(code: &str, m: &str) -> Vec<u8> {
    let mut b = b"SERROR\0VERROR\0C".to_vec();
    b.extend_from_slice(&cstr(code));
    b.push(b'M');
    b.extend_from_slice(&cstr(m));
    b.push(0);
    msg(b'E', &b)
}

struct T {
    conn: PgConn,
    out: Vec<PgEvent>,
    off: [u64; 2],
}

impl T {
    fn new() -> Self {
        Self::with(PgConn::new(Limits::default()))
    }
    fn with(conn: PgConn) -> Self {
        Self {
            conn,
            out: Vec::new(),
            off: [0; 2],
        }
    }
    fn send(&mut self, side: Side, parts: &[Vec<u8>]) {
        let b = parts.concat();
        let o = &mut self.off[side as usize];
        self.conn.data(side, *o, &b, &mut self.out);
        *o += b.len() as u64;
    }
    fn req(&mut self, parts: &[Vec<u8>]) {
        self.send(Side::Request, parts)
    }
    fn resp(&mut self, parts: &[Vec<u8>]) {
        self.send(Side::Response, parts)
    }
    fn ops(&self) -> Vec<&PgOperation> {
        self.out
            .iter()
            .filter_map(|e| match e {
                PgEvent::Operation(o) => Some(&**o),
                _ => None,
            })
            .collect()
    }
    fn errors(&self) -> Vec<&'static str> {
        self.out
            .iter()
            .filter_map(|e| match e {
                PgEvent::Error(e) => Some(e.kind.as_str()),
                _ => None,
            })
            .collect()
    }
    fn started(mut self) -> Self {
        self.req(&[startup(&[("user", "u"), ("database", "d")])]);
        self.resp(&[msg(b'R', &[0, 0, 0, 0]), ready()]);
        self
    }
}

#[test]
fn startup_reports_database_never_the_password() {
    let mut t = T::new();
    t.req(&[startup(&[
        ("user", "alice"),
        ("database", "shop"),
        ("application_name", "web"),
    ])]);
    t.resp(&[msg(b'R', &[0, 0, 0, 3])]);
    t.req(&[msg(b'p', b"hunter2-secret\0")]);
    t.resp(&[
        msg(b'R', &[0, 0, 0, 0]),
        msg(b'S', b"a\0b\0"),
        msg(b'K', &[0; 8]),
        ready(),
    ]);
    let [PgEvent::Startup(s)] = &t.out[..] else {
        panic!("{:?}", t.out)
    };
    assert_eq!(s.version, (3, 0));
    assert_eq!(
        (
            s.user.as_deref(),
            s.database.as_deref(),
            s.application_name.as_deref()
        ),
        (Some("alice"), Some("shop"), Some("web"))
    );
    assert!(s.error.is_none());
    assert!(!format!("{:?}", t.out).contains("hunter2"));
}

#[test]
fn refused_login_is_a_startup_error() {
    let mut t = T::new();
    t.req(&[startup(&[("user", "bob")])]);
    t.resp(&[error("28P01", "password authentication failed")]);
    let [PgEvent::Startup(s)] = &t.out[..] else {
        panic!("{:?}", t.out)
    };
    assert_eq!(s.error.as_ref().map(|e| e.code.as_str()), Some("28P01"));
}

#[test]
fn ssl_and_gss_requests() {
    let ssl = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f].to_vec();
    let mut t = T::new();
    t.req(std::slice::from_ref(&ssl));
    t.resp(&[b"S\x16\x03\x01".to_vec()]);
    assert_eq!(
        t.out,
        [PgEvent::Stopped {
            reason: PgStop::Tls,
            response_offset: 1
        }]
    );
    // Refused: the startup follows in clear.
    let mut t = T::new();
    t.req(&[ssl]);
    t.resp(&[b"N".to_vec()]);
    t.req(&[startup(&[("user", "u")])]);
    t.resp(&[ready()]);
    assert!(matches!(&t.out[..], [PgEvent::Startup(s)] if s.request.first == 8));
    let mut t = T::new();
    t.req(&[[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30].to_vec()]);
    t.resp(&[b"G".to_vec()]);
    assert!(matches!(
        &t.out[..],
        [PgEvent::Stopped {
            reason: PgStop::Gss,
            ..
        }]
    ));
}

#[test]
fn cancel_request() {
    let mut t = T::new();
    t.req(&[[
        0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e, 0, 0, 0x30, 0x39, 1, 2, 3, 4,
    ]
    .to_vec()]);
    assert!(matches!(
        &t.out[..],
        [
            PgEvent::Cancel {
                process_id: 12345,
                ..
            },
            PgEvent::Stopped {
                reason: PgStop::Cancel,
                ..
            }
        ]
    ));
}

#[test]
fn pipelined_simple_queries_pair_in_order() {
    let mut t = T::new().started();
    t.req(&[msg(b'Q', b"SELECT 1\0"), msg(b'Q', b"BAD\0")]);
    t.resp(&[
        msg(b'T', &[0, 0]),
        msg(b'D', &[0, 0]),
        complete("SELECT 1"),
        ready(),
        msg(b'N', b"Mnotice\0\0"),
        error("42601", "syntax error"),
        ready(),
    ]);
    let ops = t.ops();
    assert_eq!(ops.len(), 2);
    assert_eq!(
        (ops[0].rows, ops[0].outcome.clone()),
        (Some(1), PgOutcome::Ok)
    );
    assert_eq!(ops[1].error_code(), Some("42601"));
    assert_eq!(ops[1].query.as_deref(), Some("BAD"));
}

#[test]
fn unnamed_and_named_statements_map_back_to_their_text() {
    let mut t = T::new().started();
    let parse = |name: &str, q: &str| msg(b'P', &[cstr(name), cstr(q), vec![0, 0]].concat());
    let bind =
        |portal: &str, stmt: &str| msg(b'B', &[cstr(portal), cstr(stmt), vec![0; 6]].concat());
    let exec =
        |portal: &str, max: u32| msg(b'E', &[cstr(portal), max.to_be_bytes().to_vec()].concat());
    let sync = msg(b'S', b"");
    t.req(&[parse("s1", "SELECT a FROM t"), sync.clone()]);
    t.resp(&[msg(b'1', b""), ready()]);
    t.req(&[bind("", "s1"), exec("", 0), sync.clone()]);
    t.resp(&[
        msg(b'2', b""),
        msg(b'D', b""),
        complete("SELECT 1"),
        ready(),
    ]);
    // A named portal with a row limit: suspended, then fetched again.
    t.req(&[bind("p1", "s1"), exec("p1", 1), exec("p1", 1), sync.clone()]);
    t.resp(&[
        msg(b'2', b""),
        msg(b'D', b""),
        msg(b's', b""),
        msg(b'D', b""),
        complete("SELECT 1"),
        ready(),
    ]);
    // Closed, then executed: the text is no longer known.
    t.req(&[msg(b'C', b"Ss1\0"), sync.clone()]);
    t.resp(&[msg(b'3', b""), ready()]);
    t.req(&[bind("", "s1"), exec("", 0), sync]);
    t.resp(&[
        error("26000", "prepared statement \"s1\" does not exist"),
        ready(),
    ]);
    let ops = t.ops();
    let q: Vec<_> = ops
        .iter()
        .map(|o| (o.kind, o.query.as_deref(), o.suspended))
        .collect();
    assert_eq!(
        q,
        [
            (PgOpKind::Prepare, Some("SELECT a FROM t"), false),
            (PgOpKind::Execute, Some("SELECT a FROM t"), false),
            (PgOpKind::Execute, Some("SELECT a FROM t"), true),
            (PgOpKind::Execute, Some("SELECT a FROM t"), false),
            (PgOpKind::Execute, None, false),
        ]
    );
    assert_eq!(ops[2].portal.as_deref(), Some("p1"));
    assert_eq!(ops[4].error_code(), Some("26000"));
}

/// asyncpg 0.32 prepares with Parse/Describe/Flush (no Sync) and waits for the answers; the
/// bytes are from `protocol/tests/fixtures/db/pg_asyncpg.trace`. The Flush ends the
/// preparation: it is an operation of its own, and a simple query sent next (without a Bind
/// of the statement) is not stuck behind it.
#[test]
fn a_query_after_an_unsynced_parse_ends_the_preparation() {
    // Parse with neither Sync nor Flush, then a simple Query: the server answers the Parse
    // first, then the query. Both are reported; nothing stays pending behind the preparation.
    let mut t = T::new().started();
    let req0 = t.off[Side::Request as usize];
    let parse = b"P\x00\x00\x00\x10\x00SELECT 1\x00\x00\x00";
    let query = b"Q\x00\x00\x00\x0eSET x = 1\x00";
    let answers = b"1\x00\x00\x00\x04C\x00\x00\x00\x08SET\x00Z\x00\x00\x00\x05I";
    t.req(&[parse.to_vec(), query.to_vec()]);
    t.resp(&[answers.to_vec()]);
    let ops = t.ops();
    let got: Vec<_> = ops
        .iter()
        .map(|o| {
            (
                o.kind,
                o.query.as_deref(),
                o.command.as_deref(),
                o.request.first - req0,
                o.request.last - req0,
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (PgOpKind::Prepare, Some("SELECT 1"), None, 0, 16),
            (PgOpKind::Query, Some("SET x = 1"), Some("SET"), 17, 31),
        ],
        "{:?}",
        t.out
    );
    let prepare = ops[0].response.expect("the ParseComplete");
    assert_eq!(prepare.last - prepare.first, 4);
    // Nothing left waiting: a later query is reported at its answer.
    t.req(&[b"Q\x00\x00\x00\x0eSET y = 2\x00".to_vec()]);
    t.resp(&[b"C\x00\x00\x00\x08SET\x00Z\x00\x00\x00\x05I".to_vec()]);
    assert_eq!(t.ops().len(), 3, "{:?}", t.out);
}

#[test]
fn a_flush_after_parse_ends_the_preparation() {
    let mut t = T::new().started();
    let req0 = t.off[Side::Request as usize];
    let prepare = b"P\x00\x00\x007__asyncpg_stmt_2__\x00SELECT * FROM a WHERE id > $1\x00\x00\x00\
                    D\x00\x00\x00\x18S__asyncpg_stmt_2__\x00H\x00\x00\x00\x04";
    let described = b"1\x00\x00\x00\x04t\x00\x00\x00\x0a\x00\x01\x00\x00\x00\x17\
                      T\x00\x00\x00/\x00\x02id\x00\x00\x00@\x03\x00\x01\x00\x00\x00\x17\x00\x04\
                      \xff\xff\xff\xff\x00\x00v\x00\x00\x00@\x03\x00\x02\x00\x00\x00\x19\xff\xff\
                      \xff\xff\xff\xff\x00\x00";
    let query = b"Q\x00\x00\x00)CREATE TEMP TABLE a (id int, v text)\x00";
    let created = b"C\x00\x00\x00\x11CREATE TABLE\x00Z\x00\x00\x00\x05I";
    let execute = b"B\x00\x00\x00*\x00__asyncpg_stmt_2__\x00\x00\x01\x00\x01\x00\x01\x00\x00\x00\
                    \x04\x00\x00\x00\x01\x00\x01\x00\x01E\x00\x00\x00\x09\x00\x00\x00\x00\x00\
                    S\x00\x00\x00\x04";
    let rows = b"2\x00\x00\x00\x04D\x00\x00\x00\x13\x00\x02\x00\x00\x00\x04\x00\x00\x00\x02\x00\
                 \x00\x00\x01yD\x00\x00\x00\x13\x00\x02\x00\x00\x00\x04\x00\x00\x00\x03\x00\x00\
                 \x00\x01zC\x00\x00\x00\x0dSELECT 2\x00Z\x00\x00\x00\x05I";
    assert_eq!(
        [prepare.len(), described.len(), execute.len(), rows.len()],
        [86, 64, 58, 65]
    );
    t.req(&[prepare.to_vec()]);
    t.resp(&[described.to_vec()]);
    // Reported at its last answer: no Sync is coming.
    let ops = t.ops();
    let [op] = &ops[..] else {
        panic!("{:?}", t.out)
    };
    assert_eq!(op.kind, PgOpKind::Prepare);
    assert_eq!(op.query.as_deref(), Some("SELECT * FROM a WHERE id > $1"));
    assert_eq!(op.statement.as_deref(), Some("__asyncpg_stmt_2__"));
    assert_eq!((op.request.first, op.request.last), (req0, req0 + 85));
    let resp = op.response.expect("answered");
    assert_eq!(resp.last - resp.first, 63);
    assert_eq!(
        (op.rows, op.data_rows, op.outcome.clone()),
        (None, 0, PgOutcome::Ok)
    );

    t.req(&[query.to_vec()]);
    t.resp(&[created.to_vec()]);
    t.req(&[execute.to_vec()]);
    t.resp(&[rows.to_vec()]);
    let ops = t.ops();
    let got: Vec<_> = ops
        .iter()
        .map(|o| (o.kind, o.query.as_deref(), o.rows, o.request.first - req0))
        .collect();
    assert_eq!(
        got,
        [
            (
                PgOpKind::Prepare,
                Some("SELECT * FROM a WHERE id > $1"),
                None,
                0
            ),
            (
                PgOpKind::Query,
                Some("CREATE TEMP TABLE a (id int, v text)"),
                None,
                86
            ),
            // Bind/Execute/Sync alone: the Parse is not part of it.
            (
                PgOpKind::Execute,
                Some("SELECT * FROM a WHERE id > $1"),
                Some(2),
                128
            ),
        ]
    );
    assert_eq!(ops[2].statement.as_deref(), Some("__asyncpg_stmt_2__"));
    assert!(t.errors().is_empty(), "{:?}", t.out);
    assert_eq!(t.conn.pending(), 0);
}

#[test]
fn a_parse_error_fails_its_execute_and_skips_the_rest_of_the_batch() {
    let mut t = T::new().started();
    let p = msg(b'P', b"\0SELEC 1\0\0\0");
    let b = msg(b'B', &[0, 0, 0, 0, 0, 0, 0, 0]);
    let e = msg(b'E', &[0, 0, 0, 0, 0]);
    let p2 = msg(b'P', b"\0SELECT 2\0\0\0");
    t.req(&[p, b.clone(), e.clone(), p2, b, e, msg(b'S', b"")]);
    t.resp(&[error("42601", "syntax error"), ready()]);
    let ops = t.ops();
    assert_eq!(ops.len(), 2);
    assert_eq!(ops[0].error_code(), Some("42601"));
    assert_eq!(ops[1].outcome, PgOutcome::NotExecuted);
    assert_eq!(ops[1].query.as_deref(), Some("SELECT 2"));
}

#[test]
fn a_gap_inside_rows_is_skipped() {
    let mut t = T::new().started();
    t.req(&[msg(b'Q', b"SELECT big\0")]);
    let row = msg(b'D', &[7u8; 1000]);
    t.resp(&[row[..100].to_vec()]);
    let o = t.off[1];
    t.conn.gap(Side::Response, o, 800, &mut t.out);
    t.off[1] += 800;
    t.resp(&[row[900..].to_vec(), complete("SELECT 1"), ready()]);
    let ops = t.ops();
    assert_eq!((ops[0].data_rows, ops[0].rows), (1, Some(1)));
    assert!(t.errors().is_empty());
}

#[test]
fn a_gap_inside_a_query_loses_sync_and_resynchronises_at_ready() {
    let mut t = T::new().started();
    let q = msg(b'Q', b"SELECT 1\0");
    t.req(&[q[..3].to_vec()]);
    let o = t.off[0];
    t.conn.gap(Side::Request, o, 4, &mut t.out);
    t.off[0] += 4;
    t.req(&[q[7..].to_vec()]);
    t.resp(&[complete("SELECT 1"), ready()]);
    t.req(&[msg(b'Q', b"SELECT 2\0")]);
    t.resp(&[complete("SELECT 1"), ready()]);
    assert_eq!(t.errors(), ["gap"]);
    let ops = t.ops();
    assert_eq!(ops.len(), 1);
    assert_eq!(ops[0].query.as_deref(), Some("SELECT 2"));
}

#[test]
fn joined_midway_waits_for_a_quiet_point() {
    let mut t = T::with(PgConn::joined(Limits::default()));
    t.off = [1000, 5000];
    // The tail of a query and its answer: not reported.
    t.req(&[b"ROM t\0".to_vec()]);
    t.resp(&[msg(b'D', b"xx"), complete("SELECT 1"), ready()]);
    assert!(!t.conn.is_synced());
    t.req(&[msg(b'Q', b"SELECT 3\0")]);
    t.resp(&[complete("SELECT 1"), ready()]);
    assert!(t.conn.is_synced());
    assert_eq!(t.errors(), ["desync"]);
    let ops = t.ops();
    assert_eq!(ops.len(), 1);
    assert_eq!(ops[0].query.as_deref(), Some("SELECT 3"));
    assert_eq!(ops[0].request.first, 1006);
}

#[test]
fn hostile_lengths_and_types() {
    // 1 GiB declared: an error, nothing allocated by it.
    let mut t = T::new().started();
    t.req(&[vec![b'Q', 0x40, 0, 0, 0], b"SELECT".to_vec()]);
    assert_eq!(t.errors(), ["too_large"]);
    assert_eq!(t.conn.buffered(Side::Request), 0);
    // Length below 4, unknown type.
    for bad in [vec![b'Q', 0, 0, 0, 3], vec![0x01, 0, 0, 0, 8, 1, 2, 3, 4]] {
        let mut t = T::new().started();
        t.req(&[bad]);
        assert_eq!(t.errors().len(), 1, "{:?}", t.out);
    }
    // A startup packet that is not one.
    let mut t = T::new();
    t.req(&[vec![0xff, 0xff, 0xff, 0xff, 0, 3, 0, 0]]);
    assert_eq!(t.errors(), ["malformed_length"]);
    // Truncated: the connection ends inside a message and inside an answer.
    let mut t = T::new().started();
    t.req(&[msg(b'Q', b"SELECT 1\0")]);
    t.resp(&[msg(b'D', b"abc")[..4].to_vec()]);
    t.conn.close(EndReason::Reset, &mut t.out);
    assert_eq!(t.errors(), ["truncated"]);
    assert_eq!(t.ops()[0].outcome, PgOutcome::Incomplete(Incomplete::Reset));
}

#[test]
fn long_queries_are_kept_up_to_the_limit() {
    let limits = Limits {
        max_message_bytes: 16,
        ..Limits::default()
    };
    let mut t = T::with(PgConn::new(limits)).started();
    t.req(&[msg(b'Q', b"SELECT 'a very long literal here'\0")]);
    t.resp(&[complete("SELECT 1"), ready()]);
    let ops = t.ops();
    assert_eq!(ops[0].query.as_deref(), Some("SELECT 'a very l"));
    assert!(ops[0].query_truncated);
    assert!(t.conn.buffered(Side::Request) <= 16);
}

#[test]
fn command_tags() {
    use super::conn::command_tag;
    assert_eq!(command_tag(b"INSERT 0 5"), ("INSERT".into(), Some(5)));
    assert_eq!(command_tag(b"SELECT 3"), ("SELECT".into(), Some(3)));
    assert_eq!(command_tag(b"CREATE TABLE"), ("CREATE TABLE".into(), None));
    assert_eq!(command_tag(b""), ("".into(), None));
}

#[test]
fn heap_bytes_sees_statements_and_partial_messages() {
    let mut t = T::new().started();
    let fresh = t.conn.heap_bytes();
    assert!(fresh < 1024, "{fresh}");
    // 100 named statements of 500-byte texts, remembered after their batch is answered.
    let mut batch: Vec<Vec<u8>> = (0..100)
        .map(|i| {
            let q = format!("SELECT {i:03} {}", "x".repeat(489));
            assert_eq!(q.len(), 500);
            msg(
                b'P',
                &[cstr(&format!("s{i:03}")), cstr(&q), vec![0, 0]].concat(),
            )
        })
        .collect();
    batch.push(msg(b'S', b""));
    t.req(&batch);
    let mut answer = vec![msg(b'1', b""); 100];
    answer.push(ready());
    t.resp(&answer);
    assert_eq!(t.ops().len(), 1, "{:?}", t.out);
    assert_eq!((t.conn.statements(), t.conn.pending()), (100, 0));
    let held = t.conn.heap_bytes();
    assert!((50_000..50_000 + 16 * 1024).contains(&held), "{held}");
    // A query whose message is 20 000 bytes in, 10 000 to come: its body is held.
    let q = msg(b'Q', &cstr(&"y".repeat(29_999)));
    t.req(&[q[..20_005].to_vec()]);
    assert_eq!(t.conn.buffered(Side::Request), 20_000);
    let partial = t.conn.heap_bytes() - held;
    assert!((20_000..40_000).contains(&partial), "{partial}");
}

fn parse_msg(name: &str, q: &str) -> Vec<u8> {
    msg(b'P', &[cstr(name), cstr(q), vec![0, 0]].concat())
}

fn bind_msg(portal: &str, stmt: &str) -> Vec<u8> {
    msg(b'B', &[cstr(portal), cstr(stmt), vec![0; 6]].concat())
}

fn exec_msg(portal: &str) -> Vec<u8> {
    msg(b'E', &[cstr(portal), vec![0; 4]].concat())
}

fn sync() -> Vec<u8> {
    msg(b'S', b"")
}

/// A statement text of `len` bytes that says which one it is.
fn big_text(i: usize, len: usize) -> String {
    let head = format!("SELECT {i:03} /* ");
    format!("{head}{}", "x".repeat(len - head.len()))
}

impl T {
    /// `Parse` + `Sync`, answered.
    fn prepare(&mut self, name: &str, q: &str) {
        self.req(&[parse_msg(name, q), sync()]);
        self.resp(&[msg(b'1', b""), ready()]);
    }

    /// `Bind` + `Execute` + `Sync` of portal `portal`, answered; the operation it gave.
    fn run(&mut self, portal: &str, stmt: &str) -> PgOperation {
        self.req(&[bind_msg(portal, stmt), exec_msg(portal), sync()]);
        self.resp(&[msg(b'2', b""), complete("SELECT 0"), ready()]);
        match self.out.last() {
            Some(PgEvent::Operation(op)) => (**op).clone(),
            other => panic!("{other:?}"),
        }
    }
}

/// Forty 60 kB statements: no more than `MAX_STATEMENT_BYTES` of them is kept, the least
/// recently used going first, each counted; every preparation still reports its text.
#[test]
fn many_large_statements_stay_within_the_byte_cap() {
    use crate::db::MAX_STATEMENT_BYTES;
    let mut t = T::new().started();
    let fit = MAX_STATEMENT_BYTES / 60_000;
    assert_eq!(fit, 17);
    for i in 0..40 {
        t.prepare(&format!("s{i:02}"), &big_text(i, 60_000));
        assert!(t.conn.statement_bytes() <= MAX_STATEMENT_BYTES);
        // s00 is used between preparations: the least recently used go, not the oldest.
        if i % 4 == 0 {
            t.run("", "s00");
        }
    }
    assert_eq!(t.conn.statements(), fit);
    assert_eq!(t.conn.statement_bytes(), fit * 60_000);
    let evicted = t.errors();
    assert_eq!(evicted.len(), 40 - fit, "{evicted:?}");
    assert!(evicted.iter().all(|k| *k == "statement_evicted"));
    let held = t.conn.heap_bytes();
    assert!(held < MAX_STATEMENT_BYTES + 64 * 1024, "{held}");
    let prepared: Vec<_> = t
        .ops()
        .iter()
        .filter(|o| o.kind == PgOpKind::Prepare)
        .map(|o| o.query.as_deref().map(str::len))
        .collect();
    assert_eq!(prepared, vec![Some(60_000); 40]);

    // The oldest but most used is still there; the newest too.
    let s00 = t.run("", "s00");
    assert_eq!(s00.query.as_deref(), Some(&*big_text(0, 60_000)));
    assert!(!s00.query_evicted);
    let s39 = t.run("p", "s39");
    assert_eq!(s39.query.as_deref(), Some(&*big_text(39, 60_000)));
    // An evicted one still gives its operation: no text, marked, never another's.
    let s01 = t.run("", "s01");
    assert_eq!(
        (
            s01.query.as_deref(),
            s01.query_evicted,
            s01.statement.as_deref()
        ),
        (None, true, Some("s01"))
    );
    assert_eq!(
        (s01.command.as_deref(), s01.outcome),
        (Some("SELECT"), PgOutcome::Ok)
    );
}

/// A statement longer than the whole cap is not kept, and the text its name had before is
/// not used for it.
#[test]
fn a_statement_over_the_cap_is_not_kept_and_never_takes_an_older_text() {
    let limits = Limits {
        max_message_bytes: 2 * 1024 * 1024,
        ..Limits::default()
    };
    let mut t = T::with(PgConn::new(limits)).started();
    t.prepare("s", "SELECT 1");
    assert_eq!(t.run("", "s").query.as_deref(), Some("SELECT 1"));
    let huge = big_text(2, 1_500_000);
    t.prepare("s", &huge);
    assert_eq!(t.errors(), ["statement_evicted"]);
    // The unnamed portal still holds the old text, until it is bound again.
    assert_eq!((t.conn.statements(), t.conn.statement_bytes()), (0, 8));
    let op = t.run("", "s");
    assert_eq!((op.query.as_deref(), op.query_evicted), (None, true));
    assert_eq!(t.conn.statement_bytes(), 0);
    // Its preparation reported it, though.
    let prepare = t.ops().into_iter().rfind(|o| o.kind == PgOpKind::Prepare);
    assert_eq!(
        prepare.and_then(|o| o.query.as_deref().map(str::len)),
        Some(1_500_000)
    );
}

/// A thousand portals bound to one 60 kB statement hold one copy of its text, and the
/// operations that run them share it too.
#[test]
fn portals_share_their_statements_text() {
    let mut t = T::new().started();
    let q = big_text(7, 60_000);
    t.prepare("s", &q);
    let before = t.conn.heap_bytes();
    let mut batch: Vec<Vec<u8>> = (0..1000).map(|i| bind_msg(&format!("p{i}"), "s")).collect();
    batch.push(sync());
    t.req(&batch);
    let mut answer = vec![msg(b'2', b""); 1000];
    answer.push(ready());
    t.resp(&answer);
    assert_eq!(t.conn.portals(), 1000);
    assert_eq!(t.conn.statement_bytes(), 60_000);
    let grown = t.conn.heap_bytes() - before;
    assert!(grown < 200_000, "{grown}");
    // Two executions in one batch: both pending at once, one text.
    t.req(&[exec_msg("p1"), exec_msg("p999"), sync()]);
    t.resp(&[complete("SELECT 0"), complete("SELECT 0"), ready()]);
    let ops = t.ops();
    let prepared = ops[0].query.as_ref().expect("the Parse's text");
    let [a, b] = &ops[ops.len() - 2..] else {
        panic!("{:?}", t.out)
    };
    let (a, b) = (
        a.query.as_ref().expect("p1"),
        b.query.as_ref().expect("p999"),
    );
    assert_eq!(&**a, q);
    assert!(Arc::ptr_eq(a, b) && Arc::ptr_eq(a, prepared));
    assert!(t.errors().is_empty(), "{:?}", t.errors());
}

/// A portal keeps the text it was bound to when its statement is prepared again or closed;
/// the text then counts until the portal goes.
#[test]
fn a_portal_keeps_its_text_after_its_statement_changes() {
    let mut t = T::new().started();
    t.req(&[
        parse_msg("", "SELECT 'first'"),
        bind_msg("p1", ""),
        parse_msg("", "SELECT 'second'"),
        bind_msg("p2", ""),
        exec_msg("p1"),
        exec_msg("p2"),
        sync(),
    ]);
    t.resp(&[
        msg(b'1', b""),
        msg(b'2', b""),
        msg(b'1', b""),
        msg(b'2', b""),
        complete("SELECT 1"),
        complete("SELECT 1"),
        ready(),
    ]);
    let q: Vec<_> = t.ops().iter().map(|o| o.query.as_deref()).collect();
    assert_eq!(q, [Some("SELECT 'first'"), Some("SELECT 'second'")]);
    assert_eq!(t.conn.statement_bytes(), 14 + 15);
    t.req(&[msg(b'C', b"Pp1\0"), sync()]);
    t.resp(&[msg(b'3', b""), ready()]);
    assert_eq!(t.conn.statement_bytes(), 15);
    t.req(&[msg(b'C', b"S\0"), sync()]);
    t.resp(&[msg(b'3', b""), ready()]);
    assert_eq!(t.conn.statement_bytes(), 15, "p2 still holds it");
    t.req(&[msg(b'C', b"Pp2\0"), sync()]);
    t.resp(&[msg(b'3', b""), ready()]);
    assert_eq!(t.conn.statement_bytes(), 0);
}

/// Past `max_statements` statements or portals, the least recently used is let go, counted,
/// and its execution is marked.
#[test]
fn past_the_count_limits_the_least_recently_used_goes() {
    let limits = Limits {
        max_statements: 2,
        ..Limits::default()
    };
    let mut t = T::with(PgConn::new(limits)).started();
    t.prepare("a", "SELECT 'a'");
    t.prepare("b", "SELECT 'b'");
    assert_eq!(t.run("", "a").query.as_deref(), Some("SELECT 'a'"));
    t.prepare("c", "SELECT 'c'");
    assert_eq!(t.errors(), ["statement_evicted"]);
    assert_eq!(t.conn.statements(), 2);
    let b = t.run("", "b");
    assert_eq!((b.query.as_deref(), b.query_evicted), (None, true));
    assert_eq!(t.run("", "c").query.as_deref(), Some("SELECT 'c'"));
    // Portals: the unnamed one and p1, then p2 lets the least recently used (p1) go.
    assert_eq!(t.run("p1", "a").query.as_deref(), Some("SELECT 'a'"));
    t.run("", "c");
    t.run("p2", "c");
    assert_eq!(t.errors(), ["statement_evicted", "portal_evicted"]);
    assert_eq!(t.conn.portals(), 2);
    t.req(&[exec_msg("p1"), sync()]);
    t.resp(&[complete("SELECT 0"), ready()]);
    let p1 = t.ops().last().copied().cloned().expect("p1");
    assert_eq!((p1.query, p1.query_evicted), (None, true));
}

/// Statements the observer never saw prepared are unknown, not evicted.
#[test]
fn an_unknown_statement_is_not_said_to_be_evicted() {
    let mut t = T::new().started();
    let op = t.run("", "never_prepared");
    assert_eq!((op.query, op.query_evicted), (None, false));
}

/// Invalid UTF-8 becomes U+FFFD (3 bytes for 1): the text is still cut at the message limit.
#[test]
fn an_invalid_utf8_text_stays_within_the_message_limit() {
    let mut t = T::new().started();
    let mut body = vec![0xff; 60_000];
    body.push(0);
    t.req(&[msg(b'Q', &body)]);
    t.resp(&[complete("SELECT 1"), ready()]);
    let ops = t.ops();
    let q = ops[0].query.as_deref().expect("a text");
    assert_eq!(q.len(), 64 * 1024 - 1, "whole characters only");
    assert!(q.chars().all(|c| c == char::REPLACEMENT_CHARACTER));
    assert!(ops[0].query_truncated);
}
