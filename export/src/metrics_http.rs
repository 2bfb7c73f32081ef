//! The agent's own HTTP endpoint: `GET /metrics` (Prometheus text), `/healthz`, `/readyz`.
//!
//! Three fixed routes do not need a web framework: a request head is read (bounded in size
//! and time), answered, and the connection closed. Connections beyond a small limit are
//! refused rather than queued, so a misbehaving scraper cannot grow the agent's memory.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::{Semaphore, watch},
    task::JoinHandle,
};

use crate::prom;

/// Largest request head read.
const MAX_HEAD: usize = 8 * 1024;
/// Time a client has to send its request head.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once.
const MAX_CONNECTIONS: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum MetricsHttpError {
    #[error(
        "cannot listen on {addr} for /metrics: {source}; choose another address or free the port"
    )]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// What the routes answer from.
#[derive(Clone)]
pub struct MetricsState {
    /// Renders the whole `/metrics` body (see [`prom::Writer`]).
    pub render: Arc<dyn Fn() -> String + Send + Sync>,
    /// Renders it as OpenMetrics (with exemplars), for scrapers that ask for
    /// `application/openmetrics-text`; `None` answers them with Prometheus text.
    pub render_openmetrics: Option<Arc<dyn Fn() -> String + Send + Sync>>,
    /// `/readyz` answers 200 while this is set, else 503.
    pub ready: Arc<AtomicBool>,
    /// Renders `/targets` (JSON: which pods are traced and why) in Kubernetes mode; without
    /// it `/targets` is 404.
    pub targets: Option<Arc<dyn Fn() -> String + Send + Sync>>,
    /// `/targets` (the node's pod list) answers scrapers from other hosts too; by default it
    /// answers loopback peers only (`sonde targets`, `kubectl exec`).
    pub targets_public: bool,
}

/// A running server; stops when [`MetricsServer::shutdown`] is called or it is dropped.
pub struct MetricsServer {
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Binds `addr` (port 0 picks one) and serves in a background task.
    pub async fn bind(addr: SocketAddr, state: MetricsState) -> Result<Self, MetricsHttpError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| MetricsHttpError::Bind { addr, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| MetricsHttpError::Bind { addr, source })?;
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
            loop {
                let conn = tokio::select! {
                    conn = listener.accept() => conn,
                    _ = stopped.changed() => return,
                };
                let Ok((stream, peer)) = conn else {
                    // Per-connection accept errors (e.g. EMFILE): back off briefly.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let Ok(permit) = Arc::clone(&limit).try_acquire_owned() else {
                    continue; // dropping the stream closes it
                };
                let state = state.clone();
                tokio::spawn(async move {
                    let _ = serve(stream, peer, &state).await;
                    drop(permit);
                });
            }
        });
        Ok(Self {
            local_addr,
            stop,
            task: Some(task),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting connections.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

struct Response {
    status: &'static str,
    content_type: &'static str,
    body: String,
    allow: bool,
}

/// Whether an `Accept` header asks for OpenMetrics (as Prometheus does when it wants
/// exemplars: `application/openmetrics-text;version=1.0.0,text/plain;q=0.5,...`).
fn wants_openmetrics(head: &str) -> bool {
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(k, _)| k.trim().eq_ignore_ascii_case("accept"))
        .flat_map(|(_, v)| v.split(','))
        .any(|media| {
            let mut parts = media.split(';');
            let kind = parts.next().unwrap_or("").trim();
            let q_zero = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.parse::<f64>().ok())
                    == Some(0.0)
            });
            kind.eq_ignore_ascii_case("application/openmetrics-text") && !q_zero
        })
}

fn route(
    method: &str,
    target: &str,
    state: &MetricsState,
    openmetrics: bool,
    peer: SocketAddr,
) -> Response {
    let path = target.split('?').next().unwrap_or(target);
    let text = |status, body: &str| Response {
        status,
        content_type: "text/plain; charset=utf-8",
        body: body.to_owned(),
        allow: false,
    };
    let targets = path == "/targets" && state.targets.is_some();
    if !matches!(path, "/metrics" | "/healthz" | "/readyz") && !targets {
        return text(
            "404 Not Found",
            "not found: try /metrics, /healthz or /readyz\n",
        );
    }
    if targets && !state.targets_public && !peer.ip().to_canonical().is_loopback() {
        return text(
            "403 Forbidden",
            "/targets lists this node's pods and answers loopback only: ask from the node \
             (`sonde targets`, `kubectl exec`), or set [metrics] targets_public = true \
             (--targets-public)\n",
        );
    }
    if method != "GET" && method != "HEAD" {
        let mut r = text("405 Method Not Allowed", "use GET\n");
        r.allow = true;
        return r;
    }
    match path {
        "/metrics" => match (&state.render_openmetrics, openmetrics) {
            (Some(render), true) => Response {
                status: "200 OK",
                content_type: prom::OPENMETRICS_CONTENT_TYPE,
                body: render(),
                allow: false,
            },
            _ => Response {
                status: "200 OK",
                content_type: prom::CONTENT_TYPE,
                body: (state.render)(),
                allow: false,
            },
        },
        "/healthz" => text("200 OK", "ok\n"),
        "/targets" => Response {
            status: "200 OK",
            content_type: "application/json",
            body: state.targets.as_ref().map(|f| f()).unwrap_or_default(),
            allow: false,
        },
        _ if state.ready.load(Ordering::Relaxed) => text("200 OK", "ready\n"),
        _ => text("503 Service Unavailable", "not ready\n"),
    }
}

async fn serve(
    mut stream: TcpStream,
    peer: SocketAddr,
    state: &MetricsState,
) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let complete = tokio::time::timeout(READ_TIMEOUT, async {
        let mut buf = [0u8; 1024];
        loop {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(false);
            }
            head.extend_from_slice(&buf[..n]);
            if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
                return Ok(true);
            }
            if head.len() > MAX_HEAD {
                return Ok(false);
            }
        }
    })
    .await;
    let response = match complete {
        Ok(Ok(true)) => {
            let text = String::from_utf8_lossy(&head);
            let line = text.lines().next().unwrap_or_default();
            let mut parts = line.split_whitespace();
            let om = wants_openmetrics(&text);
            match (parts.next(), parts.next()) {
                (Some(method), Some(target)) => {
                    (route(method, target, state, om, peer), method == "HEAD")
                }
                _ => (bad_request(), false),
            }
        }
        Ok(Ok(false)) if head.is_empty() => return Ok(()),
        Ok(Ok(false)) => (bad_request(), false),
        Ok(Err(e)) => return Err(e),
        Err(_) => return Ok(()),
    };
    let (mut r, head_only) = response;
    // A HEAD answer describes the GET body without sending it.
    let length = r.body.len();
    if head_only {
        r.body.clear();
    }
    let mut out = format!(
        "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {length}\r\nConnection: close\r\n",
        r.status, r.content_type
    );
    if r.allow {
        out.push_str("Allow: GET, HEAD\r\n");
    }
    out.push_str("\r\n");
    out.push_str(&r.body);
    stream.write_all(out.as_bytes()).await?;
    stream.shutdown().await
}

fn bad_request() -> Response {
    Response {
        status: "400 Bad Request",
        content_type: "text/plain; charset=utf-8",
        body: "bad request\n".to_owned(),
        allow: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_answer_loopback_peers_unless_made_public() {
        let state = |public| MetricsState {
            render: Arc::new(String::new),
            render_openmetrics: None,
            ready: Arc::new(AtomicBool::new(true)),
            targets: Some(Arc::new(|| "{\"pods\":[]}".to_owned())),
            targets_public: public,
        };
        let remote: SocketAddr = "10.1.2.3:5000".parse().unwrap();
        for peer in ["127.0.0.1:5000", "[::1]:5000", "[::ffff:127.0.0.1]:5000"] {
            let r = route(
                "GET",
                "/targets",
                &state(false),
                false,
                peer.parse().unwrap(),
            );
            assert_eq!(
                (r.status, r.body.as_str()),
                ("200 OK", "{\"pods\":[]}"),
                "{peer}"
            );
        }
        let r = route("GET", "/targets", &state(false), false, remote);
        assert_eq!(r.status, "403 Forbidden");
        assert!(r.body.contains("targets_public"), "{}", r.body);
        assert_eq!(
            route("GET", "/targets", &state(true), false, remote).status,
            "200 OK"
        );
        // /metrics is for every scraper.
        assert_eq!(
            route("GET", "/metrics", &state(false), false, remote).status,
            "200 OK"
        );
    }

    async fn get(addr: SocketAddr, request: &str) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn serves_metrics_health_and_readiness() {
        let ready = Arc::new(AtomicBool::new(false));
        let server = MetricsServer::bind(
            "127.0.0.1:0".parse().unwrap(),
            MetricsState {
                render: Arc::new(|| {
                    let mut w = prom::Writer::new();
                    w.counter("sonde_test_total", "A test.")
                        .sample(&[("a", "b")], 7.0);
                    w.finish()
                }),
                render_openmetrics: Some(Arc::new(|| "# EOF\n".to_owned())),
                ready: Arc::clone(&ready),
                targets: Some(Arc::new(|| "{\"pods\":[]}".to_owned())),
                targets_public: false,
            },
        )
        .await
        .unwrap();
        let addr = server.local_addr();

        let metrics = get(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(metrics.starts_with("HTTP/1.1 200 OK\r\n"), "{metrics}");
        assert!(metrics.contains("Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"));
        let body = "# HELP sonde_test_total A test.\n# TYPE sonde_test_total counter\nsonde_test_total{a=\"b\"} 7\n";
        assert!(metrics.contains(&format!("Content-Length: {}\r\n", body.len())));
        assert!(metrics.ends_with(&format!("\r\n\r\n{body}")), "{metrics}");

        let om = get(
            addr,
            "GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text;version=1.0.0,text/plain;q=0.5\r\n\r\n",
        )
        .await;
        assert!(
            om.contains(
                "Content-Type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\n"
            ) && om.ends_with("\r\n\r\n# EOF\n"),
            "{om}"
        );
        let plain = get(
            addr,
            "GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text;q=0,text/plain\r\n\r\n",
        )
        .await;
        assert!(
            plain.contains("Content-Type: text/plain; version=0.0.4"),
            "{plain}"
        );
        assert!(
            get(addr, "GET /healthz HTTP/1.1\r\n\r\n")
                .await
                .starts_with("HTTP/1.1 200 OK")
        );
        assert!(
            get(addr, "GET /readyz HTTP/1.1\r\n\r\n")
                .await
                .starts_with("HTTP/1.1 503 Service Unavailable")
        );
        ready.store(true, Ordering::Relaxed);
        assert!(
            get(addr, "GET /readyz?verbose HTTP/1.1\r\n\r\n")
                .await
                .starts_with("HTTP/1.1 200 OK")
        );

        let t = get(addr, "GET /targets HTTP/1.1\r\n\r\n").await;
        assert!(
            t.starts_with("HTTP/1.1 200 OK") && t.ends_with("\r\n\r\n{\"pods\":[]}"),
            "{t}"
        );
        assert!(
            get(addr, "GET /nope HTTP/1.1\r\n\r\n")
                .await
                .starts_with("HTTP/1.1 404")
        );
        let post = get(addr, "POST /metrics HTTP/1.1\r\n\r\n").await;
        assert!(
            post.starts_with("HTTP/1.1 405") && post.contains("Allow: GET, HEAD\r\n"),
            "{post}"
        );
        let head = get(addr, "HEAD /healthz HTTP/1.1\r\n\r\n").await;
        assert!(
            head.starts_with("HTTP/1.1 200 OK") && head.ends_with("\r\n\r\n"),
            "{head}"
        );
        assert!(
            get(addr, "garbage\r\n\r\n")
                .await
                .starts_with("HTTP/1.1 400")
        );
        server.shutdown().await;
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "listener closed after shutdown"
        );
    }
}
