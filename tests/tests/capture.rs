//! Privileged capture tests: the real kernel programs, real servers and clients.
//!
//! Each test makes a cgroup, starts its peers inside it and traces that cgroup only, so tests
//! run in parallel without seeing each other's traffic. Assertions compare the bytes sonde
//! captured with the bytes the programs themselves report having sent and received.

use std::{
    net::{IpAddr, SocketAddr},
    process::Stdio,
};

use sonde::conn::{Chunk, ConnEnd};
use sonde_proto::{CloseReason, ConnSource, Counter, Direction, Role};
use sonde_tests::{
    Lines, TestCgroup, assert_bytes_eq, assert_chunks_cover, free_port, peers_dir, python, unhex,
    wait_for_port,
};

const OUT: Direction = Direction::Egress;
const IN: Direction = Direction::Ingress;

/// Starts a peer script in the cgroup and waits for its "ready PORT" line.
fn start_server(cg: &mut TestCgroup, script: &str, host: &str) -> u16 {
    let port = free_port();
    let mut cmd = cg.command(&python());
    cmd.arg(peers_dir().join(script))
        .arg(port.to_string())
        .arg(host)
        .stdout(Stdio::piped());
    let child = cg.spawn(cmd);
    let mut lines = Lines::of(child);
    assert_eq!(lines.next_line(), format!("ready {port}"));
    let ip: IpAddr = host.parse().unwrap();
    wait_for_port(SocketAddr::new(ip, port));
    port
}

fn client(cg: &TestCgroup, args: &[&str]) -> Vec<String> {
    let mut cmd = cg.command(&python());
    cmd.arg(peers_dir().join("client.py")).args(args);
    String::from_utf8(cg.run(cmd))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn field<'a>(lines: &'a [String], key: &str) -> &'a str {
    lines
        .iter()
        .find_map(|l| l.strip_prefix(key).map(str::trim))
        .unwrap_or_else(|| panic!("no {key:?} in {lines:?}"))
}

fn exchange_test(host: &str) {
    let mut cg = TestCgroup::new("exchange");
    let port = start_server(&mut cg, "http_server.py", host);
    let rec = cg.capture();
    let request = format!("GET /hello HTTP/1.1\r\nHost: {host}\r\nX-Test: exact-bytes\r\n\r\n");
    let hex: String = request.bytes().map(|b| format!("{b:02x}")).collect();
    let out = client(&cg, &["exchange", host, &port.to_string(), &hex]);
    let got = rec.finish();
    let response = unhex(field(&out, "recv"));
    let client_port: u16 = field(&out, "local").parse().unwrap();
    let client_fd: u32 = field(&out, "fd").parse().unwrap();
    assert!(response.starts_with(b"HTTP/1.1 200 OK\r\n"), "{response:?}");
    assert!(response.ends_with(b"\r\n\r\nhello world\n"));

    let ip: IpAddr = host.parse().unwrap();
    let server_addr = SocketAddr::new(ip, port);
    let client_addr = SocketAddr::new(ip, client_port);

    let c = got.one(Role::Client, client_port);
    assert_eq!(c.info.source, ConnSource::Connect);
    assert_eq!(c.info.fd, client_fd);
    assert_eq!(c.info.local, Some(client_addr));
    assert_eq!(c.info.remote, Some(server_addr));
    assert_eq!(c.stream(OUT), request.as_bytes());
    assert_eq!(c.stream(IN), response);
    assert_eq!(
        c.end.map(|e| e.0),
        Some(ConnEnd::Closed(CloseReason::Close))
    );

    let s = got
        .conns()
        .find(|c| c.info.role == Role::Server && c.info.remote == Some(client_addr))
        .unwrap_or_else(|| panic!("no server side: {:#?}", got.describe()));
    assert_eq!(s.info.source, ConnSource::Accept);
    assert_eq!(s.info.local, Some(server_addr));
    assert_eq!(s.stream(IN), request.as_bytes());
    assert_eq!(s.stream(OUT), response);
    assert_ne!(s.info.pid, c.info.pid);
    assert!(s.info.comm.starts_with("python"), "{}", s.info.comm);

    // Every data chunk carries sane timing: enter <= exit, and the client's request was written
    // before the server read it.
    let first = |chunks: &[Chunk]| match &chunks[0] {
        Chunk::Data { meta, .. } => *meta,
        other => panic!("{other:?}"),
    };
    let (w, r) = (first(&c.egress), first(&s.ingress));
    assert!(w.enter_ns <= w.exit_ns && r.enter_ns <= r.exit_ns);
    assert!(w.enter_ns <= r.exit_ns);

    let k = &got.summary.kernel;
    assert_eq!(k.get(Counter::RingbufFull), 0);
    assert_eq!(k.get(Counter::TruncatedEvents), 0);
    assert_eq!(k.get(Counter::ConnOpened), 2, "{:#?}", got.describe());
    let data_chunks: usize = got.conns().map(|c| c.egress.len() + c.ingress.len()).sum();
    assert_eq!(k.get(Counter::DataEvents) as usize, data_chunks);
    assert_eq!(
        k.get(Counter::CapturedBytes) as usize,
        2 * (request.len() + response.len())
    );
    assert_eq!(got.summary.decode_errors.total(), 0);
}

#[test]
fn ipv4_request_and_response_bytes_are_exact_on_both_sides() {
    exchange_test("127.0.0.1");
}

#[test]
fn ipv6_request_and_response_bytes_are_exact_on_both_sides() {
    exchange_test("::1");
}

#[test]
fn curl_against_the_python_server() {
    let mut cg = TestCgroup::new("curl");
    let port = start_server(&mut cg, "http_server.py", "127.0.0.1");
    let rec = cg.capture();
    let url = format!("http://127.0.0.1:{port}/hello");
    let mut cmd = cg.command("curl");
    cmd.args(["-s", "-D", "-", &url, &url]);
    let printed = cg.run(cmd);
    let got = rec.finish();
    // curl reuses one keep-alive connection for both requests.
    let clients: Vec<_> = got
        .conns()
        .filter(|c| c.info.role == Role::Client && c.info.remote.map(|a| a.port()) == Some(port))
        .collect();
    assert_eq!(clients.len(), 1, "{:#?}", got.describe());
    let c = clients[0];
    let sent = String::from_utf8(c.stream(OUT)).unwrap();
    assert_eq!(sent.matches("GET /hello HTTP/1.1\r\n").count(), 2, "{sent}");
    assert!(sent.contains(&format!("Host: 127.0.0.1:{port}\r\n")));
    // What curl printed (headers and body of both responses) is what it read.
    assert_eq!(c.stream(IN), printed);
    let server = got.one(Role::Server, c.info.local.unwrap().port());
    assert_eq!(server.stream(IN), sent.as_bytes());
}

#[test]
fn a_reused_fd_is_a_new_connection() {
    let mut cg = TestCgroup::new("reuse");
    let port = start_server(&mut cg, "echo_server.py", "127.0.0.1");
    let rec = cg.capture();
    let out = client(&cg, &["reuse", "127.0.0.1", &port.to_string()]);
    let got = rec.finish();
    let conns: Vec<(u32, u16)> = out
        .iter()
        .filter_map(|l| l.strip_prefix("conn "))
        .map(|l| {
            let mut it = l.split(' ');
            (
                it.next().unwrap().parse().unwrap(),
                it.next().unwrap().parse().unwrap(),
            )
        })
        .collect();
    assert_eq!(conns.len(), 2);
    assert_eq!(
        conns[0].0, conns[1].0,
        "the script must reuse the fd number"
    );
    let a = got.one(Role::Client, conns[0].1);
    let b = got.one(Role::Client, conns[1].1);
    assert_ne!(a.info.id, b.info.id);
    assert_eq!((a.info.fd, b.info.fd), (conns[0].0, conns[0].0));
    assert_eq!(a.stream(OUT), b"one");
    assert_eq!(a.stream(IN), b"one");
    assert_eq!(b.stream(OUT), b"two");
    assert_eq!(b.stream(IN), b"two");
    assert_eq!(
        a.end.map(|e| e.0),
        Some(ConnEnd::Closed(CloseReason::Close))
    );
}

#[test]
fn a_connection_opened_before_sonde_started_is_found_with_addresses_and_roles() {
    let mut cg = TestCgroup::new("preexisting");
    let port = start_server(&mut cg, "http_server.py", "127.0.0.1");
    let mut cmd = cg.command(&python());
    cmd.arg(peers_dir().join("client.py"))
        .args(["preexisting", "127.0.0.1", &port.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let child = cg.spawn(cmd);
    let mut lines = Lines::of(child);
    let connected = lines.next_line();
    let mut it = connected.strip_prefix("connected ").unwrap().split(' ');
    let fd: u32 = it.next().unwrap().parse().unwrap();
    let client_port: u16 = it.next().unwrap().parse().unwrap();

    // The connection exists; only now does sonde start.
    let rec = cg.capture();
    lines.send("go");
    let response = unhex(lines.next_line().strip_prefix("recv ").unwrap());
    let _ = lines.rest();
    let got = rec.finish();

    let c = got.one(Role::Client, client_port);
    assert_eq!(c.info.source, ConnSource::Discovered);
    assert_eq!(c.info.fd, fd);
    assert_eq!(
        c.info.local,
        Some(SocketAddr::from(([127, 0, 0, 1], client_port)))
    );
    assert_eq!(
        c.info.remote,
        Some(SocketAddr::from(([127, 0, 0, 1], port)))
    );
    assert_eq!(c.stream(OUT), b"GET /hello HTTP/1.1\r\nHost: test\r\n\r\n");
    assert_eq!(c.stream(IN), response);
    // The server side was accepted before sonde started too: found on first read, and its role
    // inferred from the listening socket.
    let s = got.one(Role::Server, client_port);
    assert_eq!(s.info.source, ConnSource::Discovered);
    assert_eq!(s.info.local, Some(SocketAddr::from(([127, 0, 0, 1], port))));
    assert_eq!(s.stream(OUT), response);
    assert_eq!(got.summary.kernel.get(Counter::ConnDiscovered), 2);
    assert_eq!(got.summary.conns.roles_inferred, 2);
}

#[test]
fn a_new_process_with_an_exited_ones_pid_has_its_sockets_found() {
    // An exited process's "fd 50 is not a TCP socket" must not be believed for a later process
    // that gets the same pid (pids wrap): its fd 50, a TCP connection inherited from its parent
    // and never seen being opened, must be found like any other.
    let mut cg = TestCgroup::new("pidreuse");
    let port = start_server(&mut cg, "http_server.py", "127.0.0.1");
    let rec = cg.capture();
    let out = client(&cg, &["pidreuse", "127.0.0.1", &port.to_string()]);
    let got = rec.finish();
    let pid: u32 = field(&out, "pid ").parse().unwrap();
    let response = unhex(field(&out, "recv "));
    assert!(response.starts_with(b"HTTP/1."), "{out:?}");
    let of_pid: Vec<_> = got.conns().filter(|c| c.info.pid == pid).collect();
    assert_eq!(
        of_pid.len(),
        1,
        "the second process (pid {pid}) has one connection: {:#?}",
        got.describe()
    );
    let c = of_pid[0];
    assert_eq!(c.info.source, ConnSource::Discovered);
    assert_eq!(c.info.fd, 50);
    assert_eq!(
        c.info.remote,
        Some(SocketAddr::from(([127, 0, 0, 1], port)))
    );
    assert_eq!(
        c.stream(OUT),
        b"GET /pid-reuse HTTP/1.1\r\nHost: test\r\n\r\n"
    );
    assert_eq!(c.stream(IN), response);
    // The first process's writes to /dev/null were classified and not captured.
    assert!(got.summary.kernel.get(Counter::FdNotTcp) >= 1);
}

#[test]
fn files_pipes_unix_and_udp_sockets_are_ignored() {
    let cg = TestCgroup::new("noise");
    let dir = std::env::temp_dir().join(format!("sonde-noise-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let udp_port = udp.local_addr().unwrap().port().to_string();
    let rec = cg.capture();
    let out = client(&cg, &["noise", dir.to_str().unwrap(), &udp_port]);
    let got = rec.finish();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(out, vec!["done"]);
    let mut buf = [0u8; 64];
    let n = udp.recv(&mut buf).unwrap();
    assert_eq!(
        &buf[..n],
        b"GET /udp HTTP/1.1\r\n\r\n",
        "the UDP datagram was really sent"
    );
    assert_eq!(got.conns().count(), 0, "{:#?}", got.describe());
    let k = &got.summary.kernel;
    assert_eq!(k.get(Counter::DataEvents), 0);
    // file, pipe (both ends), unix socket pair, UDP socket, plus python's own files.
    assert!(k.get(Counter::FdNotTcp) >= 5, "{k:?}");
}

#[test]
fn an_untraced_process_is_ignored() {
    let mut traced = TestCgroup::new("traced");
    let untraced = TestCgroup::new("untraced");
    let port = start_server(&mut traced, "echo_server.py", "127.0.0.1");
    let rec = traced.capture();
    // A client outside the traced cgroup talks to the traced server: only the server's side
    // is seen. Then a client inside talks to it: both sides are seen.
    let outside = client(&untraced, &["reuse", "127.0.0.1", &port.to_string()]);
    let inside = client(&traced, &["reuse", "127.0.0.1", &port.to_string()]);
    let got = rec.finish();
    let port_of = |l: &str| -> u16 { l.rsplit(' ').next().unwrap().parse().unwrap() };
    for l in &outside {
        let p = port_of(l);
        let v = got.with_port(p);
        assert_eq!(
            v.len(),
            1,
            "only the traced server side: {:#?}",
            got.describe()
        );
        assert_eq!(v[0].info.role, Role::Server);
    }
    for l in &inside {
        assert_eq!(got.with_port(port_of(l)).len(), 2);
    }
}

#[test]
fn vectored_io_is_walked() {
    let mut cg = TestCgroup::new("iov");
    let port = start_server(&mut cg, "echo_server.py", "127.0.0.1");
    let rec = cg.capture();
    let out = client(&cg, &["iov", "127.0.0.1", &port.to_string()]);
    let got = rec.finish();
    let sent = unhex(field(&out, "sent"));
    let recv = unhex(field(&out, "recv"));
    assert_eq!(sent, b"alpha-beta-gamma-delta-epsilon");
    assert_eq!(recv, sent);
    let c = got
        .conns()
        .find(|c| c.info.role == Role::Client)
        .expect("client connection");
    assert_eq!(c.stream(OUT), sent);
    assert_eq!(c.stream(IN), recv);
    let syscalls: Vec<_> = c
        .egress
        .iter()
        .filter_map(|ch| match ch {
            Chunk::Data { syscall, .. } => Some(*syscall),
            _ => None,
        })
        .collect();
    assert_eq!(
        syscalls,
        vec![sonde_proto::Syscall::Sendmsg, sonde_proto::Syscall::Writev]
    );
    assert_eq!(got.summary.kernel.get(Counter::IovLimit), 0);
}

#[test]
fn thousands_of_tiny_writes_arrive_in_order_without_loss() {
    let mut cg = TestCgroup::new("tiny");
    let port = start_server(&mut cg, "echo_server.py", "127.0.0.1");
    let rec = cg.capture();
    let n = 5000;
    client(
        &cg,
        &["tiny", "127.0.0.1", &port.to_string(), &n.to_string()],
    );
    let got = rec.finish();
    let c = got
        .conns()
        .find(|c| c.info.role == Role::Client)
        .expect("client connection");
    let expected: Vec<u8> = (0..n).map(|i| b'0' + (i % 10) as u8).collect();
    assert_bytes_eq(&c.stream(OUT), &expected, "client writes");
    assert_eq!(c.egress.len(), n, "one record per write");
    // The client reads the echo in large reads: beyond the capture size they are gaps.
    assert_chunks_cover(&c.ingress, &expected, "client reads");
    let s = got.one(Role::Server, c.info.local.unwrap().port());
    assert_chunks_cover(&s.ingress, &expected, "server reads");
    assert_chunks_cover(&s.egress, &expected, "server writes");
    assert_eq!(got.summary.kernel.get(Counter::RingbufFull), 0);
    assert_eq!(got.summary.conns.gap_lost_bytes, 0);
}

#[test]
fn big_transfers_are_truncated_to_the_capture_size_with_counted_gaps() {
    let mut cg = TestCgroup::new("big");
    let port = start_server(&mut cg, "echo_server.py", "127.0.0.1");
    let mut config = cg.capture_config();
    config.probes.capture_bytes = 1000;
    let rec = cg.capture_with(config);
    let n = 300_000;
    client(
        &cg,
        &["big", "127.0.0.1", &port.to_string(), &n.to_string()],
    );
    let got = rec.finish();
    let c = got
        .conns()
        .find(|c| c.info.role == Role::Client)
        .expect("client connection");
    let expected: Vec<u8> = (0..n).map(|i| ((i * 7) % 256) as u8).collect();
    // Every chunk is either captured bytes equal to the real ones at that offset, or a gap
    // right after them; together they cover the whole stream.
    for (what, chunks) in [("client writes", &c.egress), ("client reads", &c.ingress)] {
        assert_chunks_cover(chunks, &expected, what);
        assert!(
            chunks
                .iter()
                .all(|ch| !matches!(ch, Chunk::Data { bytes, .. } if bytes.len() > 1000))
        );
    }
    // The sender wrote it in one call: one record of 1000 captured bytes and a gap.
    assert!(matches!(&c.egress[0], Chunk::Data { bytes, .. } if bytes.len() == 1000));
    let k = &got.summary.kernel;
    assert!(k.get(Counter::TruncatedEvents) >= 2, "{k:?}");
    assert_eq!(
        k.get(Counter::TruncatedBytes) + k.get(Counter::CapturedBytes),
        k.get(Counter::TransferredBytes)
    );
    // Four streams of n bytes each (client and server, both directions).
    assert_eq!(k.get(Counter::TransferredBytes), 4 * n as u64);
    assert_eq!(
        got.summary.conns.gap_not_captured_bytes,
        k.get(Counter::TruncatedBytes)
    );
}

#[test]
fn binary_garbage_is_captured_exactly_and_harms_nothing() {
    let mut cg = TestCgroup::new("garbage");
    let port = start_server(&mut cg, "echo_server.py", "127.0.0.1");
    let rec = cg.capture();
    let out = client(
        &cg,
        &["garbage", "127.0.0.1", &port.to_string(), "200000", "7"],
    );
    let got = rec.finish();
    let sent = unhex(field(&out, "sent"));
    let c = got
        .conns()
        .find(|c| c.info.role == Role::Client)
        .expect("client connection");
    // Writes are at most 700 bytes: all captured.
    assert_bytes_eq(&c.stream(OUT), &sent, "client writes");
    assert_eq!(got.summary.decode_errors.total(), 0);
}
