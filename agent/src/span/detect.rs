//! Which protocol a connection speaks, from its first bytes and what the kernel knows of it
//! (role, whether sonde saw it open). The registry [`DETECTORS`] is asked in order on every
//! data chunk until one answers or the connection has shown [`DETECT_MAX_CHUNKS`] chunks.
//!
//! Detection: an HTTP/1 request or response line, the HTTP/2 client preface (prior knowledge),
//! and, on connections sonde found already open, a chunk that starts with a plausible HTTP/2
//! frame on the side the role says; PostgreSQL, MySQL/MariaDB and Redis from their first
//! bytes, or, on connections found already open, from a well-known port. (The h2c upgrade is not detected here: HTTP/1 switches to
//! HTTP/2 itself when it sees the `101`.)

use sonde_proto::{ConnSource, Direction, Role};
use sonde_protocol::{
    db::{DbSystem, port_hint},
    detect::{Detected, detect},
    http2::plausible_frame_start,
};

use super::{
    db::{Db, System},
    http1::Http1,
    http2::Http2,
    protocol::{ProtocolConn, other, side_of},
};
use crate::conn::ConnInfo;

/// Chunks looked at per connection while its protocol is being detected (and at most this
/// many held for replay).
pub(crate) const DETECT_MAX_CHUNKS: usize = 8;
/// Bytes of one direction's start looked at together when reads split a message start.
pub(crate) const DETECT_PROBE: usize = 64;

/// What a detector is shown.
pub(crate) struct Probe<'a> {
    pub conn: &'a ConnInfo,
    /// The direction of the chunk.
    pub direction: Direction,
    /// The direction's first bytes so far (up to [`DETECT_PROBE`]), this chunk included.
    pub start: &'a [u8],
    /// This chunk alone.
    pub current: &'a [u8],
}

/// Which chunks held while detecting the new parser is fed before the current one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Replay {
    /// Every held chunk, both directions (HTTP/2: a server's SETTINGS often precede the
    /// client's preface).
    All,
    /// The held chunks of the probed direction, when a read split the message start.
    SameDirection,
}

/// A detector's answer.
pub(crate) struct Detection {
    /// The protocol's label (`sonde_connections_total{protocol}`).
    pub name: &'static str,
    pub conn: Box<dyn ProtocolConn>,
    /// Which direction carries requests (the connection's role follows from it when the kernel
    /// did not know it).
    pub request_dir: Direction,
    pub replay: Replay,
}

/// One protocol's detection.
pub(crate) trait Detector: Sync {
    fn detect(&self, probe: &Probe<'_>) -> Option<Detection>;
}

/// The protocols sonde parses, asked in this order.
pub(crate) static DETECTORS: &[&dyn Detector] = &[
    &Http2Preface,
    &Http1Line,
    &Database,
    &DatabaseMidstream,
    &Http2Midstream,
];

/// The direction requests go by the role the kernel saw, if it saw one.
fn role_request_dir(conn: &ConnInfo) -> Option<Direction> {
    match conn.role {
        Role::Client => Some(Direction::Egress),
        Role::Server => Some(Direction::Ingress),
        _ => None,
    }
}

/// A database connection from its first bytes: a PostgreSQL startup or a Redis command from
/// the client, a MySQL/MariaDB greeting from the server; when the kernel knows the role, on
/// the side it says (a Redis reply is an array too).
struct Database;

impl Detector for Database {
    fn detect(&self, p: &Probe<'_>) -> Option<Detection> {
        let (system, request_dir) = match detect(p.start) {
            Detected::PostgresStartup => (System::Postgres, p.direction),
            Detected::RedisCommand => (System::Redis, p.direction),
            Detected::MysqlGreeting => (System::Mysql, other(p.direction)),
            _ => return None,
        };
        if role_request_dir(p.conn).is_some_and(|d| d != request_dir) {
            return None;
        }
        Some(Detection {
            name: system.label(),
            conn: Box::new(Db::new(system, request_dir, false)),
            request_dir,
            replay: Replay::All,
        })
    }
}

/// A connection found already open to (or on) a well-known database port: its parser joins
/// in the middle and waits for a point where it can be sure of its place (the port is only a
/// hint: nothing is reported until the bytes agree).
struct DatabaseMidstream;

impl Detector for DatabaseMidstream {
    fn detect(&self, p: &Probe<'_>) -> Option<Detection> {
        if p.conn.source != ConnSource::Discovered {
            return None;
        }
        let request_dir = role_request_dir(p.conn)?;
        let server = match p.conn.role {
            Role::Client => p.conn.remote?,
            _ => p.conn.local?,
        };
        let system = match port_hint(server.port())? {
            DbSystem::Postgres => System::Postgres,
            DbSystem::Mysql => System::Mysql,
            DbSystem::Redis => System::Redis,
        };
        Some(Detection {
            name: system.label(),
            conn: Box::new(Db::new(system, request_dir, true)),
            request_dir,
            replay: Replay::All,
        })
    }
}

/// The HTTP/2 client connection preface (prior knowledge, or after TLS ALPN h2).
struct Http2Preface;

impl Detector for Http2Preface {
    fn detect(&self, p: &Probe<'_>) -> Option<Detection> {
        (detect(p.start) == Detected::Http2Preface).then(|| Detection {
            name: "http2",
            conn: Box::new(Http2::new(p.direction)),
            request_dir: p.direction,
            replay: Replay::All,
        })
    }
}

/// An HTTP/1 request line or status line.
struct Http1Line;

impl Detector for Http1Line {
    fn detect(&self, p: &Probe<'_>) -> Option<Detection> {
        // The kernel's role wins when it knows one; a connection whose bytes contradict it (a
        // server that sends requests) is parsed as its bytes say.
        let request_dir = match detect(p.start) {
            Detected::Http1Request => p.direction,
            Detected::Http1Response => other(p.direction),
            _ => return None,
        };
        Some(Detection {
            name: "http1",
            conn: Box::new(Http1::new(request_dir)),
            request_dir,
            replay: Replay::SameDirection,
        })
    }
}

/// A connection found already open may be HTTP/2 in the middle: a plausible frame on the side
/// its role says (requests go out of clients, into servers).
struct Http2Midstream;

impl Detector for Http2Midstream {
    fn detect(&self, p: &Probe<'_>) -> Option<Detection> {
        if p.conn.source != ConnSource::Discovered
            || p.conn.role == Role::Unknown
            || detect(p.start) != Detected::Unknown
        {
            return None;
        }
        let request_dir = if p.conn.role == Role::Client {
            Direction::Egress
        } else {
            Direction::Ingress
        };
        plausible_frame_start(side_of(p.direction, request_dir), p.current).then(|| Detection {
            name: "http2",
            conn: Box::new(Http2::attach(request_dir)),
            request_dir,
            replay: Replay::All,
        })
    }
}
