//! rotel, an independent OTLP receiver written in Rust, accepts what sonde sends over gRPC and
//! HTTP/protobuf, and prints the spans it decoded.

mod common;

use std::{
    fs::File,
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use common::*;
use sonde_export::config::{Compression, Protocol};

struct Rotel {
    child: Child,
    output: PathBuf,
    grpc_port: u16,
    http_port: u16,
}

impl Drop for Rotel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The `rotel-agent` binary shipped in the peers' `rotel` package.
fn rotel_binary() -> PathBuf {
    let out = Command::new(peers_python())
        .args([
            "-c",
            "import os, rotel; print(os.path.dirname(rotel.__file__))",
        ])
        .output()
        .expect("run the peers' python");
    assert!(
        out.status.success(),
        "the rotel package is missing: run `cargo xtask setup`"
    );
    let path = Path::new(String::from_utf8(out.stdout).unwrap().trim()).join("rotel-agent");
    assert!(
        path.exists(),
        "{} is missing: run `cargo xtask setup`",
        path.display()
    );
    path
}

async fn start_rotel(dir: &Path) -> Rotel {
    let (grpc_port, http_port) = (free_port(), free_port());
    let output = dir.join("rotel.out");
    let out = File::create(&output).unwrap();
    let child = Command::new(rotel_binary())
        .args(["start", "--exporter", "blackhole", "--debug-log", "traces"])
        .args(["--debug-log-verbosity", "detailed"])
        .args(["--otlp-grpc-endpoint", &format!("127.0.0.1:{grpc_port}")])
        .args(["--otlp-http-endpoint", &format!("127.0.0.1:{http_port}")])
        .arg("--pid-file")
        .arg(dir.join("rotel.pid"))
        .arg("--log-file")
        .arg(dir.join("rotel.log"))
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("start rotel-agent");
    let rotel = Rotel {
        child,
        output,
        grpc_port,
        http_port,
    };
    eventually("rotel to listen", || {
        (TcpStream::connect(("127.0.0.1", grpc_port)).is_ok()
            && TcpStream::connect(("127.0.0.1", http_port)).is_ok())
        .then_some(())
    })
    .await;
    rotel
}

async fn export_to_rotel(rotel: &Rotel, protocol: Protocol, name: &str, tag: u8) {
    let port = match protocol {
        Protocol::Grpc => rotel.grpc_port,
        Protocol::HttpProtobuf => rotel.http_port,
    };
    let c = fast(config(
        protocol,
        format!("http://127.0.0.1:{port}"),
        Compression::Gzip,
    ));
    let pipeline = start_pipeline(&c);
    let mut span = full_span(tag, &checkout_resource());
    span.name = name.to_owned();
    pipeline.queue().try_send(span).unwrap();
    pipeline.force_flush().await;
    let stats = pipeline.shutdown(PATIENCE).await;
    assert_eq!(stats.exported, 1, "{protocol:?}: {stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotel_receives_grpc_and_http() {
    let dir = temp_dir("rotel");
    let rotel = start_rotel(&dir).await;
    export_to_rotel(&rotel, Protocol::Grpc, "sonde-grpc-check", 0xa1).await;
    export_to_rotel(&rotel, Protocol::HttpProtobuf, "sonde-http-check", 0xb2).await;

    for (name, tag) in [("sonde-grpc-check", 0xa1u8), ("sonde-http-check", 0xb2)] {
        let span = full_span(tag, &checkout_resource());
        let want = [
            format!("Trace ID : {}", span.trace_id),
            format!("ID : {}", span.span_id),
            format!("Parent ID : {}", span.parent_span_id.unwrap()),
            format!("Name : {name}"),
            "Kind : SPAN_KIND_SERVER".to_owned(),
            "TraceState : congo=t61rcWkgMzE,rojo=00f067aa0ba902b7".to_owned(),
            format!("Start time: {}", span.start_unix_nanos),
            format!("End time: {}", span.end_unix_nanos),
            "Status code : STATUS_CODE_ERROR".to_owned(),
            "Status message : upstream unavailable".to_owned(),
            "InstrumentationScope sonde 1.2.3-test".to_owned(),
            "-> service.name: Str(checkout)".to_owned(),
            "-> process.pid: Int(4242)".to_owned(),
            "-> http.response.status_code: Int(503)".to_owned(),
            "-> sonde.sampled: Bool(true)".to_owned(),
            "-> sonde.ratio: Double(0.25)".to_owned(),
            "-> http.request.header.accept: Slice(Str(text/html), Str(*/*))".to_owned(),
        ];
        eventually(&format!("rotel to print {name}"), || {
            // rotel aligns its columns with spaces: compare whitespace-normalised lines.
            let text = std::fs::read_to_string(&rotel.output).unwrap_or_default();
            let lines: Vec<String> = text
                .lines()
                .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
                .collect();
            want.iter().all(|w| lines.contains(w)).then_some(())
        })
        .await;
    }
}
