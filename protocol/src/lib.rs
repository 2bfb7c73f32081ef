//! Pure protocol parsers: `&[u8]` in, values out. No aya, tokio or kube here, so parsers are
//! tested, fuzzed and benchmarked without root and build fast.
//!
//! - [`detect`](mod@detect) looks at the first bytes of one direction of a connection and says which parser
//!   should own it (HTTP/1 request or response, HTTP/2 preface, or not yet known).
//! - [`http1`] parses both directions of one HTTP/1.x connection incrementally and pairs
//!   requests with responses, with exact stream offsets so the caller can time the exchange.
//! - [`route`](mod@route) turns a request path into a low-cardinality route for span names.

pub mod detect;
pub mod http1;
pub mod route;

pub use detect::{Detected, detect};
pub use route::{RouteError, RoutePattern, route, split_target};
