use super::*;

#[test]
fn sanitizes_literals_and_comments() {
    let pg = Dialect::Postgres;
    let my = Dialect::MySql;
    let cases: &[(&str, Dialect, &str)] = &[
        ("SELECT 1", pg, "SELECT ?"),
        (
            "select * from t where a = 'x''y' and b = 1.5e3",
            pg,
            "select * from t where a = ? and b = ?",
        ),
        (
            "SELECT * FROM t WHERE id IN (1, 2, 3)",
            pg,
            "SELECT * FROM t WHERE id IN (?)",
        ),
        (
            "SELECT * FROM t WHERE id in ($1,$2)",
            pg,
            "SELECT * FROM t WHERE id in (?)",
        ),
        (
            "SELECT * FROM t WHERE id IN (SELECT id FROM u)",
            pg,
            "SELECT * FROM t WHERE id IN (SELECT id FROM u)",
        ),
        ("SELECT $1, $2::int", pg, "SELECT $1, $2::int"),
        (
            "-- lead\nSELECT /* a /* nested */ b */ 2 -- tail",
            pg,
            "SELECT ?",
        ),
        (
            "SELECT \"Name\" FROM \"Users\"",
            pg,
            "SELECT \"Name\" FROM \"Users\"",
        ),
        ("SELECT \"secret\" FROM t", my, "SELECT ? FROM t"),
        ("SELECT 'it\\'s' # comment", my, "SELECT ?"),
        ("SELECT E'a\\'b', 'c\\'", pg, "SELECT ?, ?"),
        ("SELECT $$ body 'x' $$, $tag$ q $tag$", pg, "SELECT ?, ?"),
        ("SELECT 0x1F, X'0A', B'01', N'x'", my, "SELECT ?, ?, ?, ?"),
        (
            "INSERT INTO t VALUES (1, 'a'), (2, 'b')",
            pg,
            "INSERT INTO t VALUES (?, ?), (?, ?)",
        ),
        (
            "UPDATE t SET a = -1 WHERE b = .5",
            pg,
            "UPDATE t SET a = -? WHERE b = ?",
        ),
        ("SELECT 'unterminated", pg, "SELECT ?"),
        (
            "SELECT col1, t2.col FROM t2",
            pg,
            "SELECT col1, t2.col FROM t2",
        ),
        (
            "SELECT * FROM t WHERE a = %s AND b = %(name)s",
            pg,
            "SELECT * FROM t WHERE a = %s AND b = %(name)s",
        ),
        ("SELECT 'é', 'ü' FROM café", pg, "SELECT ?, ? FROM café"),
    ];
    for (q, d, want) in cases {
        assert_eq!(sanitize(q, *d), *want, "{q:?}");
    }
}

/// Query, then the expected operation, collection and summary.
type SummaryCase<'a> = (&'a str, Option<&'a str>, Option<&'a str>, Option<&'a str>);

#[test]
fn summarizes_operation_and_collection() {
    let pg = Dialect::Postgres;
    let cases: &[SummaryCase<'_>] = &[
        (
            "SELECT * FROM users WHERE id = 1",
            Some("SELECT"),
            Some("users"),
            Some("SELECT users"),
        ),
        (
            "select a from public.users u join orders o on o.u = u.id",
            Some("SELECT"),
            None,
            Some("SELECT public.users orders"),
        ),
        (
            "INSERT INTO archive SELECT * FROM orders",
            Some("INSERT"),
            None,
            Some("INSERT archive SELECT orders"),
        ),
        (
            "UPDATE users SET name = 'x'",
            Some("UPDATE"),
            Some("users"),
            Some("UPDATE users"),
        ),
        (
            "DELETE FROM \"Users\" WHERE id = $1",
            Some("DELETE"),
            Some("Users"),
            Some("DELETE Users"),
        ),
        (
            "CREATE TABLE IF NOT EXISTS users (id int)",
            Some("CREATE TABLE"),
            Some("users"),
            Some("CREATE TABLE users"),
        ),
        (
            "DROP TABLE IF EXISTS users",
            Some("DROP TABLE"),
            Some("users"),
            Some("DROP TABLE users"),
        ),
        (
            "CREATE TEMP TABLE t (id int)",
            Some("CREATE TABLE"),
            Some("t"),
            Some("CREATE TABLE t"),
        ),
        (
            "COPY users (id, name) FROM STDIN",
            Some("COPY"),
            Some("users"),
            Some("COPY users"),
        ),
        (
            "COPY (SELECT id FROM users) TO STDOUT",
            Some("COPY"),
            Some("users"),
            Some("COPY SELECT users"),
        ),
        ("SELECT 1", Some("SELECT"), None, Some("SELECT")),
        ("BEGIN", Some("BEGIN"), None, Some("BEGIN")),
        ("SET application_name = 'x'", Some("SET"), None, Some("SET")),
        (
            "SELECT 1; UPDATE users SET name = 'x' WHERE id = 2; SELECT name FROM users",
            Some("SELECT"),
            Some("users"),
            Some("SELECT UPDATE users SELECT users"),
        ),
        (
            "WITH x AS (SELECT * FROM a) SELECT * FROM x",
            Some("SELECT"),
            None,
            Some("SELECT a SELECT x"),
        ),
        (
            "SELECT * FROM t FOR UPDATE",
            Some("SELECT"),
            Some("t"),
            Some("SELECT t"),
        ),
        (
            "SELECT count(*) FROM generate_series(1, 10)",
            Some("SELECT"),
            None,
            Some("SELECT"),
        ),
        ("", None, None, None),
        ("\u{0}\u{1}garbage((", None, None, None),
    ];
    for (q, op, coll, summary) in cases {
        let s = summarize(q, pg);
        assert_eq!(
            (
                s.operation.as_deref(),
                s.collection.as_deref(),
                s.summary.as_deref()
            ),
            (*op, *coll, *summary),
            "{q:?}"
        );
    }
}

#[test]
fn mysql_backticks_and_insert() {
    let s = summarize(
        "INSERT IGNORE INTO `shop`.`orders` VALUES (1)",
        Dialect::MySql,
    );
    assert_eq!(s.collection.as_deref(), Some("shop.orders"));
    assert_eq!(s.summary.as_deref(), Some("INSERT shop.orders"));
}

#[test]
fn summary_is_bounded() {
    let q = format!(
        "SELECT * FROM {}",
        (0..200)
            .map(|i| format!("t{i}"))
            .collect::<Vec<_>>()
            .join(" JOIN ")
    );
    let s = summarize(&q, Dialect::Postgres);
    assert!(s.summary.unwrap().len() <= MAX_SUMMARY);
}

#[test]
fn arbitrary_bytes_never_panic() {
    let mut x: u64 = 0x1234_5678;
    for n in 0..2000 {
        let bytes: Vec<u8> = (0..(n % 64))
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                b"'\"`$-/*#?:%()., \nabcSELECTFROM0x19e\\"[(x % 36) as usize]
            })
            .collect();
        let q = String::from_utf8_lossy(&bytes);
        for d in [Dialect::Postgres, Dialect::MySql] {
            let s = sanitize(&q, d);
            assert!(s.len() <= q.len() + 4, "{q:?} → {s:?}");
            let _ = summarize(&q, d);
        }
    }
}
