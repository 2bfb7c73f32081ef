//! Typed events from the kernel: the only code that reads raw kernel bytes.
//!
//! [`decode`] turns one ring-buffer record into an [`Event`], checking every length and enum
//! value; a malformed record is an error the caller counts, never a panic. [`EventSource`] is the
//! seam that lets everything downstream (`conn`, `protocol`, `span`, `export`) run without root:
//! the live [`RingBufSource`] and the in-memory [`VecSource`] both implement it.

mod ringbuf;

use std::{
    mem::size_of,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

use bytes::Bytes;
use sonde_proto::{
    CloseReason, ConnCloseEvent, ConnOpenEvent, ConnSource, CtxKind, CtxSource, DataEvent,
    Direction, EventHeader, EventKind, InjectOutcome, ProcEvent, Role, Syscall, TraceCtxEvent,
};

pub use self::ringbuf::RingBufSource;

/// Fields every event has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    pub pid: u32,
    pub tid: u32,
    pub cpu: u32,
    /// Monotonic ns when the syscall entered.
    pub enter_ns: u64,
    /// Monotonic ns when the syscall returned (or the event happened).
    pub exit_ns: u64,
}

impl From<&EventHeader> for Meta {
    fn from(h: &EventHeader) -> Self {
        Self {
            pid: h.pid,
            tid: h.tid,
            cpu: h.cpu,
            enter_ns: h.enter_ns,
            exit_ns: h.exit_ns,
        }
    }
}

/// Bytes moved by one syscall on a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataEv {
    pub meta: Meta,
    pub conn_id: u64,
    /// Stream offset of the first byte, per direction.
    pub seq: u64,
    pub direction: Direction,
    pub role: Role,
    pub syscall: Syscall,
    pub fd: u32,
    /// Bytes the syscall moved.
    pub orig_len: u32,
    /// The first bytes of them (shorter than `orig_len` when truncated).
    pub payload: Bytes,
    pub iov_limit: bool,
    pub read_failed: bool,
    /// TLS plaintext from a TLS library probe, with offsets of its own (`DATA_FLAG_TLS`).
    pub tls: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnOpenEv {
    pub meta: Meta,
    pub conn_id: u64,
    pub fd: u32,
    pub role: Role,
    pub source: ConnSource,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub tcp_state: u8,
    pub netns: u32,
    /// The process's command name when the connection was found.
    pub comm: String,
    /// The process's cgroup v2 id when the connection was found (0 if unknown).
    pub cgroup_id: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnCloseEv {
    pub meta: Meta,
    pub conn_id: u64,
    pub fd: u32,
    pub reason: CloseReason,
    /// Total bytes written / read since sonde saw the connection.
    pub tx_bytes: u64,
    pub rx_bytes: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcKind {
    Exec,
    Exit,
    Fork,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcEv {
    pub meta: Meta,
    pub kind: ProcKind,
    /// Fork: the child; exec: the pid before exec.
    pub other_pid: u32,
    pub comm: String,
}

/// Trace context the kernel chose for the request starting at `seq` on a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceCtxEv {
    pub meta: Meta,
    pub conn_id: u64,
    pub seq: u64,
    pub kind: CtxKind,
    pub source: CtxSource,
    pub inject: InjectOutcome,
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// `None` for a root.
    pub parent_span_id: Option<[u8; 8]>,
    pub flags: u8,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Data(DataEv),
    ConnOpen(ConnOpenEv),
    ConnClose(ConnCloseEv),
    Proc(ProcEv),
    TraceCtx(TraceCtxEv),
}

impl Event {
    pub fn meta(&self) -> &Meta {
        match self {
            Self::Data(e) => &e.meta,
            Self::ConnOpen(e) => &e.meta,
            Self::ConnClose(e) => &e.meta,
            Self::Proc(e) => &e.meta,
            Self::TraceCtx(e) => &e.meta,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {len} bytes is shorter than the {need} bytes of its {what}")]
    Short {
        what: &'static str,
        len: usize,
        need: usize,
    },
    #[error("unknown event kind {0}")]
    Kind(u32),
    #[error("{field} has invalid value {value}")]
    Field { field: &'static str, value: u32 },
}

impl DecodeError {
    /// A stable label for the error counter.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Short { .. } => "short",
            Self::Kind(_) => "kind",
            Self::Field { .. } => "field",
        }
    }
}

/// Reads a `T` from the start of `buf`.
fn read<T: Copy>(buf: &[u8], what: &'static str) -> Result<T, DecodeError> {
    if buf.len() < size_of::<T>() {
        return Err(DecodeError::Short {
            what,
            len: buf.len(),
            need: size_of::<T>(),
        });
    }
    // SAFETY: the length was checked; the record types are #[repr(C)] plain integers and byte
    // arrays, valid for any bit pattern, and read_unaligned has no alignment requirement.
    Ok(unsafe { std::ptr::read_unaligned(buf.as_ptr().cast::<T>()) })
}

fn field<T, E>(r: Result<T, E>, name: &'static str, value: u32) -> Result<T, DecodeError> {
    r.map_err(|_| DecodeError::Field { field: name, value })
}

fn sockaddr(family: u16, addr: &[u8; 16], port: u16) -> Result<SocketAddr, DecodeError> {
    let ip = match family {
        2 => IpAddr::V4(Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3])),
        10 => IpAddr::V6(Ipv6Addr::from(*addr)),
        other => {
            return Err(DecodeError::Field {
                field: "family",
                value: other as u32,
            });
        }
    };
    Ok(SocketAddr::new(ip, port))
}

fn comm_str(comm: &[u8; 16]) -> String {
    let len = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..len]).into_owned()
}

/// Decodes one ring-buffer record.
pub fn decode(buf: &[u8]) -> Result<Event, DecodeError> {
    let header: EventHeader = read(buf, "header")?;
    let kind = EventKind::try_from(header.kind).map_err(DecodeError::Kind)?;
    let meta = Meta::from(&header);
    Ok(match kind {
        EventKind::Data => {
            let d: DataEvent = read(buf, "data event")?;
            let start = size_of::<DataEvent>();
            let end = start + d.captured_len as usize;
            if buf.len() < end {
                return Err(DecodeError::Short {
                    what: "data payload",
                    len: buf.len(),
                    need: end,
                });
            }
            Event::Data(DataEv {
                meta,
                conn_id: d.conn_id,
                seq: d.seq,
                direction: field(
                    Direction::try_from(d.direction),
                    "direction",
                    d.direction.into(),
                )?,
                role: field(Role::try_from(d.role), "role", d.role.into())?,
                syscall: field(Syscall::try_from(d.syscall), "syscall", d.syscall.into())?,
                fd: d.fd,
                orig_len: d.orig_len,
                payload: Bytes::copy_from_slice(&buf[start..end]),
                iov_limit: d.flags & sonde_proto::DATA_FLAG_IOV_LIMIT != 0,
                read_failed: d.flags & sonde_proto::DATA_FLAG_READ_FAILED != 0,
                tls: d.flags & sonde_proto::DATA_FLAG_TLS != 0,
            })
        }
        EventKind::ConnOpen => {
            let c: ConnOpenEvent = read(buf, "conn open event")?;
            Event::ConnOpen(ConnOpenEv {
                meta,
                conn_id: c.conn_id,
                fd: c.fd,
                role: field(Role::try_from(c.role), "role", c.role.into())?,
                source: field(ConnSource::try_from(c.source), "source", c.source.into())?,
                local: sockaddr(c.family, &c.local_addr, c.local_port)?,
                remote: sockaddr(c.family, &c.remote_addr, c.remote_port)?,
                tcp_state: c.state,
                netns: c.netns,
                comm: comm_str(&c.comm),
                cgroup_id: c.cgroup_id,
            })
        }
        EventKind::ConnClose => {
            let c: ConnCloseEvent = read(buf, "conn close event")?;
            Event::ConnClose(ConnCloseEv {
                meta,
                conn_id: c.conn_id,
                fd: c.fd,
                reason: field(CloseReason::try_from(c.reason), "reason", c.reason.into())?,
                tx_bytes: c.tx_bytes,
                rx_bytes: c.rx_bytes,
            })
        }
        EventKind::TraceCtx => {
            let c: TraceCtxEvent = read(buf, "trace context event")?;
            Event::TraceCtx(TraceCtxEv {
                meta,
                conn_id: c.conn_id,
                seq: c.seq,
                kind: field(CtxKind::try_from(c.kind), "ctx kind", c.kind.into())?,
                source: field(CtxSource::try_from(c.source), "ctx source", c.source.into())?,
                inject: field(InjectOutcome::try_from(c.inject), "inject", c.inject.into())?,
                trace_id: c.trace_id,
                span_id: c.span_id,
                parent_span_id: (c.parent_span_id != [0; 8]).then_some(c.parent_span_id),
                flags: c.flags,
            })
        }
        EventKind::ProcExec | EventKind::ProcExit | EventKind::ProcFork => {
            let p: ProcEvent = read(buf, "process event")?;

            Event::Proc(ProcEv {
                meta,
                kind: match kind {
                    EventKind::ProcExec => ProcKind::Exec,
                    EventKind::ProcExit => ProcKind::Exit,
                    _ => ProcKind::Fork,
                },
                other_pid: p.other_pid,
                comm: comm_str(&p.comm),
            })
        }
    })
}

/// Where events come from: the kernel's ring buffer, a recording, or a test.
pub trait EventSource {
    /// Waits for events and appends them to `out` (records that fail to decode are counted in
    /// `errors`). Returns `false` once the source is exhausted.
    fn next_batch(
        &mut self,
        out: &mut Vec<Event>,
        errors: &mut DecodeErrors,
    ) -> impl std::future::Future<Output = std::io::Result<bool>> + Send;
}

/// Records that failed to decode, by error kind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DecodeErrors {
    pub short: u64,
    pub kind: u64,
    pub field: u64,
}

impl DecodeErrors {
    pub fn record(&mut self, e: &DecodeError) {
        match e {
            DecodeError::Short { .. } => self.short += 1,
            DecodeError::Kind(_) => self.kind += 1,
            DecodeError::Field { .. } => self.field += 1,
        }
    }

    pub fn total(&self) -> u64 {
        self.short + self.kind + self.field
    }
}

/// Events from memory, in batches: for tests and replays.
pub struct VecSource {
    batches: std::collections::VecDeque<Vec<Event>>,
}

impl VecSource {
    pub fn new(batches: impl IntoIterator<Item = Vec<Event>>) -> Self {
        Self {
            batches: batches.into_iter().collect(),
        }
    }
}

impl EventSource for VecSource {
    async fn next_batch(
        &mut self,
        out: &mut Vec<Event>,
        _errors: &mut DecodeErrors,
    ) -> std::io::Result<bool> {
        match self.batches.pop_front() {
            Some(b) => {
                out.extend(b);
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

/// Encoders for tests: the exact bytes the kernel programs write.
#[cfg(test)]
pub mod encode {
    use super::*;

    fn bytes_of<T>(v: &T) -> &[u8] {
        // SAFETY: the proto records are #[repr(C)] with explicit padding: every byte is
        // initialised.
        unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }
    }

    pub fn data(ev: &DataEvent, payload: &[u8]) -> Vec<u8> {
        let mut v = bytes_of(ev).to_vec();
        v.extend_from_slice(payload);
        v
    }

    pub fn record<T>(ev: &T) -> Vec<u8> {
        bytes_of(ev).to_vec()
    }
}

#[cfg(test)]
mod tests {
    use sonde_proto::*;

    use super::*;

    fn hdr(kind: EventKind) -> EventHeader {
        EventHeader {
            kind: kind as u32,
            cpu: 1,
            pid: 100,
            tid: 101,
            enter_ns: 5,
            exit_ns: 9,
        }
    }

    #[test]
    fn data_round_trip() {
        let ev = DataEvent {
            header: hdr(EventKind::Data),
            conn_id: 77,
            seq: 1000,
            orig_len: 10,
            captured_len: 4,
            fd: 3,
            direction: Direction::Ingress as u8,
            role: Role::Server as u8,
            syscall: Syscall::Recvmsg as u8,
            flags: DATA_FLAG_IOV_LIMIT,
        };
        let bytes = encode::data(&ev, b"GET ");
        let Event::Data(d) = decode(&bytes).unwrap() else {
            panic!("not data")
        };
        assert_eq!(d.meta.pid, 100);
        assert_eq!(d.meta.tid, 101);
        assert_eq!((d.meta.enter_ns, d.meta.exit_ns), (5, 9));
        assert_eq!(d.conn_id, 77);
        assert_eq!(d.seq, 1000);
        assert_eq!(d.orig_len, 10);
        assert_eq!(&d.payload[..], b"GET ");
        assert_eq!(d.direction, Direction::Ingress);
        assert_eq!(d.role, Role::Server);
        assert_eq!(d.syscall, Syscall::Recvmsg);
        assert!(d.iov_limit);
        assert!(!d.read_failed);
        assert!(!d.tls);
        let tls = DataEvent {
            flags: sonde_proto::DATA_FLAG_TLS,
            ..ev
        };
        let Event::Data(t) = decode(&encode::data(&tls, b"GET ")).unwrap() else {
            panic!("not data")
        };
        assert!(t.tls && !t.iov_limit);
        // The payload must be all there.
        assert_eq!(
            decode(&bytes[..bytes.len() - 1]),
            Err(DecodeError::Short {
                what: "data payload",
                len: 67,
                need: 68
            })
        );
    }

    #[test]
    fn conn_open_round_trip_v4_and_v6() {
        let mut ev = ConnOpenEvent {
            header: hdr(EventKind::ConnOpen),
            conn_id: 5,
            fd: 7,
            role: Role::Client as u8,
            source: ConnSource::Connect as u8,
            family: 2,
            local_port: 40000,
            remote_port: 80,
            state: 1,
            netns: 4026531840,
            comm: *b"curl\0\0\0\0\0\0\0\0\0\0\0\0",
            cgroup_id: 4242,
            ..Default::default()
        };
        ev.local_addr[..4].copy_from_slice(&[127, 0, 0, 1]);
        ev.remote_addr[..4].copy_from_slice(&[127, 0, 0, 2]);
        let Event::ConnOpen(c) = decode(&encode::record(&ev)).unwrap() else {
            panic!()
        };
        assert_eq!(c.local, "127.0.0.1:40000".parse().unwrap());
        assert_eq!(c.remote, "127.0.0.2:80".parse().unwrap());
        assert_eq!(c.role, Role::Client);
        assert_eq!(c.source, ConnSource::Connect);
        assert_eq!(c.netns, 4026531840);
        assert_eq!(c.comm, "curl");
        assert_eq!(c.cgroup_id, 4242);

        ev.family = 10;
        ev.local_addr = std::net::Ipv6Addr::LOCALHOST.octets();
        ev.remote_addr = "fe80::1".parse::<std::net::Ipv6Addr>().unwrap().octets();
        let Event::ConnOpen(c) = decode(&encode::record(&ev)).unwrap() else {
            panic!()
        };
        assert_eq!(c.local, "[::1]:40000".parse().unwrap());
        assert_eq!(c.remote, "[fe80::1]:80".parse().unwrap());

        ev.family = 1;
        assert_eq!(
            decode(&encode::record(&ev)),
            Err(DecodeError::Field {
                field: "family",
                value: 1
            })
        );
    }

    #[test]
    fn close_and_proc_round_trip() {
        let ev = ConnCloseEvent {
            header: hdr(EventKind::ConnClose),
            conn_id: 9,
            tx_bytes: 123,
            rx_bytes: 456,
            fd: 4,
            reason: CloseReason::Replaced as u8,
            _pad: [0; 3],
        };
        let Event::ConnClose(c) = decode(&encode::record(&ev)).unwrap() else {
            panic!()
        };
        assert_eq!((c.conn_id, c.tx_bytes, c.rx_bytes, c.fd), (9, 123, 456, 4));
        assert_eq!(c.reason, CloseReason::Replaced);

        for (kind, want) in [
            (EventKind::ProcExec, ProcKind::Exec),
            (EventKind::ProcExit, ProcKind::Exit),
            (EventKind::ProcFork, ProcKind::Fork),
        ] {
            let mut comm = [0u8; 16];
            comm[..6].copy_from_slice(b"python");
            let ev = ProcEvent {
                header: hdr(kind),
                other_pid: 42,
                _pad: 0,
                comm,
            };
            let Event::Proc(p) = decode(&encode::record(&ev)).unwrap() else {
                panic!()
            };
            assert_eq!(p.kind, want);
            assert_eq!(p.other_pid, 42);
            assert_eq!(p.comm, "python");
        }
    }

    #[test]
    fn trace_ctx_round_trip() {
        let ev = TraceCtxEvent {
            header: hdr(EventKind::TraceCtx),
            conn_id: 3,
            seq: 500,
            trace_id: [7; 16],
            span_id: [8; 8],
            parent_span_id: [0; 8],
            flags: 1,
            kind: CtxKind::Client as u8,
            source: CtxSource::Linked as u8,
            inject: InjectOutcome::Injected as u8,
            _pad: [0; 4],
        };
        let Event::TraceCtx(c) = decode(&encode::record(&ev)).unwrap() else {
            panic!()
        };
        assert_eq!((c.conn_id, c.seq, c.flags), (3, 500, 1));
        assert_eq!(c.kind, CtxKind::Client);
        assert_eq!(c.source, CtxSource::Linked);
        assert_eq!(c.inject, InjectOutcome::Injected);
        assert_eq!(c.parent_span_id, None);
        assert_eq!((c.trace_id, c.span_id), ([7; 16], [8; 8]));
        let mut bad = ev;
        bad.source = 99;
        assert!(decode(&encode::record(&bad)).is_err());
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        assert!(matches!(decode(&[]), Err(DecodeError::Short { .. })));
        let mut h = encode::record(&hdr(EventKind::Data));
        h[0] = 99;
        assert_eq!(decode(&h), Err(DecodeError::Kind(99)));
        // A data header alone is too short for a data event.
        let h = encode::record(&hdr(EventKind::Data));
        assert!(matches!(
            decode(&h),
            Err(DecodeError::Short {
                what: "data event",
                ..
            })
        ));
        // Arbitrary bytes of every length never panic.
        let mut x: u64 = 0x9e3779b97f4a7c15;
        for len in 0..300 {
            let buf: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let _ = decode(&buf);
        }
    }
}
