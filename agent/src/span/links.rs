//! Trace context decided in userspace, for protocols the kernel does not parse (HTTP/2, gRPC).
//!
//! HTTP/1 ids come from the kernel, which chose them when the request crossed the socket. For
//! HTTP/2 the agent decides, as each request's HEADERS arrive:
//!
//! * **Server request**: the request's own `traceparent` if valid (`header`); else, when the
//!   client end of the same TCP connection is a process sonde traces on this host, the client
//!   span of the same stream (`peer`); else a new trace. The peer is looked up as late as
//!   possible (when a child needs the context, or when the exchange ends), since the record of
//!   the client's write may be read after the server's read.
//! * **Client request** (a process sending HTTP/2 HEADERS): its own `traceparent` if it carries
//!   one (`adopted`); else a child of the one server request the same process is serving
//!   (`linked`, HTTP/1 or HTTP/2); with several in flight, a child of the one among them whose
//!   head was read by the thread that makes the call (`linked`: a thread-per-request server,
//!   the rule the kernel applies to HTTP/1 calls), else a new trace marked `ambiguous` (a
//!   wrong parent is worse than none); with none, a new trace. Database operations
//!   (`super::db`) are linked by the same rule.
//!
//! Everything here is bounded: open server requests per connection and in total, and the peer
//! table, whose oldest entries go first.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    net::SocketAddr,
};

use std::sync::Arc;

use sonde_model::{KeyValue, Resource, Span, SpanId, SpanKind, Status, TraceId};
use sonde_proto::InjectOutcome;

use super::{ids, stats::Link};
use crate::context::TraceParent;
use crate::sampling::RootSampler;

/// The trace context of one span, and how it was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ids {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub parent: Option<SpanId>,
    pub flags: u8,
    pub trace_state: String,
    /// `sonde.trace.link`: `header`, `linked`, `peer`, `ambiguous`, `adopted`, `new`.
    pub link: Link,
    /// Client spans whose request went through the kernel's injection.
    pub inject: Option<InjectOutcome>,
}

impl Ids {
    /// The finished span these ids name: `sonde.trace.link`, and `sonde.trace.inject` where the
    /// kernel handled the request's context, go last into its attributes.
    pub fn into_span(
        self,
        name: String,
        kind: SpanKind,
        (start_unix_nanos, end_unix_nanos): (u64, u64),
        mut attributes: Vec<KeyValue>,
        status: Status,
        resource: Arc<Resource>,
    ) -> Span {
        attributes.push(KeyValue::new("sonde.trace.link", self.link.as_str()));
        if let Some(i) = self.inject {
            attributes.push(KeyValue::new("sonde.trace.inject", i.as_str()));
        }
        Span {
            trace_id: self.trace_id,
            span_id: self.span_id,
            parent_span_id: self.parent,
            trace_state: self.trace_state,
            flags: self.flags,
            name,
            kind,
            start_unix_nanos,
            end_unix_nanos,
            attributes,
            status,
            resource,
        }
    }

    /// A new trace with a fresh span.
    pub fn new_trace(link: Link, sampler: RootSampler) -> Self {
        let trace_id = ids::trace_id();
        Self {
            trace_id,
            span_id: ids::span_id(),
            parent: None,
            flags: sampler.flags(&trace_id),
            trace_state: String::new(),
            link,
            inject: None,
        }
    }

    /// A fresh span continuing the caller's `traceparent`.
    pub fn from_header(tp: &TraceParent, trace_state: String, link: Link) -> Self {
        Self {
            trace_id: tp.trace_id,
            span_id: ids::span_id(),
            parent: Some(tp.parent_id),
            flags: tp.flags,
            trace_state,
            link,
            inject: None,
        }
    }

    /// A fresh span, child of `parent`.
    fn child_of(parent: &Ids, link: Link) -> Self {
        Self {
            trace_id: parent.trace_id,
            span_id: ids::span_id(),
            parent: Some(parent.span_id),
            flags: parent.flags,
            trace_state: parent.trace_state.clone(),
            link,
            inject: None,
        }
    }
}

/// One stream of one TCP connection, named the same from both ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PeerKey {
    pub client: SocketAddr,
    pub server: SocketAddr,
    pub stream: u32,
}

impl PeerKey {
    /// The key of `stream` on a connection with these addresses, seen from `client_side`.
    pub fn of(
        local: Option<SocketAddr>,
        remote: Option<SocketAddr>,
        client_side: bool,
        stream: u32,
    ) -> Option<Self> {
        let canon = |a: SocketAddr| SocketAddr::new(a.ip().to_canonical(), a.port());
        let (local, remote) = (canon(local?), canon(remote?));
        let (client, server) = if client_side {
            (local, remote)
        } else {
            (remote, local)
        };
        Some(Self {
            client,
            server,
            stream,
        })
    }
}

/// A server request in progress.
#[derive(Debug)]
struct OpenServer {
    pid: u32,
    /// The thread that read the request's head (0: not known).
    tid: u32,
    opened_ns: u64,
    /// Decided once; `None` until something needs it.
    ids: Option<Ids>,
    /// The request's own `traceparent`, with its `tracestate`.
    incoming: Option<(TraceParent, String)>,
    peer: Option<PeerKey>,
}

/// What [`Links::serving`] found.
enum Serving {
    None,
    One(OpenKey),
    Several,
}

/// Server requests older than this are not considered in progress by the linking rule (a
/// long-lived stream must not make every other call ambiguous).
const OPEN_STALE_NS: u64 = 30_000_000_000;
/// Open server requests remembered in total.
const MAX_OPEN: usize = 65_536;
/// Client contexts remembered for the peer end.
const MAX_PEERS: usize = 65_536;
/// How long a client context waits for its peer.
const PEER_TTL_NS: u64 = 30_000_000_000;

/// Key of an open server request: the connection, and the stream (HTTP/2) or the request's
/// stream offset (HTTP/1).
type OpenKey = (u64, u64);

/// See the module documentation.
#[derive(Debug, Default)]
pub struct Links {
    open: HashMap<OpenKey, OpenServer>,
    by_pid: HashMap<u32, HashSet<OpenKey>>,
    by_conn: HashMap<u64, HashSet<u64>>,
    /// Open requests in the order they opened (entries of closed ones are skipped when met,
    /// and swept when they outnumber the live ones): the oldest goes first at the bound.
    open_order: VecDeque<(OpenKey, u64)>,
    peers: HashMap<PeerKey, (Ids, u64)>,
    peer_order: VecDeque<(PeerKey, u64)>,
    /// Counters: open requests dropped at the bound, peer contexts dropped at the bound.
    pub dropped_open: u64,
    pub dropped_peers: u64,
    /// The head-sampling decision of the new roots decided here.
    sampler: RootSampler,
}

impl Links {
    pub fn new(sampler: RootSampler) -> Self {
        Self {
            sampler,
            ..Self::default()
        }
    }

    /// A server request started; its context is decided when first needed.
    pub fn open_server(
        &mut self,
        key: OpenKey,
        (pid, tid): (u32, u32),
        now_ns: u64,
        incoming: Option<(TraceParent, String)>,
        peer: Option<PeerKey>,
    ) {
        self.insert_open(
            key,
            OpenServer {
                pid,
                tid,
                opened_ns: now_ns,
                ids: None,
                incoming,
                peer,
            },
        );
    }

    /// A server request whose context is already decided (the kernel's, for HTTP/1).
    pub fn open_server_decided(
        &mut self,
        key: OpenKey,
        (pid, tid): (u32, u32),
        now_ns: u64,
        ids: Ids,
    ) {
        self.insert_open(
            key,
            OpenServer {
                pid,
                tid,
                opened_ns: now_ns,
                ids: Some(ids),
                incoming: None,
                peer: None,
            },
        );
    }

    fn insert_open(&mut self, key: OpenKey, entry: OpenServer) {
        if self.open.len() >= MAX_OPEN && !self.open.contains_key(&key) {
            // Full: the oldest goes (it is also the stalest).
            while let Some((k, t)) = self.open_order.pop_front() {
                if self.open.get(&k).is_some_and(|o| o.opened_ns == t) {
                    self.close_server(k);
                    self.dropped_open += 1;
                    break;
                }
            }
        }
        let (pid, opened_ns) = (entry.pid, entry.opened_ns);
        if self.open.insert(key, entry).is_none() {
            self.by_pid.entry(pid).or_default().insert(key);
            self.by_conn.entry(key.0).or_default().insert(key.1);
        }
        self.open_order.push_back((key, opened_ns));
        if self.open_order.len() > 2 * self.open.len() + 64 {
            let open = &self.open;
            self.open_order
                .retain(|(k, t)| open.get(k).is_some_and(|o| o.opened_ns == *t));
        }
    }

    /// The server request ended (its span is being built): its context, decided now if it was
    /// not yet. `None` if it was never opened.
    pub fn close_server(&mut self, key: OpenKey) -> Option<Ids> {
        let mut o = self.open.remove(&key)?;
        if let Some(keys) = self.by_pid.get_mut(&o.pid) {
            keys.remove(&key);
            if keys.is_empty() {
                self.by_pid.remove(&o.pid);
            }
        }
        if let Some(keys) = self.by_conn.get_mut(&key.0) {
            keys.remove(&key.1);
            if keys.is_empty() {
                self.by_conn.remove(&key.0);
            }
        }
        Some(match o.ids.take() {
            Some(ids) => ids,
            None => self.decide(&o),
        })
    }

    /// Forgets every open request of connection `conn` (it ended).
    pub fn forget_conn(&mut self, conn: u64) {
        for n in self.by_conn.remove(&conn).unwrap_or_default() {
            self.close_server((conn, n));
        }
    }

    /// The context of a server request that was never opened (its head was not seen).
    pub fn decide_unopened(&mut self, peer: Option<PeerKey>) -> Ids {
        let o = OpenServer {
            pid: 0,
            tid: 0,
            opened_ns: 0,
            ids: None,
            incoming: None,
            peer,
        };
        self.decide(&o)
    }

    fn decide(&mut self, o: &OpenServer) -> Ids {
        if let Some((tp, state)) = &o.incoming {
            return Ids::from_header(tp, state.clone(), Link::Header);
        }
        if let Some(parent) = o.peer.and_then(|p| self.peers.get(&p)).map(|(ids, _)| ids) {
            let mut ids = Ids::child_of(parent, Link::Peer);
            // The peer's tracestate is not known here (its header was never sent).
            ids.trace_state = String::new();
            return ids;
        }
        Ids::new_trace(Link::New, self.sampler)
    }

    /// The context of a client request that thread `tid` of process `pid` starts at `now_ns`,
    /// given the request's own `traceparent` (and `tracestate`) if it carries one. `peer` names
    /// it for the server end.
    pub fn client_request(
        &mut self,
        (pid, tid): (u32, u32),
        now_ns: u64,
        own: Option<(TraceParent, String)>,
        peer: Option<PeerKey>,
    ) -> Ids {
        let ids = match own {
            Some((tp, state)) => Ids::from_header(&tp, state, Link::Adopted),
            None => match self.serving(pid, tid, now_ns) {
                Serving::One(key) => match self.server_ids(key) {
                    Some(p) => Ids::child_of(&p, Link::Linked),
                    None => Ids::new_trace(Link::New, self.sampler),
                },
                Serving::None => Ids::new_trace(Link::New, self.sampler),
                Serving::Several => Ids::new_trace(Link::Ambiguous, self.sampler),
            },
        };
        if let Some(p) = peer {
            self.publish_peer(p, &ids, now_ns);
        }
        ids
    }

    /// Which request thread `tid` of process `pid` serves at `now_ns`: the one live request of
    /// the process, else the one among them whose head the thread read (0: any thread).
    fn serving(&self, pid: u32, tid: u32, now_ns: u64) -> Serving {
        let Some(keys) = self.by_pid.get(&pid) else {
            return Serving::None;
        };
        let (mut live, mut first) = (0usize, None);
        let (mut on_thread, mut thread_key) = (0usize, None);
        for k in keys {
            let Some(o) = self.open.get(k) else { continue };
            if now_ns.saturating_sub(o.opened_ns) >= OPEN_STALE_NS {
                continue;
            }
            live += 1;
            first.get_or_insert(*k);
            if tid != 0 && o.tid == tid {
                on_thread += 1;
                thread_key.get_or_insert(*k);
            }
            // Decided already: several live, and the thread cannot single one out.
            if live >= 2 && (tid == 0 || on_thread >= 2) {
                break;
            }
        }
        match (live, on_thread) {
            (0, _) => Serving::None,
            (1, _) => first.map_or(Serving::None, Serving::One),
            (_, 1) => thread_key.map_or(Serving::None, Serving::One),
            _ => Serving::Several,
        }
    }

    /// The decided context of an open server request (decided now if needed).
    fn server_ids(&mut self, key: OpenKey) -> Option<Ids> {
        let o = self.open.get(&key)?;
        if let Some(ids) = &o.ids {
            return Some(ids.clone());
        }
        let o = self.open.remove(&key)?;
        let ids = self.decide(&o);
        self.open.insert(
            key,
            OpenServer {
                ids: Some(ids.clone()),
                ..o
            },
        );
        Some(ids)
    }

    /// Remembers the context of a client stream for the server end of the connection.
    pub fn publish_peer(&mut self, key: PeerKey, ids: &Ids, now_ns: u64) {
        while let Some((k, t)) = self.peer_order.front().copied() {
            if now_ns.saturating_sub(t) < PEER_TTL_NS && self.peers.len() < MAX_PEERS {
                break;
            }
            self.peer_order.pop_front();
            // Only if it is still that entry (a reused key replaced it).
            if self.peers.get(&k).is_some_and(|(_, at)| *at == t) {
                self.peers.remove(&k);
                if now_ns.saturating_sub(t) < PEER_TTL_NS {
                    self.dropped_peers += 1;
                }
            }
        }
        self.peers.insert(key, (ids.clone(), now_ns));
        self.peer_order.push_back((key, now_ns));
    }

    /// Open server requests (for tests and metrics).
    pub fn open_len(&self) -> usize {
        self.open.len()
    }

    /// Peer contexts remembered.
    pub fn peers_len(&self) -> usize {
        self.peers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn tp(trace: u8, parent: u8) -> TraceParent {
        TraceParent {
            version: 0,
            trace_id: TraceId([trace; 16]),
            parent_id: SpanId([parent; 8]),
            flags: 1,
        }
    }

    #[test]
    fn a_client_call_is_the_child_of_the_one_request_its_process_serves() {
        let mut l = Links::default();
        l.open_server((1, 1), (10, 0), 0, Some((tp(7, 8), "a=b".into())), None);
        let c = l.client_request((10, 0), 5, None, None);
        assert_eq!(c.link, Link::Linked);
        assert_eq!(c.trace_id, TraceId([7; 16]));
        let server = l.close_server((1, 1)).unwrap();
        assert_eq!(server.link, Link::Header);
        assert_eq!(server.parent, Some(SpanId([8; 8])));
        assert_eq!(
            c.parent,
            Some(server.span_id),
            "the server span decided once"
        );
        assert_eq!(server.trace_state, "a=b");
        // Another process's calls are not linked to it.
        assert_eq!(l.client_request((11, 0), 6, None, None).link, Link::New);
    }

    #[test]
    fn two_requests_in_flight_make_a_call_ambiguous_and_stale_ones_do_not_count() {
        let mut l = Links::default();
        l.open_server((1, 1), (10, 0), 0, None, None);
        l.open_server((1, 3), (10, 0), 1, None, None);
        let c = l.client_request((10, 0), 2, None, None);
        assert_eq!((c.link, c.parent), (Link::Ambiguous, None));
        // 31 s later both are stale: a new request alone links again.
        l.open_server((2, 1), (10, 0), 31_000_000_000, None, None);
        let c = l.client_request((10, 0), 31_000_000_001, None, None);
        assert_eq!(c.link, Link::Linked);
    }

    #[test]
    fn with_several_in_flight_the_thread_that_read_a_request_links_to_it() {
        let mut l = Links::default();
        // A thread-per-request server: threads 101 and 102 each serve one request.
        l.open_server((1, 1), (10, 101), 0, None, None);
        l.open_server((2, 1), (10, 102), 1, None, None);
        let on_102 = l.client_request((10, 102), 2, None, None);
        assert_eq!(on_102.link, Link::Linked);
        let second = l.close_server((2, 1)).unwrap();
        assert_eq!(on_102.parent, Some(second.span_id));
        // A thread that read neither (a worker pool) or one that read two (an event loop):
        // ambiguous, never a guess.
        l.open_server((2, 1), (10, 102), 3, None, None);
        assert_eq!(
            l.client_request((10, 103), 4, None, None).link,
            Link::Ambiguous
        );
        l.open_server((3, 1), (10, 101), 5, None, None);
        assert_eq!(
            l.client_request((10, 101), 6, None, None).link,
            Link::Ambiguous
        );
        // Thread unknown: the process rule alone.
        assert_eq!(
            l.client_request((10, 0), 7, None, None).link,
            Link::Ambiguous
        );
    }

    #[test]
    fn a_call_that_carries_traceparent_is_adopted() {
        let mut l = Links::default();
        l.open_server((1, 1), (10, 0), 0, None, None);
        let c = l.client_request((10, 0), 1, Some((tp(3, 4), String::new())), None);
        assert_eq!(c.link, Link::Adopted);
        assert_eq!(
            (c.trace_id, c.parent),
            (TraceId([3; 16]), Some(SpanId([4; 8])))
        );
    }

    #[test]
    fn the_server_end_of_a_traced_client_joins_its_trace() {
        let mut l = Links::default();
        let (c, s) = (addr("127.0.0.1:40000"), addr("127.0.0.1:50051"));
        let from_client = PeerKey::of(Some(c), Some(s), true, 5);
        // The server side sees the IPv4-mapped form of the same addresses.
        let v6 = |a: SocketAddr| {
            SocketAddr::new(
                std::net::IpAddr::V6(match a.ip() {
                    std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                    std::net::IpAddr::V6(v6) => v6,
                }),
                a.port(),
            )
        };
        let from_server = PeerKey::of(Some(v6(s)), Some(v6(c)), false, 5);
        assert_eq!(from_client, from_server);
        // The server read is processed before the client's write record: decided later.
        l.open_server((9, 5), (20, 0), 0, None, from_server);
        let client = l.client_request((10, 0), 1, None, from_client);
        let server = l.close_server((9, 5)).unwrap();
        assert_eq!(server.link, Link::Peer);
        assert_eq!(server.trace_id, client.trace_id);
        assert_eq!(server.parent, Some(client.span_id));
        // Another stream of the connection is not the same call.
        let other = PeerKey::of(Some(s), Some(c), false, 7);
        assert_eq!(l.decide_unopened(other).link, Link::New);
    }

    #[test]
    fn tables_stay_bounded() {
        let mut l = Links::default();
        let (c, s) = (addr("127.0.0.1:1"), addr("127.0.0.1:2"));
        for i in 0..(MAX_PEERS as u32 + 10) {
            let ids = Ids::new_trace(Link::New, RootSampler::default());
            l.publish_peer(PeerKey::of(Some(c), Some(s), true, i).unwrap(), &ids, 1);
        }
        assert_eq!(l.peers_len(), MAX_PEERS);
        assert_eq!(l.dropped_peers, 10);
        // Expired ones go without counting as drops.
        l.publish_peer(
            PeerKey::of(Some(c), Some(s), true, u32::MAX).unwrap(),
            &Ids::new_trace(Link::New, RootSampler::default()),
            PEER_TTL_NS + 2,
        );
        assert_eq!(l.peers_len(), 1);
        assert_eq!(l.dropped_peers, 10);
        for i in 0..(MAX_OPEN as u64 + 3) {
            l.open_server((1, i), (1, 0), i, None, None);
        }
        assert_eq!(l.open_len(), MAX_OPEN);
        assert_eq!(l.dropped_open, 3);
        l.forget_conn(1);
        assert_eq!(l.open_len(), 0);
        assert!(l.by_pid.is_empty() && l.by_conn.is_empty());
    }
}
