//! Pure protocol parsers: `&[u8]` in, values out. No aya, tokio or kube here, so parsers are
//! tested, fuzzed and benchmarked without root and build fast.
//!
//! - [`detect`](mod@detect) looks at the first bytes of one direction of a connection and says which parser
//!   should own it (HTTP/1 request or response, HTTP/2 preface, or not yet known).
//! - [`http1`] parses both directions of one HTTP/1.x connection incrementally and pairs
//!   requests with responses, with exact stream offsets so the caller can time the exchange.
//! - [`http2`] parses both directions of one HTTP/2 connection (frames, HPACK, streams),
//!   including one joined in the middle or cut by capture gaps, and reports one exchange per
//!   stream with exact stream offsets.
//! - [`grpc`] reads gRPC calls (service, method, status, message counts) from HTTP/2 exchanges.
//! - [`route`](mod@route) turns a request path into a low-cardinality route for span names.
//! - [`postgres`], [`mysql`] and [`redis`] parse both directions of one database connection
//!   into operations (query or command, its answer, rows, errors, stream offsets); [`db`]
//!   holds what they share (limits, extents, how a connection joined midway finds its place,
//!   port hints).
//! - [`sql`] turns query text into `db.query.text` without literals and into
//!   `db.operation.name`, `db.collection.name` and `db.query.summary`.

// The crate under its own name, so test helpers shared with the integration tests
// (`http1/render.rs`, included there with `#[path]`) name it the same way in both places.
extern crate self as sonde_protocol;

pub mod db;
pub mod detect;
pub mod grpc;
pub mod http1;
pub mod http2;
mod mem;
pub mod mysql;
pub mod postgres;
pub mod redis;
pub mod route;
pub mod sql;

pub use detect::{Detected, detect};
pub use grpc::GrpcCall;
pub use http2::{H2Conn, H2Event, H2Exchange};
pub use route::{RouteError, RoutePattern, route, split_target};
