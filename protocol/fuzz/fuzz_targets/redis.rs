//! Feeds arbitrary bytes to both sides of one redis connection, with gaps, under default or
//! tight limits, from the connection's start or joined midway (the input format and the checks:
//! `db_common.rs`).
#![no_main]

#[macro_use]
#[path = "db_common.rs"]
mod common;

use sonde_protocol::redis::{RedisConn, RedisEvent};

db_fuzz_target!(RedisConn, RedisEvent);
