//! TCP segments of a capture in, the kernel's event records out.
//!
//! Each TCP flow becomes one connection per side asked for: the client's view (it wrote the
//! bytes it sent) and the server's view. Retransmitted bytes are dropped, out-of-order
//! segments keep their stream offsets (the connection tracker puts them back in order) and
//! missing segments become lost gaps, exactly as records lost by the kernel would.

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
};

use bytes::Bytes;
use sonde_proto::{CloseReason, ConnSource, Direction, Role, Syscall};

use crate::events::{ConnCloseEv, ConnOpenEv, DataEv, Event, Meta};

/// One TCP segment.
#[derive(Clone, Debug)]
pub struct Segment<'a> {
    pub ts_ns: u64,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub seq: u32,
    pub syn: bool,
    pub ack: bool,
    pub fin: bool,
    pub rst: bool,
    pub payload: &'a [u8],
}

/// Which views of each flow to produce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sides {
    Client,
    Server,
    Both,
}

/// Flows tracked at once; past it, the least recently active flow is ended.
const MAX_FLOWS: usize = 65_536;
/// Received byte ranges remembered per direction (to drop retransmissions).
const MAX_RANGES: usize = 256;

#[derive(Default)]
struct Dir {
    /// Sequence number of stream offset 0 (ISN + 1 when the SYN was seen).
    base: Option<u32>,
    /// Last unwrapped offset computed, and the raw seq it came from (for wraparound).
    last: Option<(u32, u64)>,
    /// Byte ranges already delivered: start -> end.
    ranges: BTreeMap<u64, u64>,
    /// One past the highest offset delivered.
    end: u64,
    fin: bool,
}

impl Dir {
    /// The 64-bit stream offset of `seq`.
    fn offset(&mut self, seq: u32) -> u64 {
        let base = *self.base.get_or_insert(seq);
        let off = match self.last {
            None => u64::from(seq.wrapping_sub(base)),
            Some((last_seq, last_off)) => {
                let delta = seq.wrapping_sub(last_seq) as i32 as i64;
                (last_off as i64 + delta).max(0) as u64
            }
        };
        self.last = Some((seq, off));
        off
    }

    /// Parts of `[start, end)` not delivered before; records them as delivered.
    fn fresh(&mut self, start: u64, end: u64) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let mut cur = start;
        for (&s, &e) in self.ranges.range(..end) {
            if e <= cur {
                continue;
            }
            if s > cur {
                out.push((cur, s.min(end)));
            }
            cur = cur.max(e);
            if cur >= end {
                break;
            }
        }
        if cur < end {
            out.push((cur, end));
        }
        for &(s, e) in &out {
            self.ranges.insert(s, e);
        }
        self.merge();
        self.end = self.end.max(end);
        out
    }

    fn merge(&mut self) {
        let mut merged: BTreeMap<u64, u64> = BTreeMap::new();
        for (&s, &e) in &self.ranges {
            match merged.last_entry() {
                Some(mut last) if *last.get() >= s => {
                    let v = last.get_mut();
                    *v = (*v).max(e);
                }
                _ => {
                    merged.insert(s, e);
                }
            }
        }
        while merged.len() > MAX_RANGES {
            merged.pop_first();
        }
        self.ranges = merged;
    }
}

struct Flow {
    /// dirs[0]: a -> b, dirs[1]: b -> a.
    a: SocketAddr,
    b: SocketAddr,
    /// Whether `a` is known to be the client (its SYN was seen) or the server (its SYN-ACK).
    a_role: Role,
    dirs: [Dir; 2],
    /// Connection ids of the views: [a's view, b's view].
    ids: [u64; 2],
    last_ts: u64,
    fins: u8,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReassemblyStats {
    pub segments: u64,
    pub flows: u64,
    pub retransmitted_bytes: u64,
    pub flows_evicted: u64,
}

pub struct Reassembler {
    sides: Sides,
    flows: HashMap<(SocketAddr, SocketAddr), Flow>,
    next_id: u64,
    pub stats: ReassemblyStats,
}

fn key(x: SocketAddr, y: SocketAddr) -> (SocketAddr, SocketAddr) {
    if x <= y { (x, y) } else { (y, x) }
}

impl Reassembler {
    pub fn new(sides: Sides) -> Self {
        Self {
            sides,
            flows: HashMap::new(),
            next_id: 1,
            stats: ReassemblyStats::default(),
        }
    }

    fn wants(&self, role: Role) -> bool {
        match (self.sides, role) {
            (Sides::Both, _) | (_, Role::Unknown) => true,
            (Sides::Client, r) => r == Role::Client,
            (Sides::Server, r) => r == Role::Server,
        }
    }

    /// Role of each endpoint of a flow: (a's role, b's role).
    fn roles(flow: &Flow) -> [Role; 2] {
        match flow.a_role {
            Role::Client => [Role::Client, Role::Server],
            Role::Server => [Role::Server, Role::Client],
            Role::Unknown => [Role::Unknown, Role::Unknown],
        }
    }

    fn meta(ts: u64) -> Meta {
        Meta {
            pid: 0,
            tid: 0,
            cpu: 0,
            enter_ns: ts,
            exit_ns: ts,
        }
    }

    fn open(&mut self, seg: &Segment<'_>, out: &mut Vec<Event>) {
        if self.flows.len() >= MAX_FLOWS
            && let Some(k) = self
                .flows
                .iter()
                .min_by_key(|(_, f)| f.last_ts)
                .map(|(k, _)| *k)
        {
            self.stats.flows_evicted += 1;
            self.close_flow(k, seg.ts_ns, out);
        }
        let a_role = match (seg.syn, seg.ack) {
            (true, false) => Role::Client,
            (true, true) => Role::Server,
            _ => Role::Unknown,
        };
        let ids = [self.next_id, self.next_id + 1];
        self.next_id += 2;
        let flow = Flow {
            a: seg.src,
            b: seg.dst,
            a_role,
            dirs: Default::default(),
            ids,
            last_ts: seg.ts_ns,
            fins: 0,
        };
        let roles = Self::roles(&flow);
        for (i, (local, remote)) in [(flow.a, flow.b), (flow.b, flow.a)].into_iter().enumerate() {
            if self.wants(roles[i]) {
                out.push(Event::ConnOpen(ConnOpenEv {
                    meta: Self::meta(seg.ts_ns),
                    conn_id: ids[i],
                    fd: 0,
                    role: roles[i],
                    source: if a_role == Role::Unknown {
                        ConnSource::Discovered
                    } else if roles[i] == Role::Client {
                        ConnSource::Connect
                    } else {
                        ConnSource::Accept
                    },
                    local,
                    remote,
                    tcp_state: 1,
                    netns: 0,
                    comm: String::new(),
                    cgroup_id: 0,
                }));
            }
        }
        self.stats.flows += 1;
        self.flows.insert(key(seg.src, seg.dst), flow);
    }

    fn close_flow(&mut self, k: (SocketAddr, SocketAddr), ts: u64, out: &mut Vec<Event>) {
        let Some(flow) = self.flows.remove(&k) else {
            return;
        };
        let roles = Self::roles(&flow);
        let totals = [flow.dirs[0].end, flow.dirs[1].end];
        for i in 0..2 {
            if self.wants(roles[i]) {
                out.push(Event::ConnClose(ConnCloseEv {
                    meta: Self::meta(ts),
                    conn_id: flow.ids[i],
                    fd: 0,
                    reason: CloseReason::Close,
                    tx_bytes: totals[i],
                    rx_bytes: totals[1 - i],
                }));
            }
        }
    }

    /// Feeds one segment; appends the events it produces.
    pub fn segment(&mut self, seg: &Segment<'_>, out: &mut Vec<Event>) {
        self.stats.segments += 1;
        let k = key(seg.src, seg.dst);
        // A new SYN on a 4-tuple whose flow ended (or is ending) starts a new flow.
        if seg.syn
            && !seg.ack
            && self
                .flows
                .get(&k)
                .is_some_and(|f| f.fins > 0 || f.dirs[0].end > 0)
        {
            self.close_flow(k, seg.ts_ns, out);
        }
        if !self.flows.contains_key(&k) {
            if seg.rst || (seg.fin && seg.payload.is_empty()) {
                return;
            }
            self.open(seg, out);
        }
        let sides = self.sides;
        let Some(flow) = self.flows.get_mut(&k) else {
            return;
        };
        flow.last_ts = seg.ts_ns;
        let d = usize::from(seg.src != flow.a);
        if flow.a_role == Role::Unknown && seg.syn {
            flow.a_role = if (d == 0) != seg.ack {
                Role::Client
            } else {
                Role::Server
            };
        }
        let dir = &mut flow.dirs[d];
        if seg.syn {
            dir.base = Some(seg.seq.wrapping_add(1));
            dir.last = None;
        }
        if !seg.payload.is_empty() {
            let start = dir.offset(seg.seq);
            let end = start + seg.payload.len() as u64;
            let fresh = dir.fresh(start, end);
            let fresh_len: u64 = fresh.iter().map(|(s, e)| e - s).sum();
            self.stats.retransmitted_bytes += seg.payload.len() as u64 - fresh_len;
            let roles = Self::roles(flow);
            for (s, e) in fresh {
                let bytes = Bytes::copy_from_slice(
                    &seg.payload[(s - start) as usize..(e - start) as usize],
                );
                // View i sees direction d as egress when it is the sender.
                for (i, &role) in roles.iter().enumerate() {
                    let wanted = match (sides, role) {
                        (Sides::Both, _) | (_, Role::Unknown) => true,
                        (Sides::Client, r) => r == Role::Client,
                        (Sides::Server, r) => r == Role::Server,
                    };
                    if !wanted {
                        continue;
                    }
                    let direction = if i == d {
                        Direction::Egress
                    } else {
                        Direction::Ingress
                    };
                    out.push(Event::Data(DataEv {
                        meta: Self::meta(seg.ts_ns),
                        conn_id: flow.ids[i],
                        seq: s,
                        direction,
                        role,
                        syscall: if direction == Direction::Egress {
                            Syscall::Write
                        } else {
                            Syscall::Read
                        },
                        fd: 0,
                        orig_len: (e - s) as u32,
                        payload: bytes.clone(),
                        iov_limit: false,
                        read_failed: false,
                        tls: false,
                    }));
                }
            }
        }
        if seg.fin && !flow.dirs[d].fin {
            flow.dirs[d].fin = true;
            flow.fins += 1;
        }
        if seg.rst || flow.fins == 2 {
            self.close_flow(k, seg.ts_ns, out);
        }
    }

    /// Ends every flow (end of the capture).
    pub fn finish(&mut self, ts: u64, out: &mut Vec<Event>) {
        let keys: Vec<_> = self.flows.keys().copied().collect();
        for k in keys {
            self.close_flow(k, ts, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::{CollectSink, ConnTracker, Limits};

    const C: &str = "127.0.0.1:40000";
    const S: &str = "127.0.0.1:80";

    fn seg<'a>(ts: u64, from: &str, to: &str, seq: u32, flags: &str, p: &'a [u8]) -> Segment<'a> {
        Segment {
            ts_ns: ts,
            src: from.parse().unwrap(),
            dst: to.parse().unwrap(),
            seq,
            syn: flags.contains('S'),
            ack: flags.contains('A'),
            fin: flags.contains('F'),
            rst: flags.contains('R'),
            payload: p,
        }
    }

    fn run(sides: Sides, segs: &[Segment<'_>]) -> (CollectSink, Reassembler) {
        let mut r = Reassembler::new(sides);
        let mut events = Vec::new();
        for s in segs {
            r.segment(s, &mut events);
        }
        r.finish(1000, &mut events);
        let mut t = ConnTracker::without_role_resolver(Limits::default());
        let mut sink = CollectSink::default();
        for e in events {
            t.handle(e, &mut sink);
        }
        (sink, r)
    }

    #[test]
    fn handshake_data_retransmission_reordering_and_close() {
        let isn_c = 4_294_967_290u32; // wraps during the stream
        let isn_s = 1000u32;
        let segs = [
            seg(1, C, S, isn_c, "S", b""),
            seg(2, S, C, isn_s, "SA", b""),
            seg(3, C, S, isn_c.wrapping_add(1), "A", b"GET / HTTP/1.1\r\n"),
            // retransmission of the first 4 bytes plus new ones
            seg(
                4,
                C,
                S,
                isn_c.wrapping_add(1),
                "A",
                b"GET / HTTP/1.1\r\nHost",
            ),
            // out of order: the tail before the middle
            seg(6, C, S, isn_c.wrapping_add(24), "A", b"\r\n\r\n"),
            seg(5, C, S, isn_c.wrapping_add(21), "A", b": x"),
            seg(7, S, C, isn_s + 1, "A", b"HTTP/1.1 200 OK\r\n\r\n"),
            seg(8, C, S, isn_c.wrapping_add(28), "FA", b""),
            seg(9, S, C, isn_s + 20, "FA", b""),
        ];
        let (sink, r) = run(Sides::Both, &segs);
        assert_eq!(sink.conns.len(), 2);
        let client = sink
            .conns
            .values()
            .find(|c| c.info.role == Role::Client)
            .unwrap();
        let server = sink
            .conns
            .values()
            .find(|c| c.info.role == Role::Server)
            .unwrap();
        assert_eq!(client.info.local, Some(C.parse().unwrap()));
        assert_eq!(server.info.local, Some(S.parse().unwrap()));
        assert_eq!(
            client.stream(Direction::Egress),
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
        );
        assert_eq!(
            server.stream(Direction::Ingress),
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
        );
        assert_eq!(
            client.stream(Direction::Ingress),
            b"HTTP/1.1 200 OK\r\n\r\n"
        );
        assert_eq!(server.stream(Direction::Egress), b"HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!(r.stats.retransmitted_bytes, 16);
        assert!(client.end.is_some() && server.end.is_some());
    }

    #[test]
    fn a_missing_segment_is_a_lost_gap() {
        let segs = [
            seg(1, C, S, 0, "S", b""),
            seg(2, C, S, 1, "A", b"abc"),
            seg(3, C, S, 10, "A", b"xyz"),
            seg(4, C, S, 13, "RA", b""),
        ];
        let (sink, _) = run(Sides::Client, &segs);
        assert_eq!(sink.conns.len(), 1);
        let c = sink.conns.values().next().unwrap();
        assert_eq!(c.stream(Direction::Egress), b"abc[gap 6 lost]xyz");
    }

    #[test]
    fn a_capture_started_mid_flow_has_unknown_roles() {
        let segs = [seg(1, C, S, 777, "A", b"GET /x HTTP/1.1\r\n\r\n")];
        let (sink, _) = run(Sides::Both, &segs);
        assert_eq!(sink.conns.len(), 2);
        assert!(sink.conns.values().all(|c| c.info.role == Role::Unknown));
        assert!(
            sink.conns
                .values()
                .any(|c| c.stream(Direction::Egress) == b"GET /x HTTP/1.1\r\n\r\n")
        );
    }
}
