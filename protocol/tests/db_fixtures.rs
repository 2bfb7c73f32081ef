//! The database parsers on real traffic (`tests/fixtures/db`, recorded as its README says):
//! every operation, with its offsets, exactly.

mod dbcommon;

use dbcommon::{drive, load_db, render_all};
use sonde_protocol::db::Limits;
use sonde_protocol::postgres::PgConn;

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
