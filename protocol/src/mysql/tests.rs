use std::sync::Arc;

use super::*;

fn pkt(seq: u8, payload: &[u8]) -> Vec<u8> {
    let n = payload.len() as u32;
    let mut v = vec![n as u8, (n >> 8) as u8, (n >> 16) as u8, seq];
    v.extend_from_slice(payload);
    v
}

fn greeting(server_caps: u32) -> Vec<u8> {
    let mut p = vec![10];
    p.extend_from_slice(b"10.11.6-MariaDB\0");
    p.extend_from_slice(&7u32.to_le_bytes());
    p.extend_from_slice(b"salt1234\0");
    p.extend_from_slice(&(server_caps as u16).to_le_bytes());
    p.push(45);
    p.extend_from_slice(&2u16.to_le_bytes());
    p.extend_from_slice(&((server_caps >> 16) as u16).to_le_bytes());
    p.push(21);
    p.extend_from_slice(&[0; 10]);
    p.extend_from_slice(b"salt56789012\0mysql_native_password\0");
    pkt(0, &p)
}

fn login(client_caps: u32, auth: &[u8], db: &str) -> Vec<u8> {
    let mut p = client_caps.to_le_bytes().to_vec();
    p.extend_from_slice(&(1u32 << 24).to_le_bytes());
    p.push(45);
    p.extend_from_slice(&[0; 23]);
    p.extend_from_slice(b"app\0");
    p.push(auth.len() as u8);
    p.extend_from_slice(auth);
    p.extend_from_slice(db.as_bytes());
    p.push(0);
    pkt(1, &p)
}

fn ok(seq: u8, affected: u8, status: u16) -> Vec<u8> {
    let mut p = vec![0, affected, 0];
    p.extend_from_slice(&status.to_le_bytes());
    p.extend_from_slice(&[0, 0]);
    pkt(seq, &p)
}

fn eof(seq: u8, status: u16) -> Vec<u8> {
    let mut p = vec![0xfe, 0, 0];
    p.extend_from_slice(&status.to_le_bytes());
    pkt(seq, &p)
}

const BASE: u32 = 0x0200 | caps::SECURE_CONNECTION | caps::CONNECT_WITH_DB | (1 << 17);

struct T {
    conn: MyConn,
    out: Vec<MyEvent>,
    off: [u64; 2],
}

impl T {
    fn new() -> Self {
        Self {
            conn: MyConn::new(Limits::default()),
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
    fn logged_in(caps: u32) -> Self {
        Self::logged_in_with(Limits::default(), caps)
    }
    fn logged_in_with(limits: Limits, caps: u32) -> Self {
        let mut t = Self::new();
        t.conn = MyConn::new(limits);
        t.resp(&[greeting(caps)]);
        t.req(&[login(caps, b"SECRETAUTHDATA", "shop")]);
        t.resp(&[ok(2, 0, 2)]);
        t
    }
    fn ops(&self) -> Vec<&MyOperation> {
        self.out
            .iter()
            .filter_map(|e| match e {
                MyEvent::Operation(o) => Some(&**o),
                _ => None,
            })
            .collect()
    }
    fn errors(&self) -> Vec<&'static str> {
        self.out
            .iter()
            .filter_map(|e| match e {
                MyEvent::Error(e) => Some(e.kind.as_str()),
                _ => None,
            })
            .collect()
    }
}

fn query(q: &str) -> Vec<u8> {
    pkt(0, &[&[0x03][..], q.as_bytes()].concat())
}

#[test]
fn handshake_reports_database_never_the_auth_data() {
    let t = T::logged_in(BASE | caps::DEPRECATE_EOF);
    let [MyEvent::Handshake(h)] = &t.out[..] else {
        panic!("{:?}", t.out)
    };
    assert_eq!(
        (h.user.as_deref(), h.database.as_deref()),
        (Some("app"), Some("shop"))
    );
    assert!(h.mariadb && h.capabilities & caps::DEPRECATE_EOF != 0);
    assert!(!format!("{:?}", t.out).contains("SECRET"));
}

#[test]
fn result_sets_with_and_without_eof_packets() {
    for deprecate in [false, true] {
        let mut t = T::logged_in(BASE | if deprecate { caps::DEPRECATE_EOF } else { 0 });
        t.req(&[query("SELECT a FROM t")]);
        let mut answer = vec![pkt(1, &[1]), pkt(2, b"\x03def\0\0\0\x01a\0\x0c")];
        let mut seq = 3;
        if !deprecate {
            answer.push(eof(seq, 2));
            seq += 1;
        }
        answer.push(pkt(seq, b"\x01x"));
        answer.push(pkt(seq + 1, b"\x01y"));
        answer.push(if deprecate {
            pkt(seq + 2, &[0xfe, 0, 0, 2, 0, 0, 0])
        } else {
            eof(seq + 2, 2)
        });
        t.resp(&answer);
        let ops = t.ops();
        assert_eq!(
            (ops.len(), ops[0].rows, ops[0].results),
            (1, 2, 1),
            "{deprecate}"
        );
        assert!(t.errors().is_empty(), "{:?}", t.out);
    }
}

#[test]
fn multi_results_and_errors() {
    let mut t = T::logged_in(BASE | caps::MULTI_STATEMENTS);
    t.req(&[query("UPDATE t SET a = 1; SELECT 1")]);
    t.resp(&[
        ok(1, 3, 2 | 0x0008),
        pkt(2, &[1]),
        pkt(3, b"col"),
        eof(4, 2),
        pkt(5, b"\x011"),
        eof(6, 2),
    ]);
    t.req(&[query("SELECT * FROM nope")]);
    t.resp(&[pkt(1, b"\xff\x7a\x04#42S02Table 'shop.nope' doesn't exist")]);
    let ops = t.ops();
    assert_eq!(
        (ops[0].results, ops[0].rows, ops[0].affected_rows),
        (2, 1, Some(3))
    );
    let e = ops[1].error.as_ref().expect("error");
    assert_eq!((e.code, e.sql_state.as_deref()), (1146, Some("42S02")));
}

#[test]
fn prepared_statements_with_deprecate_eof_and_close() {
    let mut t = T::logged_in(BASE | caps::DEPRECATE_EOF);
    t.req(&[pkt(0, b"\x16SELECT ? FROM t")]);
    // stmt 9, 1 column, 1 param: their definitions, no EOF packets.
    t.resp(&[
        pkt(1, &[0, 9, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0]),
        pkt(2, b"param"),
        pkt(3, b"column"),
    ]);
    t.req(&[pkt(0, &[0x17, 9, 0, 0, 0, 0, 1, 0, 0, 0])]);
    t.resp(&[ok(1, 0, 2)]);
    t.req(&[pkt(0, &[0x19, 9, 0, 0, 0])]);
    t.req(&[pkt(0, &[0x17, 9, 0, 0, 0, 0, 1, 0, 0, 0])]);
    t.resp(&[pkt(
        1,
        b"\xff\x13\x04#HY000Unknown prepared statement handler",
    )]);
    let ops = t.ops();
    let seen: Vec<_> = ops
        .iter()
        .map(|o| (o.command, o.statement_id, o.query.as_deref()))
        .collect();
    assert_eq!(
        seen,
        [
            (Command::STMT_PREPARE, Some(9), Some("SELECT ? FROM t")),
            (Command::STMT_EXECUTE, Some(9), Some("SELECT ? FROM t")),
            (Command::STMT_EXECUTE, Some(9), None),
        ]
    );
}

/// The answer to `COM_STMT_PREPARE` (STMT_PREPARE_OK, then the parameter and column
/// definitions) describes the statement: it is not a result set and has no rows, with or
/// without EOF packets. The bytes are mysql-connector's against MariaDB 10.11, from
/// `protocol/tests/fixtures/db/mysql_prepared_connector.trace`.
#[test]
fn a_prepare_answer_is_neither_rows_nor_a_result() {
    let prepare = b"$\x00\x00\x00\x16SELECT name FROM users WHERE id = ?".to_vec();
    // stmt 1, 1 column, 1 parameter: OK, param def, EOF, column def, EOF.
    let ok_ = b"\x0c\x00\x00\x01\x00\x01\x00\x00\x00\x01\x00\x01\x00\x00\x00\x00".to_vec();
    let param = b"\x17\x00\x00\x02\x03def\x00\x00\x00\x01?\x00\x0c?\x00\x00\x00\x00\x00\x06\x80\
                  \x00\x00\x00\x00"
        .to_vec();
    let column = b"-\x00\x00\x04\x03def\x05sonde\x05users\x05users\x04name\x04name\x0c-\x00P\
                   \x00\x00\x00\xfd\x00\x00\x00\x00\x00"
        .to_vec();
    let eof_ = |seq: u8| [vec![5, 0, 0, seq], b"\xfe\x00\x00\x00\x00".to_vec()].concat();
    let execute = b"\x0f\x00\x00\x00\x17\x01\x00\x00\x00\x00\x01\x00\x00\x00\x00\x01\x01\x80\x01";
    let rows = b"\x01\x00\x00\x01\x01-\x00\x00\x02\x03def\x05sonde\x05users\x05users\x04name\
                 \x04name\x0c-\x00P\x00\x00\x00\xfd\x00\x00\x00\x00\x00\x05\x00\x00\x03\xfe\x00\
                 \x00\x01\x00\x06\x00\x00\x04\x00\x00\x03ann\x05\x00\x00\x05\xfe\x00\x00\x01\x00";
    let mut renumbered = column.clone();
    renumbered[3] = 3;

    let with_eof = vec![ok_.clone(), param.clone(), eof_(3), column, eof_(5)];
    // CLIENT_DEPRECATE_EOF: the same definitions without their EOF packets.
    let without_eof = vec![ok_, param, renumbered];
    for (caps, answer) in [(BASE, with_eof), (BASE | caps::DEPRECATE_EOF, without_eof)] {
        let mut t = T::logged_in(caps);
        t.req(std::slice::from_ref(&prepare));
        t.resp(&answer);
        let ops = t.ops();
        let [p] = &ops[..] else { panic!("{:?}", t.out) };
        assert_eq!(p.command, Command::STMT_PREPARE);
        assert_eq!(p.statement_id, Some(1));
        assert_eq!(
            (p.rows, p.results, p.affected_rows),
            (0, 0, None),
            "a prepare answer: {p:?}"
        );
        assert_eq!(
            p.response.map(|r| r.last - r.first + 1),
            Some(answer.concat().len() as u64)
        );
        if caps & caps::DEPRECATE_EOF == 0 {
            // Executed: its rows and its result set.
            t.req(&[execute.to_vec()]);
            t.resp(&[rows.to_vec()]);
            let ops = t.ops();
            assert_eq!(ops.len(), 2, "{:?}", t.out);
            let e = ops[1];
            assert_eq!(
                e.query.as_deref(),
                Some("SELECT name FROM users WHERE id = ?")
            );
            assert_eq!((e.rows, e.results), (1, 1), "{e:?}");
        }
        assert!(t.errors().is_empty(), "{:?}", t.out);
        assert_eq!(t.conn.pending(), 0);
    }
}

#[test]
fn init_db_and_use_change_the_database() {
    let mut t = T::logged_in(BASE);
    t.req(&[pkt(0, b"\x02other")]);
    t.resp(&[ok(1, 0, 2)]);
    t.req(&[query("USE `third`")]);
    t.resp(&[ok(1, 0, 2)]);
    t.req(&[pkt(0, &[0x0e])]);
    t.resp(&[ok(1, 0, 2)]);
    let dbs: Vec<_> = t.ops().iter().map(|o| o.database.clone()).collect();
    assert_eq!(
        dbs,
        [
            Some("shop".into()),
            Some("other".into()),
            Some("third".into())
        ]
    );
}

#[test]
fn sixteen_mib_split_is_one_message() {
    let mut t = T::logged_in(BASE);
    let text = vec![b'x'; 0xff_ffff + 9];
    let mut payload = vec![0x03];
    payload.extend_from_slice(&text);
    let first = [&[0xff, 0xff, 0xff, 0][..], &payload[..0xff_ffff]].concat();
    let second = pkt(1, &payload[0xff_ffff..]);
    t.req(&[first, second]);
    assert!(t.conn.buffered(Side::Request) <= 64 * 1024 + 4);
    t.resp(&[ok(2, 0, 2)]);
    let ops = t.ops();
    assert_eq!(ops.len(), 1, "{:?}", t.errors());
    assert!(ops[0].query_truncated);
    assert_eq!(ops[0].query.as_deref().map(str::len), Some(64 * 1024 - 1));
    assert_eq!(
        ops[0].request.last,
        ops[0].request.first + 0xff_ffff + 4 + 4 + 10 - 1
    );
}

#[test]
fn tls_and_compression_stop_parsing() {
    let mut t = T::new();
    t.resp(&[greeting(BASE | caps::SSL)]);
    let mut short = (BASE | caps::SSL).to_le_bytes().to_vec();
    short.extend_from_slice(&[0; 28]);
    t.req(&[pkt(1, &short), b"\x16\x03\x01".to_vec()]);
    assert!(matches!(
        t.out.last(),
        Some(MyEvent::Stopped {
            reason: MyStop::Tls,
            ..
        })
    ));
    let mut t = T::logged_in(BASE | caps::COMPRESS);
    assert!(matches!(
        t.out.last(),
        Some(MyEvent::Stopped {
            reason: MyStop::Compressed,
            ..
        })
    ));
    t.req(&[query("SELECT 1")]);
    assert!(t.ops().is_empty());
}

#[test]
fn hostile_input() {
    // Not a greeting.
    let mut t = T::new();
    t.resp(&[pkt(0, b"\x09old")]);
    assert_eq!(t.errors(), ["not_handshake"]);
    // Out-of-sequence answer, unknown command, empty command packet.
    let mut t = T::logged_in(BASE);
    t.req(&[query("SELECT 1")]);
    t.resp(&[ok(5, 0, 2)]);
    assert_eq!(t.errors(), ["sequence"]);
    assert_eq!(t.ops()[0].incomplete, Some(Incomplete::LostSync));
    for bad in [pkt(0, &[0xee]), pkt(0, b"")] {
        let mut t = T::logged_in(BASE);
        t.req(&[bad]);
        assert_eq!(t.errors().len(), 1, "{:?}", t.out);
    }
    // Split packets adding up past the limit: an error, nothing allocated by it.
    let limits = Limits {
        max_declared_len: 1 << 20,
        ..Limits::default()
    };
    let mut t = T::new();
    t.conn = MyConn::new(limits);
    t.resp(&[greeting(BASE)]);
    t.req(&[vec![0xff, 0xff, 0xff, 1, 0, 0]]);
    assert_eq!(t.errors(), ["too_large"]);
    assert_eq!(t.conn.buffered(Side::Request), 0);
}

#[test]
fn change_user_runs_an_auth_exchange() {
    let mut t = T::logged_in(BASE);
    t.req(&[pkt(0, b"\x11bob\0\x14SECRETSECRETSECRET12other\0")]);
    t.resp(&[pkt(1, b"\xfemysql_native_password\0salt")]);
    t.req(&[pkt(2, b"SECRETREPLY")]);
    t.resp(&[ok(3, 0, 2)]);
    t.req(&[pkt(0, &[0x0e])]);
    t.resp(&[ok(1, 0, 2)]);
    assert!(t.errors().is_empty(), "{:?}", t.out);
    let ops = t.ops();
    assert_eq!(ops.len(), 2);
    assert_eq!(
        (ops[0].command.as_str(), ops[0].response.map(|r| r.last)),
        ("COM_CHANGE_USER", Some(t.off[1] - 12))
    );
    assert_eq!(ops[1].database, None);
    assert!(!format!("{:?}", t.out).contains("SECRET"));
}

#[test]
fn heap_bytes_sees_statements_and_partial_packets() {
    let mut t = T::logged_in(BASE | caps::DEPRECATE_EOF);
    let fresh = t.conn.heap_bytes();
    assert!(fresh < 1024, "{fresh}");
    // 100 statements of 500-byte texts, each prepared (no parameters, no columns).
    for id in 0..100u32 {
        let q = format!("SELECT {id:03} {}", "x".repeat(489));
        assert_eq!(q.len(), 500);
        t.req(&[pkt(0, &[&[0x16][..], q.as_bytes()].concat())]);
        let mut answer = vec![0];
        answer.extend_from_slice(&(id + 1).to_le_bytes());
        answer.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0]);
        t.resp(&[pkt(1, &answer)]);
    }
    assert!(t.errors().is_empty(), "{:?}", t.errors());
    assert_eq!(
        (t.ops().len(), t.conn.statements(), t.conn.pending()),
        (100, 100, 0)
    );
    let held = t.conn.heap_bytes();
    assert!((50_000..50_000 + 16 * 1024).contains(&held), "{held}");
    // A query whose packet is 20 000 bytes in, 10 000 to come: its payload is held.
    let q = query(&"y".repeat(29_999));
    t.req(&[q[..20_004].to_vec()]);
    assert_eq!(t.conn.buffered(Side::Request), 20_000);
    let partial = t.conn.heap_bytes() - held;
    assert!((20_000..40_000).contains(&partial), "{partial}");
}

/// A statement text of `len` bytes that says which one it is.
fn big_text(i: u32, len: usize) -> String {
    let head = format!("SELECT {i:03} /* ");
    format!("{head}{}", "x".repeat(len - head.len()))
}

impl T {
    /// `COM_STMT_PREPARE` of `q`, answered as statement `id` (no parameters, no columns).
    fn prepare(&mut self, id: u32, q: &str) {
        self.req(&[pkt(0, &[&[0x16][..], q.as_bytes()].concat())]);
        let mut answer = vec![0];
        answer.extend_from_slice(&id.to_le_bytes());
        answer.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0]);
        self.resp(&[pkt(1, &answer)]);
    }

    /// `COM_STMT_EXECUTE` of statement `id`, answered OK; the operation it gave.
    fn execute(&mut self, id: u32) -> MyOperation {
        let mut p = vec![0x17];
        p.extend_from_slice(&id.to_le_bytes());
        p.extend_from_slice(&[0, 1, 0, 0, 0]);
        self.req(&[pkt(0, &p)]);
        self.resp(&[ok(1, 0, 2)]);
        match self.out.last() {
            Some(MyEvent::Operation(op)) => (**op).clone(),
            other => panic!("{other:?}"),
        }
    }
}

/// Forty 60 kB statements: no more than `MAX_STATEMENT_BYTES` of them is kept, the least
/// recently used going first, each counted; an evicted one still gives its operation, with
/// no text and marked.
#[test]
fn many_large_statements_stay_within_the_byte_cap() {
    use crate::db::MAX_STATEMENT_BYTES;
    let mut t = T::logged_in(BASE | caps::DEPRECATE_EOF);
    let fit = MAX_STATEMENT_BYTES / 60_000;
    for id in 1..=40u32 {
        t.prepare(id, &big_text(id, 60_000));
        assert!(t.conn.statement_bytes() <= MAX_STATEMENT_BYTES);
        // Statement 1 is executed between preparations: the least recently used go, not
        // the oldest.
        if id % 4 == 0 {
            t.execute(1);
        }
    }
    assert_eq!(t.conn.statements(), fit);
    assert_eq!(t.conn.statement_bytes(), fit * 60_000);
    let evicted = t.errors();
    assert_eq!(evicted.len(), 40 - fit, "{evicted:?}");
    assert!(evicted.iter().all(|k| *k == "statement_evicted"));
    let held = t.conn.heap_bytes();
    assert!(held < MAX_STATEMENT_BYTES + 64 * 1024, "{held}");

    let one = t.execute(1);
    assert_eq!(one.query.as_deref(), Some(&*big_text(1, 60_000)));
    assert!(!one.query_evicted);
    assert_eq!(t.execute(40).query.as_deref(), Some(&*big_text(40, 60_000)));
    let two = t.execute(2);
    assert_eq!(
        (two.query.as_deref(), two.query_evicted, two.statement_id),
        (None, true, Some(2))
    );
    assert_eq!((two.affected_rows, two.error), (Some(0), None));
}

/// Executions share their statement's text with the preparation: one copy, whatever the
/// number of executions waiting for their answer.
#[test]
fn executions_share_their_statements_text() {
    let mut t = T::logged_in(BASE | caps::DEPRECATE_EOF);
    let q = big_text(5, 60_000);
    t.prepare(5, &q);
    t.execute(5);
    t.execute(5);
    let ops = t.ops();
    let [prepare, a, b] = &ops[..] else {
        panic!("{:?}", t.out)
    };
    let texts = [&prepare.query, &a.query, &b.query].map(|q| q.clone().expect("a text"));
    assert_eq!(&*texts[0], q);
    assert!(Arc::ptr_eq(&texts[0], &texts[1]) && Arc::ptr_eq(&texts[1], &texts[2]));
    assert_eq!(t.conn.statement_bytes(), 60_000);
}

/// Past `max_statements`, the least recently used statement is let go, counted, and its
/// executions are marked; a statement closed or never seen is not said to be evicted
/// before anything was.
#[test]
fn past_the_count_limit_the_least_recently_used_goes() {
    let limits = Limits {
        max_statements: 2,
        ..Limits::default()
    };
    let mut t = T::logged_in_with(limits, BASE | caps::DEPRECATE_EOF);
    let unknown = t.execute(9);
    assert_eq!((unknown.query, unknown.query_evicted), (None, false));
    t.prepare(1, "SELECT 'a'");
    t.prepare(2, "SELECT 'b'");
    assert_eq!(t.execute(1).query.as_deref(), Some("SELECT 'a'"));
    t.prepare(3, "SELECT 'c'");
    assert_eq!(t.errors(), ["statement_evicted"]);
    assert_eq!(t.conn.statements(), 2);
    let two = t.execute(2);
    assert_eq!((two.query, two.query_evicted), (None, true));
    assert_eq!(t.execute(1).query.as_deref(), Some("SELECT 'a'"));
    assert_eq!(t.execute(3).query.as_deref(), Some("SELECT 'c'"));
    // Closed: its bytes go with it.
    let before = t.conn.statement_bytes();
    t.req(&[pkt(0, &[0x19, 3, 0, 0, 0])]);
    assert_eq!(t.conn.statement_bytes(), before - "SELECT 'c'".len());
}
