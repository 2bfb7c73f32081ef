//! The agent's small HTTP/1.1 servers (`/metrics` and the trace view): one request per
//! connection, a head read bounded in size and time, an answer, and the connection closed.
//!
//! Routes are few and fixed, so they need no web framework. Connections beyond a small limit
//! are refused rather than queued, so a misbehaving client cannot grow the agent's memory.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::{Semaphore, watch},
    task::JoinHandle,
};

/// Largest request head read.
const MAX_HEAD: usize = 8 * 1024;
/// Time a client has to send its request head.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once.
const MAX_CONNECTIONS: usize = 32;

/// A parsed request line and its head.
pub(crate) struct Request<'a> {
    pub method: &'a str,
    /// Path and query, as sent.
    pub target: &'a str,
    /// The whole head (request line and header lines).
    pub head: &'a str,
    pub peer: SocketAddr,
}

impl Request<'_> {
    /// The target without its query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or(self.target)
    }

    /// The value of a header (first of that name), trimmed.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head
            .lines()
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
    }
}

pub(crate) struct Response {
    pub status: &'static str,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    /// Extra header lines (name, value).
    pub headers: Vec<(&'static str, &'static str)>,
}

impl Response {
    pub fn new(status: &'static str, content_type: &'static str, body: impl Into<Vec<u8>>) -> Self {
        Self {
            status,
            content_type,
            body: body.into(),
            headers: Vec::new(),
        }
    }

    pub fn text(status: &'static str, body: &str) -> Self {
        Self::new(status, "text/plain; charset=utf-8", body)
    }

    pub fn with_header(mut self, name: &'static str, value: &'static str) -> Self {
        self.headers.push((name, value));
        self
    }
}

pub(crate) type Handler = Arc<dyn Fn(&Request<'_>) -> Response + Send + Sync>;

/// A running server; stops when [`Server::shutdown`] is called or it is dropped.
pub(crate) struct Server {
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl Server {
    /// Binds `addr` (port 0 picks one) and serves `handler` in a background task.
    pub async fn bind(addr: SocketAddr, handler: Handler) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
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
                let handler = Arc::clone(&handler);
                tokio::spawn(async move {
                    let _ = serve(stream, peer, &handler).await;
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

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

async fn serve(mut stream: TcpStream, peer: SocketAddr, handler: &Handler) -> std::io::Result<()> {
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
    let (mut r, head_only) = match complete {
        Ok(Ok(true)) => {
            let text = String::from_utf8_lossy(&head);
            let line = text.lines().next().unwrap_or_default();
            let mut parts = line.split_whitespace();
            match (parts.next(), parts.next()) {
                (Some(method), Some(target)) => {
                    let request = Request {
                        method,
                        target,
                        head: &text,
                        peer,
                    };
                    (handler(&request), method == "HEAD")
                }
                _ => (bad_request(), false),
            }
        }
        Ok(Ok(false)) if head.is_empty() => return Ok(()),
        Ok(Ok(false)) => (bad_request(), false),
        Ok(Err(e)) => return Err(e),
        Err(_) => return Ok(()),
    };
    // A HEAD answer describes the GET body without sending it.
    let length = r.body.len();
    if head_only {
        r.body.clear();
    }
    let mut out = format!(
        "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {length}\r\nConnection: close\r\n",
        r.status, r.content_type
    );
    for (name, value) in &r.headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(&r.body);
    stream.write_all(&bytes).await?;
    stream.shutdown().await
}

fn bad_request() -> Response {
    Response::text("400 Bad Request", "bad request\n")
}
