//! The database parsers on real traffic (`tests/fixtures/db`, recorded as its README says):
//! every operation, with its offsets, exactly.

mod dbcommon;

use dbcommon::{drive, load_db, render_all};
use sonde_protocol::db::Limits;
use sonde_protocol::mysql::MyConn;
use sonde_protocol::postgres::PgConn;
use sonde_protocol::redis::RedisConn;

fn pg(name: &str) -> Vec<String> {
    let ev = drive(PgConn::new(Limits::default()), &load_db(name), |_| {
        Vec::new()
    });
    render_all::<PgConn>(&ev)
}

fn check(got: Vec<String>, want: &[&str]) {
    if got != want {
        panic!("got:\n{}\n", got.join("\n"));
    }
}

#[test]
fn pg_simple_psycopg() {
    check(
        pg("pg_simple_psycopg"),
        &[
            "STARTUP 3.0 user=postgres db=sonde app=sonde-fixture req 0-68 resp 0-422 err=-",
            "OP query \"DROP TABLE IF EXISTS users\" stmt=- cmd=DROP TABLE rows=- drows=0 n=1 req 69-100 resp 423-557 ok",
            "OP query \"CREATE TABLE users (id int primary key, name text)\" stmt=- cmd=CREATE TABLE rows=- drows=0 n=1 req 101-156 resp 558-581 ok",
            "OP execute \"INSERT INTO users VALUES ($1, $2), ($3, $4)\" stmt=- cmd=INSERT rows=2 drows=0 n=1 req 157-290 resp 582-612 ok",
            "OP execute \"SELECT id, name FROM users WHERE id IN ($1, $2) ORDER BY id\" stmt=- cmd=SELECT rows=2 drows=2 n=1 req 296-419 resp 619-731 ok",
            "OP query \"SELECT 1; UPDATE users SET name = 'x' WHERE id = 2; SELECT name FROM users\" stmt=- cmd=SELECT rows=4 drows=3 n=3 req 425-504 resp 738-887 ok",
            "OP execute \"SELECT * FROM missing_table WHERE id = $1\" stmt=- cmd=- rows=- drows=0 n=0 req 505-598 resp 888-1000 error(ERROR 42P01 relation \"missing_table\" does not exist)",
            "OP query \"DO $$ BEGIN RAISE NOTICE 'hello notice'; END $$\" stmt=- cmd=DO rows=- drows=0 n=1 req 604-656 resp 1007-1150 ok",
            "OP query \"LISTEN sonde_channel\" stmt=- cmd=LISTEN rows=- drows=0 n=1 req 657-682 resp 1151-1168 ok",
            "OP query \"NOTIFY sonde_channel, 'payload'\" stmt=- cmd=NOTIFY rows=- drows=0 n=1 req 683-719 resp 1169-1217 ok",
            "OP query \"COPY users (id, name) FROM STDIN\" stmt=- cmd=COPY rows=5 drows=0 n=1 req 720-817 resp 1218-1247 ok copy(In 50B 1m)",
            "OP query \"COPY (SELECT id, name FROM users ORDER BY id) TO STDOUT\" stmt=- cmd=COPY rows=7 drows=0 n=1 req 818-878 resp 1248-1377 ok copy(Out 60B 7m)",
            "OP prepare \"SELECT name FROM users WHERE id = $1\" stmt=_pg3_0 cmd=- rows=- drows=0 n=0 req 879-938 resp 1378-1388 ok",
            "OP execute \"SELECT name FROM users WHERE id = $1\" stmt=_pg3_0 cmd=SELECT rows=1 drows=1 n=1 req 939-984 resp 1389-1454 ok",
            "OP execute \"SELECT name FROM users WHERE id = $1\" stmt=_pg3_0 cmd=SELECT rows=1 drows=1 n=1 req 990-1035 resp 1461-1526 ok",
            "OP query \"SET application_name = 'renamed'\" stmt=- cmd=SET rows=- drows=0 n=1 req 1041-1078 resp 1533-1577 ok",
        ],
    );
}

#[test]
fn pg_pipeline_psycopg() {
    check(
        pg("pg_pipeline_psycopg"),
        &[
            "STARTUP 3.0 user=postgres db=sonde app=sonde-fixture req 0-68 resp 0-422 err=-",
            "OP query \"CREATE TEMP TABLE t (id int primary key, v text)\" stmt=- cmd=CREATE TABLE rows=- drows=0 n=1 req 69-122 resp 423-446 ok",
            "OP execute \"INSERT INTO t VALUES ($1, $2)\" stmt=- cmd=INSERT rows=1 drows=0 n=1 req 123-215 resp 447-477 ok",
            "OP execute \"INSERT INTO t VALUES ($1, $2)\" stmt=- cmd=INSERT rows=1 drows=0 n=1 req 216-308 resp 478-508 ok",
            "OP execute \"SELECT v FROM t WHERE id = $1\" stmt=- cmd=SELECT rows=1 drows=1 n=1 req 309-390 resp 509-571 ok",
            "OP execute \"INSERT INTO t VALUES ($1, $2)\" stmt=- cmd=INSERT rows=1 drows=0 n=1 req 401-493 resp 578-608 ok",
            "OP execute \"INSERT INTO t VALUES ($1, $2)\" stmt=- cmd=- rows=- drows=0 n=0 req 494-594 resp 609-795 error(ERROR 23505 duplicate key value violates unique constraint \"t_pkey\")",
            "OP execute \"SELECT count(*) FROM t\" stmt=- cmd=- rows=- drows=0 n=0 req 595-657 resp - not_executed",
            "OP query \"SELECT count(*) FROM t\" stmt=- cmd=SELECT rows=1 drows=1 n=1 req 668-695 resp 802-864 ok",
        ],
    );
}

#[test]
fn pg_sslrequest_psycopg() {
    check(
        pg("pg_sslrequest_psycopg"),
        &[
            "STARTUP 3.0 user=postgres db=sonde app=- req 8-45 resp 1-410 err=-",
            "OP query \"SELECT 42\" stmt=- cmd=SELECT rows=1 drows=1 n=1 req 46-60 resp 411-477 ok",
        ],
    );
}

fn redis(name: &str) -> Vec<String> {
    let ev = drive(RedisConn::new(Limits::default()), &load_db(name), |_| {
        Vec::new()
    });
    render_all::<RedisConn>(&ev)
}

#[test]
fn redis_resp2_redispy() {
    check(
        redis("redis_resp2_redispy"),
        &[
            "CMD \"AUTH ?\" db=0 req 0-25 resp 0-4 Simple",
            "CMD \"CLIENT SETINFO ? ?\" db=0 req 26-82 resp 5-57 Error ERR \"unknown subcommand 'SETINFO'. Try CLIENT HELP.\"",
            "CMD \"CLIENT SETINFO ? ?\" db=0 req 83-135 resp 58-110 Error ERR \"unknown subcommand 'SETINFO'. Try CLIENT HELP.\"",
            "CMD \"SELECT ?\" db=0 req 136-158 resp 111-115 Simple",
            "CMD \"SET ? ?\" db=2 req 159-192 resp 116-120 Simple",
            "CMD \"GET ?\" db=2 req 193-217 resp 121-129 Bulk(3)",
            "CMD \"LPUSH ? ?\" db=2 req 218-251 resp 130-197 Error WRONGTYPE \"Operation against a key holding the wrong kind of value\"",
            "CMD \"INCRBY ? ?\" db=2 req 252-287 resp 198-201 Integer",
            "CMD \"INCRBY ? ?\" db=2 req 288-323 resp 202-205 Integer",
            "CMD \"HSET ? ? ? ? ?\" db=2 req 324-372 resp 206-209 Integer",
            "CMD \"HGETALL ?\" db=2 req 373-396 resp 210-241 Array(4)",
            "CMD \"MULTI\" db=2 req 397-411 resp 242-246 Simple",
            "CMD \"SET ? ?\" db=2 req 412-438 resp 247-255 Simple",
            "CMD \"EXPIRE ? ?\" db=2 req 439-470 resp 256-264 Simple",
            "CMD \"EXEC\" db=2 req 471-484 resp 265-277 Array(2)",
            "CMD \"DEL ?\" db=2 req 485-507 resp 278-281 Integer",
            "CMD \"RPUSH ? ? ? ? ? ?\" db=2 req 508-567 resp 282-285 Integer",
            "CMD \"LRANGE ? ? ?\" db=2 req 568-608 resp 286-324 Array(5)",
            "CMD \"NOSUCHCOMMAND ?\" db=2 req 609-641 resp 325-396 Error ERR \"unknown command 'NOSUCHCOMMAND', with args beginning with: 'arg' \"",
            "CMD \"SUBSCRIBE ? ?\" db=2 req 642-682 resp 397-464 Array(3)",
            "PUSH message resp 465-502",
            "CMD \"UNSUBSCRIBE\" db=2 req 683-704 resp 503-540 Array(3)",
            "PUSH unsubscribe resp 541-576",
        ],
    );
}

#[test]
fn redis_resp3_pubsub_redispy() {
    check(
        redis("redis_resp3_pubsub_redispy"),
        &[
            "CMD \"HELLO ? ? ? ?\" db=0 req 0-56 resp 0-144 Map(7)",
            "CMD \"CLIENT MAINT_NOTIFICATIONS ? ? ?\" db=0 req 57-151 resp 145-209 Error ERR \"unknown subcommand 'MAINT_NOTIFICATIONS'. Try CLIENT HELP.\"",
            "CMD \"CLIENT SETINFO ? ?\" db=0 req 152-208 resp 210-262 Error ERR \"unknown subcommand 'SETINFO'. Try CLIENT HELP.\"",
            "CMD \"CLIENT SETINFO ? ?\" db=0 req 209-261 resp 263-315 Error ERR \"unknown subcommand 'SETINFO'. Try CLIENT HELP.\"",
            "CMD \"SET ? ?\" db=0 req 262-288 resp 316-320 Simple",
            "CMD \"HSET ? ? ?\" db=0 req 289-324 resp 321-324 Integer",
            "CMD \"HGETALL ?\" db=0 req 325-349 resp 325-342 Map(1)",
            "CMD \"ZADD ? ? ?\" db=0 req 350-386 resp 343-346 Integer",
            "CMD \"ZSCORE ? ?\" db=0 req 387-416 resp 347-352 Number",
            "CMD \"SUBSCRIBE ?\" db=0 req 417-445 resp 353-385 Push(3)",
            "PUSH message resp 386-423",
            "CMD \"UNSUBSCRIBE ?\" db=0 req 446-477 resp 424-459 Push(3)",
        ],
    );
}

#[test]
fn redis_inline_socket() {
    check(
        redis("redis_inline_socket"),
        &[
            "CMD \"AUTH ?\" inline db=0 req 0-12 resp 0-4 Simple",
            "CMD \"PING\" inline db=0 req 13-18 resp 5-11 Simple",
            "CMD \"SET ? ?\" inline db=0 req 19-34 resp 12-16 Simple",
            "CMD \"GET ?\" inline db=0 req 35-46 resp 17-25 Bulk(3)",
        ],
    );
}

fn mysql(name: &str) -> Vec<String> {
    let ev = drive(MyConn::new(Limits::default()), &load_db(name), |_| {
        Vec::new()
    });
    render_all::<MyConn>(&ev)
}

#[test]
fn mysql_pymysql() {
    check(
        mysql("mysql_pymysql"),
        &[
            "HANDSHAKE 5.5.5-10.11.19-MariaDB-0+deb12u1 mariadb=true user=sonde db=sonde deprecate_eof=false greeting 0-103 req 0-145 err=-",
            "COM_QUERY \"SET NAMES utf8mb4\" id=- db=sonde rows=0 affected=0 results=1 req 146-167 resp 115-125",
            "COM_QUERY \"DROP TABLE IF EXISTS users\" id=- db=sonde rows=0 affected=0 results=1 req 168-198 resp 126-136",
            "COM_QUERY \"CREATE TABLE users (id int primary key, name varchar(20))\" id=- db=sonde rows=0 affected=0 results=1 req 199-260 resp 137-147",
            "COM_QUERY \"INSERT INTO users VALUES (1, 'ann'), (2, 'bob')\" id=- db=sonde rows=0 affected=2 results=1 req 261-312 resp 148-197",
            "COM_QUERY \"SELECT id, name FROM users WHERE id IN (1, 2)\" id=- db=sonde rows=2 affected=- results=1 req 313-362 resp 198-334",
            "COM_QUERY \"SELECT * FROM missing_table\" id=- db=sonde rows=0 affected=- results=0 req 363-394 resp 335-388 error(1146 42S02 Table 'sonde.missing_table' doesn't exist)",
            "COM_QUERY \"SELECT 1; UPDATE users SET name = 'x' WHERE id = 2; SELECT name FROM users\" id=- db=sonde rows=3 affected=1 results=3 req 395-473 resp 389-582",
            "COM_INIT_DB \"mysql\" id=- db=sonde rows=0 affected=0 results=1 req 474-483 resp 583-593",
            "COM_PING \"-\" id=- db=mysql rows=0 affected=0 results=1 req 484-488 resp 594-604",
        ],
    );
}

#[test]
fn mysql_prepared_connector() {
    check(
        mysql("mysql_prepared_connector"),
        &[
            "HANDSHAKE 5.5.5-10.11.19-MariaDB-0+deb12u1 mariadb=true user=sonde db=sonde deprecate_eof=false greeting 0-103 req 0-233 err=-",
            "COM_QUERY \"SET NAMES 'utf8mb4' COLLATE 'utf8mb4_general_ci'\" id=- db=sonde rows=0 affected=0 results=1 req 234-286 resp 115-125",
            "COM_QUERY \"SET @@session.autocommit = OFF\" id=- db=sonde rows=0 affected=0 results=1 req 287-321 resp 126-136",
            "COM_PING \"-\" id=- db=sonde rows=0 affected=0 results=1 req 322-326 resp 137-147",
            "COM_STMT_PREPARE \"SELECT name FROM users WHERE id = ?\" id=1 db=sonde rows=0 affected=- results=0 req 327-366 resp 148-257",
            "COM_STMT_RESET \"SELECT name FROM users WHERE id = ?\" id=1 db=sonde rows=0 affected=0 results=1 req 367-375 resp 258-268",
            "COM_STMT_EXECUTE \"SELECT name FROM users WHERE id = ?\" id=1 db=sonde rows=1 affected=- results=1 req 376-394 resp 269-350",
            "COM_STMT_RESET \"SELECT name FROM users WHERE id = ?\" id=1 db=sonde rows=0 affected=0 results=1 req 395-403 resp 351-361",
            "COM_STMT_EXECUTE \"SELECT name FROM users WHERE id = ?\" id=1 db=sonde rows=1 affected=- results=1 req 404-422 resp 362-441",
            "COM_STMT_PREPARE \"UPDATE users SET name = ? WHERE id = ?\" id=2 db=sonde rows=0 affected=- results=0 req 432-474 resp 442-520",
            "COM_STMT_RESET \"UPDATE users SET name = ? WHERE id = ?\" id=2 db=sonde rows=0 affected=0 results=1 req 475-483 resp 521-531",
            "COM_STMT_EXECUTE \"UPDATE users SET name = ? WHERE id = ?\" id=2 db=sonde rows=0 affected=1 results=1 req 484-506 resp 532-583",
            "COM_PING \"-\" id=- db=sonde rows=0 affected=0 results=1 req 516-520 resp 584-594",
            "COM_QUERY \"SELECT COUNT(*) FROM users\" id=- db=sonde rows=1 affected=- results=1 req 521-551 resp 595-657",
        ],
    );
}

#[test]
fn mysql_compressed_connector() {
    check(
        mysql("mysql_compressed_connector"),
        &[
            "HANDSHAKE 5.5.5-10.11.19-MariaDB-0+deb12u1 mariadb=true user=sonde db=sonde deprecate_eof=false greeting 0-103 req 0-233 err=-",
            "STOP Compressed req@234 resp@115",
        ],
    );
}

#[test]
fn pg_asyncpg() {
    check(
        pg("pg_asyncpg"),
        &[
            "STARTUP 3.0 user=postgres db=sonde app=- req 0-61 resp 0-409 err=-",
            "OP query \"CREATE TEMP TABLE a (id int, v text)\" stmt=- cmd=CREATE TABLE rows=- drows=0 n=1 req 62-103 resp 410-433 ok",
            // Parse/Describe/Flush: a preparation of its own, then the statement by name.
            "OP prepare \"INSERT INTO a VALUES ($1, $2)\" stmt=__asyncpg_stmt_1__ cmd=- rows=- drows=0 n=0 req 104-189 resp 434-458 ok",
            "OP execute \"INSERT INTO a VALUES ($1, $2)\" stmt=__asyncpg_stmt_1__ cmd=INSERT rows=1 drows=0 n=1 req 190-249 resp 459-479 ok",
            "OP execute \"INSERT INTO a VALUES ($1, $2)\" stmt=__asyncpg_stmt_1__ cmd=INSERT rows=1 drows=0 n=1 req 250-309 resp 480-500 ok",
            "OP execute \"INSERT INTO a VALUES ($1, $2)\" stmt=__asyncpg_stmt_1__ cmd=INSERT rows=1 drows=0 n=1 req 310-369 resp 501-521 ok",
            "OP prepare \"SELECT * FROM a WHERE id > $1\" stmt=__asyncpg_stmt_2__ cmd=- rows=- drows=0 n=0 req 375-460 resp 528-591 ok",
            "OP execute \"SELECT * FROM a WHERE id > $1\" stmt=__asyncpg_stmt_2__ cmd=SELECT rows=2 drows=2 n=1 req 461-513 resp 592-650 ok",
            "OP prepare \"SELECT count(*) FROM a\" stmt=__asyncpg_stmt_3__ cmd=- rows=- drows=0 n=0 req 519-597 resp 657-699 ok",
            "OP execute \"SELECT count(*) FROM a\" stmt=__asyncpg_stmt_3__ cmd=- rows=- drows=1 n=0 req 598-642 resp 700-728 ok suspended",
            "OP execute \"SELECT * FROM a WHERE id > $1\" stmt=__asyncpg_stmt_2__ cmd=SELECT rows=1 drows=1 n=1 req 648-700 resp 735-773 ok",
            // The Sync sent after the error is not part of the preparation's request.
            "OP prepare \"SELECT * FROM nope\" stmt=__asyncpg_stmt_4__ cmd=- rows=- drows=0 n=0 req 706-780 resp 780-883 error(ERROR 42P01 relation \"nope\" does not exist)",
        ],
    );
}

#[test]
fn mysql_cli_mariadb() {
    check(
        mysql("mysql_cli_mariadb"),
        &[
            "HANDSHAKE 5.5.5-10.11.19-MariaDB-0+deb12u1 mariadb=true user=sonde db=sonde deprecate_eof=false greeting 0-103 req 0-217 err=-",
            "COM_QUERY \"SELECT 1 UNION SELECT 2\" id=- db=sonde rows=2 affected=- results=1 req 218-245 resp 125-189",
            "COM_QUERY \"SHOW DATABASES LIKE 'son%'\" id=- db=sonde rows=1 affected=- results=1 req 246-276 resp 190-310",
            "COM_QUERY \"SELECT * FROM missing_table\" id=- db=sonde rows=0 affected=- results=0 req 277-308 resp 311-364 error(1146 42S02 Table 'sonde.missing_table' doesn't exist)",
        ],
    );
}

/// The first bytes of every database fixture are recognised by `detect` (the client's for
/// PostgreSQL and Redis, the server's greeting for MySQL); inline Redis is not (port hint only).
#[test]
fn detected_from_first_bytes() {
    use dbcommon::{Step, db_fixtures};
    use sonde_protocol::db::Side;
    use sonde_protocol::detect::{Detected, detect};
    for name in db_fixtures("") {
        let steps = load_db(&name);
        let first = |side: Side| {
            steps.iter().find_map(|s| match s {
                Step::Data(sd, b) if *sd == side => Some(b.clone()),
                _ => None,
            })
        };
        let (side, want) = match &name[..2] {
            "pg" => (Side::Request, Detected::PostgresStartup),
            "my" => (Side::Response, Detected::MysqlGreeting),
            _ if name.contains("inline") => (Side::Request, Detected::Unknown),
            _ => (Side::Request, Detected::RedisCommand),
        };
        let bytes = first(side).expect("first record");
        assert_eq!(detect(&bytes), want, "{name}");
    }
}
