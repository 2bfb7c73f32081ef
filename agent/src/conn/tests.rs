//! Connection tracking on synthetic event streams: ordering, gaps, reuse, limits, roles.

use bytes::Bytes;
use sonde_proto::{CloseReason, ConnSource, Direction, Role, Syscall};

use super::*;
use crate::events::{ConnCloseEv, ConnOpenEv, DataEv, Event, Meta, ProcEv, ProcKind};

fn meta(pid: u32, t: u64) -> Meta {
    Meta {
        pid,
        tid: pid,
        cpu: 0,
        enter_ns: t,
        exit_ns: t,
    }
}

fn open(id: u64, pid: u32, fd: u32, t: u64) -> Event {
    Event::ConnOpen(ConnOpenEv {
        meta: meta(pid, t),
        conn_id: id,
        fd,
        role: Role::Server,
        source: ConnSource::Accept,
        local: "127.0.0.1:80".parse().unwrap(),
        remote: "127.0.0.1:5000".parse().unwrap(),
        tcp_state: 1,
        netns: 0,
        comm: "test".into(),
        cgroup_id: 0,
    })
}

fn data(id: u64, dir: Direction, seq: u64, payload: &'static [u8], orig: u32, t: u64) -> Event {
    Event::Data(DataEv {
        meta: meta(1, t),
        conn_id: id,
        seq,
        direction: dir,
        role: Role::Server,
        syscall: if dir == Direction::Ingress {
            Syscall::Read
        } else {
            Syscall::Write
        },
        fd: 3,
        orig_len: orig,
        payload: Bytes::from_static(payload),
        iov_limit: false,
        read_failed: false,
        tls: false,
    })
}

fn close(id: u64, tx: u64, rx: u64, t: u64) -> Event {
    Event::ConnClose(ConnCloseEv {
        meta: meta(1, t),
        conn_id: id,
        fd: 3,
        reason: CloseReason::Close,
        tx_bytes: tx,
        rx_bytes: rx,
    })
}

fn run(limits: Limits, events: Vec<Event>) -> (ConnTracker, CollectSink) {
    let mut t = ConnTracker::without_role_resolver(limits);
    let mut sink = CollectSink::default();
    for e in events {
        t.handle(e, &mut sink);
    }
    (t, sink)
}

const IN: Direction = Direction::Ingress;
const OUT: Direction = Direction::Egress;

#[test]
fn in_order_stream_with_truncation_gaps() {
    let (t, sink) = run(
        Limits::default(),
        vec![
            open(1, 1, 3, 0),
            data(1, IN, 0, b"GET / HTTP/1.1\r\n\r\n", 18, 1),
            data(
                1,
                OUT,
                0,
                b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nab",
                140,
                2,
            ),
            close(1, 140, 18, 3),
        ],
    );
    let c = &sink.conns[&1];
    assert_eq!(c.stream(IN), b"GET / HTTP/1.1\r\n\r\n");
    assert_eq!(
        c.stream(OUT),
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nab[gap 98 not_captured]".to_vec()
    );
    assert_eq!(
        c.egress[1],
        Chunk::Gap {
            seq: 42,
            len: 98,
            reason: GapReason::NotCaptured
        }
    );
    assert_eq!(c.end, Some((ConnEnd::Closed(CloseReason::Close), 3)));
    assert_eq!(t.stats.gap_not_captured_bytes, 98);
    assert_eq!(t.stats.gap_lost_bytes, 0);
    assert!(t.is_empty());
}

#[test]
fn records_from_several_cpus_are_put_back_in_order() {
    let (t, sink) = run(
        Limits::default(),
        vec![
            open(1, 1, 3, 0),
            data(1, IN, 6, b"world", 5, 2),
            data(1, IN, 11, b"!", 1, 3),
            data(1, IN, 0, b"hello ", 6, 1),
        ],
    );
    assert_eq!(sink.conns[&1].stream(IN), b"hello world!");
    assert_eq!(t.stats.reordered, 2);
    assert_eq!(t.stats.gaps_lost, 0);
    let seqs: Vec<u64> = sink.conns[&1].ingress.iter().map(Chunk::seq).collect();
    assert_eq!(seqs, vec![0, 6, 11]);
}

#[test]
fn a_hole_becomes_a_lost_gap_after_the_reorder_window() {
    let limits = Limits {
        reorder_window_ns: 100,
        ..Limits::default()
    };
    let mut t = ConnTracker::without_role_resolver(limits);
    let mut sink = CollectSink::default();
    for e in [
        open(1, 1, 3, 0),
        data(1, IN, 0, b"ab", 2, 10),
        data(1, IN, 7, b"xyz", 3, 20),
    ] {
        t.handle(e, &mut sink);
    }
    // Still waiting for bytes 2..7.
    assert_eq!(sink.conns[&1].stream(IN), b"ab");
    t.tick(119, &mut sink);
    assert_eq!(sink.conns[&1].stream(IN), b"ab");
    t.tick(120, &mut sink);
    assert_eq!(sink.conns[&1].stream(IN), b"ab[gap 5 lost]xyz");
    assert_eq!(t.stats.gap_lost_bytes, 5);
    assert_eq!(t.stats.gaps_lost, 1);
    // The late record, if it ever comes, is not glued in: it is behind the stream position.
    t.handle(data(1, IN, 10, b"!", 1, 130), &mut sink);
    assert_eq!(sink.conns[&1].stream(IN), b"ab[gap 5 lost]xyz!");
}

#[test]
fn close_totals_reveal_records_lost_at_the_end() {
    let (t, sink) = run(
        Limits::default(),
        vec![
            open(1, 1, 3, 0),
            data(1, OUT, 0, b"abc", 3, 1),
            close(1, 10, 0, 2),
        ],
    );
    assert_eq!(sink.conns[&1].stream(OUT), b"abc[gap 7 lost]");
    assert_eq!(t.stats.gap_lost_bytes, 7);
    // A held record behind a hole is flushed at close too.
    let (t, sink) = run(
        Limits::default(),
        vec![
            open(1, 1, 3, 0),
            data(1, OUT, 4, b"e", 1, 1),
            close(1, 5, 0, 2),
        ],
    );
    assert_eq!(sink.conns[&1].stream(OUT), b"[gap 4 lost]e");
    assert_eq!(t.stats.gaps_lost, 1);
}

#[test]
fn reorder_buffer_is_bounded() {
    let limits = Limits {
        max_pending_bytes: 8,
        ..Limits::default()
    };
    let (t, sink) = run(
        limits,
        vec![
            open(1, 1, 3, 0),
            data(1, IN, 10, b"12345", 5, 1),
            data(1, IN, 15, b"6789", 4, 2),
        ],
    );
    assert_eq!(t.stats.pending_overflows, 1);
    assert_eq!(sink.conns[&1].stream(IN), b"[gap 10 lost]123456789");
}

#[test]
fn overlapping_offsets_are_resequenced_not_lost() {
    // Two threads wrote one socket at the same instant and read the same offset.
    let (t, sink) = run(
        Limits::default(),
        vec![
            open(1, 1, 3, 0),
            data(1, OUT, 0, b"AAAA", 4, 1),
            data(1, OUT, 0, b"BB", 2, 2),
            close(1, 6, 0, 3),
        ],
    );
    assert_eq!(sink.conns[&1].stream(OUT), b"AAAABB");
    assert_eq!(t.stats.resequenced, 1);
    assert_eq!(t.stats.gap_lost_bytes, 0);
}

#[test]
fn same_offset_records_held_behind_a_hole_are_both_kept() {
    let (_, sink) = run(
        Limits::default(),
        vec![
            open(1, 1, 3, 0),
            data(1, OUT, 2, b"xx", 2, 1),
            data(1, OUT, 2, b"yy", 2, 2),
            data(1, OUT, 0, b"ab", 2, 3),
        ],
    );
    assert_eq!(sink.conns[&1].stream(OUT), b"abxxyy");
}

#[test]
fn fd_reuse_is_a_new_connection() {
    let (t, sink) = run(
        Limits::default(),
        vec![
            open(1, 1, 3, 0),
            data(1, IN, 0, b"one", 3, 1),
            close(1, 0, 3, 2),
            open(2, 1, 3, 3),
            data(2, IN, 0, b"two", 3, 4),
        ],
    );
    assert_eq!(sink.order, vec![1, 2]);
    assert_eq!(sink.conns[&1].stream(IN), b"one");
    assert_eq!(sink.conns[&2].stream(IN), b"two");
    assert!(sink.conns[&1].end.is_some());
    assert!(sink.conns[&2].end.is_none());
    assert_eq!(t.len(), 1);
}

#[test]
fn connection_count_is_bounded() {
    let limits = Limits {
        max_conns: 2,
        ..Limits::default()
    };
    let (t, sink) = run(
        limits,
        vec![
            open(1, 1, 3, 0),
            open(2, 1, 4, 1),
            data(1, IN, 0, b"x", 1, 2),
            open(3, 1, 5, 3),
        ],
    );
    // Connection 2 was the least recently active.
    assert_eq!(sink.conns[&2].end.map(|e| e.0), Some(ConnEnd::EvictedLimit));
    assert!(sink.conns[&1].end.is_none());
    assert_eq!(t.stats.evicted_limit, 1);
    assert_eq!(t.len(), 2);
}

#[test]
fn idle_connections_are_evicted() {
    let limits = Limits {
        idle_timeout_ns: 1000,
        ..Limits::default()
    };
    let mut t = ConnTracker::without_role_resolver(limits);
    let mut sink = CollectSink::default();
    t.handle(open(1, 1, 3, 0), &mut sink);
    t.handle(open(2, 1, 4, 500), &mut sink);
    t.tick(1200, &mut sink);
    assert_eq!(sink.conns[&1].end, Some((ConnEnd::EvictedIdle, 1200)));
    assert!(sink.conns[&2].end.is_none());
    assert_eq!(t.stats.evicted_idle, 1);
}

#[test]
fn process_exit_ends_its_connections_and_names_their_fds() {
    let mut t = ConnTracker::without_role_resolver(Limits::default());
    let mut sink = CollectSink::default();
    t.handle(open(1, 7, 3, 0), &mut sink);
    t.handle(open(2, 7, 9, 0), &mut sink);
    t.handle(open(3, 8, 3, 0), &mut sink);
    let exit = Event::Proc(ProcEv {
        meta: meta(7, 5),
        kind: ProcKind::Exit,
        other_pid: 0,
        comm: "x".into(),
    });
    let (pid, mut fds) = t.handle(exit, &mut sink).unwrap();
    fds.sort();
    assert_eq!((pid, fds), (7, vec![3, 9]));
    assert_eq!(sink.conns[&1].end.map(|e| e.0), Some(ConnEnd::ProcessExit));
    assert!(sink.conns[&3].end.is_none());
    assert_eq!(t.len(), 1);
}

#[test]
fn data_without_an_open_record_is_tracked_and_counted() {
    let (t, sink) = run(Limits::default(), vec![data(9, IN, 0, b"hi", 2, 1)]);
    assert_eq!(t.stats.open_missing, 1);
    assert_eq!(sink.conns[&9].info.local, None);
    assert_eq!(sink.conns[&9].stream(IN), b"hi");
}

#[test]
fn unknown_roles_go_to_the_resolver() {
    let mut t = ConnTracker::new(
        Limits::default(),
        Box::new(|c: &ConnInfo| {
            if c.local.is_some_and(|a| a.port() == 80) {
                Role::Server
            } else {
                Role::Client
            }
        }),
    );
    let mut sink = CollectSink::default();
    let Event::ConnOpen(mut o) = open(1, 1, 3, 0) else {
        unreachable!()
    };
    o.role = Role::Unknown;
    o.source = ConnSource::Discovered;
    t.handle(Event::ConnOpen(o), &mut sink);
    assert_eq!(sink.conns[&1].info.role, Role::Server);
    assert_eq!(t.stats.roles_inferred, 1);
    assert_eq!(t.stats.discovered, 1);
}

/// Splitting the same stream into records in any way, and delivering them in any order within
/// the window, gives the same bytes.
#[test]
fn any_split_and_order_gives_the_same_stream() {
    let text: &'static [u8] = b"POST /x HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello";
    let mut rng: u64 = 0x2545F4914F6CDD1D;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for _ in 0..200 {
        let mut cuts: Vec<usize> = (0..(next() % 6))
            .map(|_| (next() as usize) % text.len())
            .collect();
        cuts.push(0);
        cuts.push(text.len());
        cuts.sort();
        cuts.dedup();
        let mut recs: Vec<Event> = cuts
            .windows(2)
            .map(|w| {
                data(
                    1,
                    IN,
                    w[0] as u64,
                    &text[w[0]..w[1]],
                    (w[1] - w[0]) as u32,
                    1,
                )
            })
            .collect();
        for i in (1..recs.len()).rev() {
            recs.swap(i, (next() as usize) % (i + 1));
        }
        let mut events = vec![open(1, 1, 3, 0)];
        events.extend(recs);
        let (t, sink) = run(Limits::default(), events);
        assert_eq!(sink.conns[&1].stream(IN), text);
        assert_eq!(t.stats.gaps_lost, 0);
    }
}

fn tls_data(id: u64, dir: Direction, seq: u64, payload: &'static [u8], t: u64) -> Event {
    match data(id, dir, seq, payload, payload.len() as u32, t) {
        Event::Data(mut d) => {
            d.tls = true;
            Event::Data(d)
        }
        _ => unreachable!(),
    }
}

#[test]
fn first_tls_plaintext_restarts_the_connection_and_later_ciphertext_is_dropped() {
    let (t, sink) = run(
        Limits::default(),
        vec![
            open(1, 1, 3, 0),
            // The ClientHello, read before the kernel knew the socket carries TLS.
            data(1, IN, 0, b"\x16\x03\x01\x02\x00\x01", 517, 1),
            tls_data(1, IN, 0, b"GET / HTTP/1.1\r\n\r\n", 2),
            // Ciphertext that reached the agent anyway is not stream data.
            data(1, OUT, 0, b"\x17\x03\x03\x00\x40", 69, 3),
            tls_data(1, OUT, 0, b"HTTP/1.1 204 No Content\r\n\r\n", 4),
            // Close totals count ciphertext: no gap may come of them.
            close(1, 5000, 6000, 5),
        ],
    );
    assert_eq!(sink.order, vec![1], "one connection, opened again in place");
    let c = &sink.conns[&1];
    assert!(c.info.tls);
    assert_eq!(c.stream(IN), b"GET / HTTP/1.1\r\n\r\n");
    assert_eq!(c.stream(OUT), b"HTTP/1.1 204 No Content\r\n\r\n");
    assert_eq!(t.stats.tls_switched, 1);
    assert_eq!(t.stats.tls_ciphertext_dropped, 1);
    assert_eq!(t.stats.gap_lost_bytes, 0);
}
