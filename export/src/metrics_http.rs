//! The agent's own HTTP endpoint: `GET /metrics` (Prometheus text), `/healthz`, `/readyz`,
//! and `/targets` in Kubernetes mode, served by [`crate::http_serve`].

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use crate::{
    http_serve::{Request, Response, Server},
    prom,
};

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
pub struct MetricsServer(Server);

impl MetricsServer {
    /// Binds `addr` (port 0 picks one) and serves in a background task.
    pub async fn bind(addr: SocketAddr, state: MetricsState) -> Result<Self, MetricsHttpError> {
        Server::bind(addr, Arc::new(move |r: &Request<'_>| route(r, &state)))
            .await
            .map(Self)
            .map_err(|source| MetricsHttpError::Bind { addr, source })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.0.local_addr()
    }

    /// Stops accepting connections.
    pub async fn shutdown(self) {
        self.0.shutdown().await
    }
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

fn route(r: &Request<'_>, state: &MetricsState) -> Response {
    let path = r.path();
    let text = Response::text;
    let targets = path == "/targets" && state.targets.is_some();
    if !matches!(path, "/metrics" | "/healthz" | "/readyz") && !targets {
        return text(
            "404 Not Found",
            "not found: try /metrics, /healthz or /readyz\n",
        );
    }
    if targets && !state.targets_public && !r.peer.ip().to_canonical().is_loopback() {
        return text(
            "403 Forbidden",
            "/targets lists this node's pods and answers loopback only: ask from the node \
             (`sonde targets`, `kubectl exec`), or set [metrics] targets_public = true \
             (--targets-public)\n",
        );
    }
    if r.method != "GET" && r.method != "HEAD" {
        return text("405 Method Not Allowed", "use GET\n").with_header("Allow", "GET, HEAD");
    }
    match path {
        "/metrics" => match (&state.render_openmetrics, wants_openmetrics(r.head)) {
            (Some(render), true) => {
                Response::new("200 OK", prom::OPENMETRICS_CONTENT_TYPE, render())
            }
            _ => Response::new("200 OK", prom::CONTENT_TYPE, (state.render)()),
        },
        "/healthz" => text("200 OK", "ok\n"),
        "/targets" => Response::new(
            "200 OK",
            "application/json",
            state.targets.as_ref().map(|f| f()).unwrap_or_default(),
        ),
        _ if state.ready.load(Ordering::Relaxed) => text("200 OK", "ready\n"),
        _ => text("503 Service Unavailable", "not ready\n"),
    }
}

#[cfg(test)]
mod tests {
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpStream,
    };

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
        let get = |path: &str, public: bool, peer: &str| {
            let r = route(
                &Request {
                    method: "GET",
                    target: path,
                    head: "",
                    peer: peer.parse().unwrap(),
                },
                &state(public),
            );
            (r.status, String::from_utf8(r.body).unwrap())
        };
        for peer in ["127.0.0.1:5000", "[::1]:5000", "[::ffff:127.0.0.1]:5000"] {
            assert_eq!(
                get("/targets", false, peer),
                ("200 OK", "{\"pods\":[]}".to_owned()),
                "{peer}"
            );
        }
        let remote = "10.1.2.3:5000";
        let (status, body) = get("/targets", false, remote);
        assert_eq!(status, "403 Forbidden");
        assert!(body.contains("targets_public"), "{body}");
        assert_eq!(get("/targets", true, remote).0, "200 OK");
        // /metrics is for every scraper.
        assert_eq!(get("/metrics", false, remote).0, "200 OK");
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
