//! The bounded queue between the pipeline and the exporter, and the worker that drains it.
//!
//! The producer side ([`SpanQueue::try_send`]) never blocks or awaits: the traced
//! application's latency must not depend on the collector's. A full queue drops the span
//! and counts it. The worker takes a batch when `max_export_batch_size` spans wait or when
//! `schedule_delay` has passed. OTLP batches go out as tasks, up to `max_concurrent_exports`
//! at once, each retried on its own while spans keep queueing up to the bound: memory stays
//! within `max_queue_size + max_concurrent_exports × max_export_batch_size` spans whatever the
//! collector does. Line sinks write one batch at a time, in order.
//!
//! ```text
//!  pipeline ──try_send──► [ mpsc, capacity max_queue_size ] ──► worker ──► OTLP tasks / lines
//!     │ full: dropped{queue_full}                          batch ≤ max_export_batch_size,
//!     └ closed: dropped{shutdown}                          retried until export_timeout
//! ```

use std::{
    io::Write,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering::Relaxed},
    },
    time::Duration,
};

use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use tokio::{
    sync::{Notify, mpsc, oneshot, watch},
    task::{JoinHandle, JoinSet},
    time::{Instant, sleep_until},
};

use crate::{
    config::{BatchConfig, ExportConfig, RetryConfig},
    console, jsonl, otlp,
    retry::{Backoff, Class},
    span::Span,
    stats::{DropReason, ExportStats, RequestOutcome, StatsSnapshot},
    transport::{ClientError, EncodedRequest, OtlpClient},
};

/// Where batches go.
pub enum Sink {
    /// OTLP over gRPC or HTTP, with retries.
    Otlp(OtlpClient),
    /// Text lines to a writer (stdout, a file): no retries; a write error drops the batch.
    Lines {
        writer: Box<dyn Write + Send>,
        format: LineFormat,
    },
}

/// Text formats of [`Sink::Lines`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineFormat {
    Console(console::Options),
    Jsonl,
}

/// Batching and retry settings of a pipeline, whatever its sink.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PipelineOptions {
    pub batch: BatchConfig,
    pub retry: RetryConfig,
    /// Timeout of one export attempt.
    pub request_timeout: Duration,
    /// Version of the `sonde` instrumentation scope.
    pub scope_version: String,
}

impl From<&ExportConfig> for PipelineOptions {
    fn from(c: &ExportConfig) -> Self {
        Self {
            batch: c.batch.clone(),
            retry: c.retry.clone(),
            request_timeout: c.timeout,
            scope_version: c.scope_version.clone(),
        }
    }
}

impl Default for PipelineOptions {
    fn default() -> Self {
        Self::from(&ExportConfig::default())
    }
}

struct Shared {
    stats: Arc<ExportStats>,
    /// Woken when the queue reaches a batch.
    wake: Notify,
    batch_size: i64,
}

/// The producer's handle: cheap to clone, one per pipeline thread if wanted.
#[derive(Clone)]
pub struct SpanQueue {
    tx: mpsc::Sender<Span>,
    shared: Arc<Shared>,
}

impl SpanQueue {
    /// Offers a span; never blocks. `Err` says why it was dropped (already counted).
    pub fn try_send(&self, span: Span) -> Result<(), DropReason> {
        let stats = &self.shared.stats;
        stats.record_offered();
        match self.tx.try_send(span) {
            Ok(()) => {
                if stats.record_enqueued() == self.shared.batch_size {
                    self.shared.wake.notify_one();
                }
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                stats.record_dropped(DropReason::QueueFull, 1);
                Err(DropReason::QueueFull)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                stats.record_dropped(DropReason::Shutdown, 1);
                Err(DropReason::Shutdown)
            }
        }
    }

    pub fn stats(&self) -> &Arc<ExportStats> {
        &self.shared.stats
    }

    /// Accounts for a span the pipeline made but decided not to send (sampling, policy):
    /// counted as created and dropped for `reason`, so the totals still add up.
    pub fn not_sent(&self, reason: DropReason) {
        let stats = &self.shared.stats;
        stats.record_offered();
        stats.record_dropped(reason, 1);
    }
}

enum Control {
    Flush(oneshot::Sender<()>),
    Shutdown {
        deadline: Instant,
        done: oneshot::Sender<()>,
    },
}

/// A running exporter: queue, worker task and counters.
pub struct ExportPipeline {
    queue: SpanQueue,
    control: mpsc::Sender<Control>,
    shutdown_deadline: watch::Sender<Option<Instant>>,
    worker: JoinHandle<()>,
}

impl ExportPipeline {
    /// Starts an OTLP pipeline from a resolved configuration. Call inside a tokio runtime.
    pub fn otlp(config: &ExportConfig) -> Result<Self, ClientError> {
        Ok(Self::start(
            Sink::Otlp(OtlpClient::new(config)?),
            PipelineOptions::from(config),
        ))
    }

    /// Starts the worker for `sink`. Call inside a tokio runtime.
    pub fn start(sink: Sink, options: PipelineOptions) -> Self {
        let stats = Arc::new(ExportStats::new(options.batch.max_queue_size));
        let (tx, rx) = mpsc::channel(options.batch.max_queue_size.max(1));
        let shared = Arc::new(Shared {
            stats,
            wake: Notify::new(),
            batch_size: options.batch.max_export_batch_size.max(1) as i64,
        });
        let (control_tx, control_rx) = mpsc::channel(4);
        let (deadline_tx, deadline_rx) = watch::channel(None);
        let worker = Worker {
            rx,
            shared: Arc::clone(&shared),
            control: control_rx,
            shutdown_deadline: deadline_rx,
            scope: otlp::scope(&options.scope_version),
            sink: match sink {
                Sink::Otlp(client) => SinkState::Otlp(Arc::new(OtlpExporter {
                    client,
                    shared: Arc::clone(&shared),
                    options: options.clone(),
                    failing: AtomicBool::new(false),
                    rejected_warned: AtomicBool::new(false),
                })),
                Sink::Lines { writer, format } => SinkState::Lines {
                    writer: Some(writer),
                    format,
                },
            },
            options,
            log: LogState::default(),
            in_flight: JoinSet::new(),
        };
        Self {
            queue: SpanQueue { tx, shared },
            control: control_tx,
            shutdown_deadline: deadline_tx,
            worker: tokio::spawn(worker.run()),
        }
    }

    /// A producer handle.
    pub fn queue(&self) -> SpanQueue {
        self.queue.clone()
    }

    pub fn stats(&self) -> Arc<ExportStats> {
        Arc::clone(&self.queue.shared.stats)
    }

    /// Exports the spans queued now (with retries) and returns when they are exported or
    /// dropped.
    pub async fn force_flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.control.send(Control::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }

    /// Stops accepting spans, exports what is queued until `timeout` has passed, drops (and
    /// counts) the rest, and returns the final counters.
    pub async fn shutdown(self, timeout: Duration) -> StatsSnapshot {
        let deadline = Instant::now() + timeout;
        self.shutdown_deadline.send_replace(Some(deadline));
        let (done, wait) = oneshot::channel();
        if self
            .control
            .send(Control::Shutdown { deadline, done })
            .await
            .is_ok()
        {
            let _ = wait.await;
        }
        let _ = self.worker.await;
        self.queue.shared.stats.snapshot()
    }
}

enum SinkState {
    Otlp(Arc<OtlpExporter>),
    Lines {
        /// `None` only while a blocking write holds it (or after it panicked).
        writer: Option<Box<dyn Write + Send>>,
        format: LineFormat,
    },
}

/// Log on changes of state, not per batch: hot paths count, they don't log.
#[derive(Default)]
struct LogState {
    /// The line sink's writes fail.
    failing: bool,
    queue_full_seen: u64,
}

/// What the OTLP export tasks share: the client, the counters and the state-change logs.
struct OtlpExporter {
    client: OtlpClient,
    shared: Arc<Shared>,
    options: PipelineOptions,
    /// Requests fail (logged once per change).
    failing: AtomicBool,
    /// The receiver's first partial success was logged.
    rejected_warned: AtomicBool,
}

struct Worker {
    rx: mpsc::Receiver<Span>,
    shared: Arc<Shared>,
    control: mpsc::Receiver<Control>,
    shutdown_deadline: watch::Receiver<Option<Instant>>,
    scope: InstrumentationScope,
    sink: SinkState,
    options: PipelineOptions,
    log: LogState,
    /// OTLP batches being exported (at most `max_concurrent_exports`).
    in_flight: JoinSet<()>,
}

impl Worker {
    fn stats(&self) -> &ExportStats {
        &self.shared.stats
    }

    async fn run(mut self) {
        let delay = self.options.batch.schedule_delay;
        let batch = self.options.batch.max_export_batch_size;
        let mut tick = Instant::now() + delay;
        loop {
            match self.control.try_recv() {
                Ok(msg) => {
                    if self.handle(msg).await {
                        return;
                    }
                    continue;
                }
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    // The handle was dropped without a shutdown: flush within the export timeout.
                    let deadline = Instant::now() + self.options.batch.export_timeout;
                    self.shutdown(deadline).await;
                    return;
                }
                Err(mpsc::error::TryRecvError::Empty) => {}
            }
            if self.rx.len() >= batch {
                self.export_next_batch().await;
                tick = Instant::now() + delay;
                continue;
            }
            tokio::select! {
                biased;
                msg = self.control.recv() => match msg {
                    Some(msg) => {
                        if self.handle(msg).await {
                            return;
                        }
                    }
                    None => continue, // handled by try_recv above
                },
                _ = self.shared.wake.notified() => {}
                _ = sleep_until(tick) => {
                    if !self.rx.is_empty() {
                        self.export_next_batch().await;
                    }
                    tick = Instant::now() + delay;
                }
            }
        }
    }

    /// Returns true when the worker must stop.
    async fn handle(&mut self, msg: Control) -> bool {
        match msg {
            Control::Flush(done) => {
                let mut left = self.rx.len();
                while left > 0 {
                    let n = self.export_next_batch().await;
                    if n == 0 {
                        break;
                    }
                    left = left.saturating_sub(n);
                }
                self.wait_in_flight(None).await;
                self.flush_writer().await;
                let _ = done.send(());
                false
            }
            Control::Shutdown { deadline, done } => {
                self.shutdown(deadline).await;
                let _ = done.send(());
                true
            }
        }
    }

    async fn shutdown(&mut self, deadline: Instant) {
        self.rx.close();
        while !self.rx.is_empty() && Instant::now() < deadline {
            self.export_next_batch().await;
        }
        // Batches in flight end by the deadline on their own (they watch it).
        self.wait_in_flight(None).await;
        let mut left = 0usize;
        while self.rx.try_recv().is_ok() {
            left += 1;
        }
        if left > 0 {
            self.stats().record_dequeued(left);
            self.stats()
                .record_dropped(DropReason::Shutdown, left as u64);
            self.stats().record_batch_done(left, 0);
            tracing::warn!(
                spans = left,
                "export: shutdown deadline reached with spans still queued; dropped them"
            );
        }
        self.flush_writer().await;
        self.note_queue_full();
    }

    /// Waits until fewer than `room_for` batches are in flight (all done with `None`),
    /// collecting the finished ones.
    async fn wait_in_flight(&mut self, room_for: Option<usize>) {
        while let Some(done) = self.in_flight.try_join_next() {
            log_task_end(done);
        }
        let limit = room_for.unwrap_or(1);
        while self.in_flight.len() >= limit && !self.in_flight.is_empty() {
            match self.in_flight.join_next().await {
                Some(done) => log_task_end(done),
                None => break,
            }
        }
    }

    /// Takes up to one batch from the queue and exports it (OTLP: starts its task once one
    /// of the `max_concurrent_exports` slots is free); returns how many spans it took.
    async fn export_next_batch(&mut self) -> usize {
        if let SinkState::Otlp(_) = self.sink {
            let slots = self.options.batch.max_concurrent_exports.max(1);
            self.wait_in_flight(Some(slots)).await;
        }
        let max = self.options.batch.max_export_batch_size;
        let mut spans = Vec::with_capacity(max.min(self.rx.len()));
        while spans.len() < max {
            match self.rx.try_recv() {
                Ok(span) => spans.push(span),
                Err(_) => break,
            }
        }
        let n = spans.len();
        if n == 0 {
            return 0;
        }
        self.stats().record_dequeued(n);
        match &self.sink {
            SinkState::Otlp(exporter) => {
                let exporter = Arc::clone(exporter);
                let encoding = std::time::Instant::now();
                let request = otlp::encode_request(&spans, &self.scope);
                self.stats().record_encode(encoding.elapsed());
                // The spans go now: a batch in flight holds only its bytes.
                drop(spans);
                let deadline = self.shutdown_deadline.clone();
                self.in_flight.spawn(async move {
                    let exported = exporter.export(request, n as u64, deadline).await;
                    exporter.shared.stats.record_batch_done(n, exported);
                });
            }
            SinkState::Lines { .. } => {
                let exported = self.write_lines(spans).await;
                self.stats().record_batch_done(n, exported);
            }
        }
        self.note_queue_full();
        n
    }

    fn note_queue_full(&mut self) {
        let now = self.stats().dropped(DropReason::QueueFull);
        if now > self.log.queue_full_seen {
            if self.log.queue_full_seen == 0 {
                tracing::warn!(
                    capacity = self.options.batch.max_queue_size,
                    "export queue full: dropping spans (counted in sonde_export_spans_dropped_total{{reason=\"queue_full\"}})"
                );
            }
            self.log.queue_full_seen = now;
        }
    }

    async fn write_lines(&mut self, spans: Vec<Span>) -> u64 {
        let n = spans.len() as u64;
        let SinkState::Lines { writer, format } = &mut self.sink else {
            return 0;
        };
        let format = *format;
        let Some(mut w) = writer.take() else {
            self.stats().record_dropped(DropReason::PermanentError, n);
            return 0;
        };
        let started = Instant::now();
        // Writers (a pipe, a slow terminal) may block: keep them off the async threads.
        let joined = tokio::task::spawn_blocking(move || {
            let mut written = 0u64;
            let mut result = Ok(());
            for span in &spans {
                let r = match format {
                    LineFormat::Console(opts) => console::write_span(&mut w, span, &opts),
                    LineFormat::Jsonl => jsonl::write_span(&mut w, span),
                };
                if let Err(e) = r {
                    result = Err(e);
                    break;
                }
                written += 1;
            }
            // A batch is visible once written (a file behind a BufWriter would otherwise hold
            // it until exit).
            if result.is_ok() {
                result = w.flush();
            }
            (w, written, result)
        })
        .await;
        let Ok((w, written, result)) = joined else {
            self.stats().record_dropped(DropReason::PermanentError, n);
            return 0;
        };
        if let SinkState::Lines { writer, .. } = &mut self.sink {
            *writer = Some(w);
        }
        let outcome = match &result {
            Ok(()) => RequestOutcome::Success,
            Err(_) => RequestOutcome::PermanentError,
        };
        self.stats().record_request(outcome, started.elapsed());
        if let Err(e) = result {
            self.stats()
                .record_dropped(DropReason::PermanentError, n - written);
            if !self.log.failing {
                self.log.failing = true;
                tracing::warn!(error = %e, "export: cannot write spans");
            }
        }
        written
    }

    async fn flush_writer(&mut self) {
        let SinkState::Lines { writer, .. } = &mut self.sink else {
            return;
        };
        let Some(mut w) = writer.take() else {
            return;
        };
        let flushed = tokio::task::spawn_blocking(move || {
            let _ = w.flush();
            w
        })
        .await;
        if let (Ok(w), SinkState::Lines { writer, .. }) = (flushed, &mut self.sink) {
            *writer = Some(w);
        }
    }
}

/// A finished export task: only a panic has something to say (its spans stay counted as in
/// flight, which `/metrics` shows as an imbalance).
fn log_task_end(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done {
        tracing::error!(error = %e, "export: a batch task failed");
    }
}

/// The end of a batch's time: its export timeout, or the shutdown deadline if sooner. Also
/// says whether the shutdown deadline is the binding one.
fn limit(shutdown: &watch::Receiver<Option<Instant>>, batch_deadline: Instant) -> (Instant, bool) {
    match *shutdown.borrow() {
        Some(s) if s <= batch_deadline => (s, true),
        _ => (batch_deadline, false),
    }
}

/// Runs `fut` until it completes or the batch's time runs out (re-evaluated when a shutdown
/// sets an earlier deadline). `None` on running out.
async fn within<F: Future>(
    shutdown: &mut watch::Receiver<Option<Instant>>,
    batch_deadline: Instant,
    fut: F,
) -> Option<F::Output> {
    tokio::pin!(fut);
    let mut watching = true;
    loop {
        let (until, _) = limit(shutdown, batch_deadline);
        tokio::select! {
            out = &mut fut => return Some(out),
            _ = sleep_until(until) => return None,
            changed = shutdown.changed(), if watching => {
                // A dropped sender means no shutdown will come: stop watching.
                watching = changed.is_ok();
            }
        }
    }
}

impl OtlpExporter {
    fn stats(&self) -> &ExportStats {
        &self.shared.stats
    }

    /// Exports one batch of `n` spans with retries; returns how many spans the receiver
    /// accepted and counts the others as dropped.
    async fn export(
        &self,
        request: EncodedRequest,
        n: u64,
        mut shutdown: watch::Receiver<Option<Instant>>,
    ) -> u64 {
        let batch_deadline = Instant::now() + self.options.batch.export_timeout;
        let mut backoff = Backoff::new(&self.options.retry);
        let client = &self.client;
        let mut first = true;
        loop {
            let (until, by_shutdown) = limit(&shutdown, batch_deadline);
            let now = Instant::now();
            let out_of_time = if by_shutdown {
                DropReason::Shutdown
            } else {
                DropReason::RetriesExhausted
            };
            if now >= until {
                self.stats().record_dropped(out_of_time, n);
                return 0;
            }
            if !first {
                self.stats().record_retry();
            }
            first = false;
            let timeout = self.options.request_timeout.min(until - now);
            let started = Instant::now();
            let Some(result) = within(
                &mut shutdown,
                batch_deadline,
                client.export(&request, timeout),
            )
            .await
            else {
                let (_, by_shutdown) = limit(&shutdown, batch_deadline);
                let reason = if by_shutdown {
                    DropReason::Shutdown
                } else {
                    DropReason::RetriesExhausted
                };
                self.stats()
                    .record_request(RequestOutcome::RetryableError, started.elapsed());
                self.stats().record_dropped(reason, n);
                return 0;
            };
            let latency = started.elapsed();
            let err = match result {
                Ok(accepted) => {
                    let rejected = accepted.rejected_spans.min(n);
                    let outcome = if rejected > 0 {
                        RequestOutcome::PartialSuccess
                    } else {
                        RequestOutcome::Success
                    };
                    self.stats().record_request(outcome, latency);
                    if rejected > 0 {
                        self.stats().record_dropped(DropReason::Rejected, rejected);
                        if !self.rejected_warned.swap(true, Relaxed) {
                            tracing::warn!(
                                endpoint = %client.endpoint(),
                                rejected,
                                message = %accepted.message,
                                "export: the receiver rejected spans (partial success); counted as dropped{{reason=\"rejected\"}}"
                            );
                        }
                    }
                    if self.failing.swap(false, Relaxed) {
                        tracing::info!(endpoint = %client.endpoint(), "export: receiver accepts spans again");
                    }
                    return n - rejected;
                }
                Err(err) => err,
            };
            let class = err.class();
            let outcome = match class {
                Class::Permanent => RequestOutcome::PermanentError,
                Class::Retryable { .. } => RequestOutcome::RetryableError,
            };
            self.stats().record_request(outcome, latency);
            if !self.failing.swap(true, Relaxed) {
                tracing::warn!(error = %err, retryable = matches!(class, Class::Retryable { .. }), "export failing");
            } else {
                tracing::debug!(error = %err, "export attempt failed");
            }
            if class == Class::Permanent {
                self.stats().record_dropped(DropReason::PermanentError, n);
                return 0;
            }
            if !self.options.retry.enabled {
                self.stats().record_dropped(DropReason::RetriesExhausted, n);
                return 0;
            }
            let delay = backoff.next_delay(class);
            let (until, by_shutdown) = limit(&shutdown, batch_deadline);
            if Instant::now() + delay >= until {
                // Waiting would take us past the deadline: give up now rather than then.
                let reason = if by_shutdown {
                    DropReason::Shutdown
                } else {
                    DropReason::RetriesExhausted
                };
                self.stats().record_dropped(reason, n);
                return 0;
            }
            // Running out here is handled at the top of the loop.
            let _ = within(&mut shutdown, batch_deadline, tokio::time::sleep(delay)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::span::{Resource, SpanId, SpanKind, Status, TraceId};

    /// A writer the test can read back, optionally held shut until released.
    #[derive(Clone, Default)]
    struct SharedBuf {
        bytes: Arc<Mutex<Vec<u8>>>,
        gate: Arc<Mutex<Option<std::sync::mpsc::Receiver<()>>>>,
    }

    impl Write for SharedBuf {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if let Some(gate) = self.gate.lock().unwrap().take() {
                let _ = gate.recv();
            }
            self.bytes.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl SharedBuf {
        fn lines(&self) -> Vec<String> {
            String::from_utf8(self.bytes.lock().unwrap().clone())
                .unwrap()
                .lines()
                .map(str::to_owned)
                .collect()
        }
    }

    fn span(n: u8) -> Span {
        Span {
            trace_id: TraceId([n; 16]),
            span_id: SpanId([n; 8]),
            parent_span_id: None,
            trace_state: String::new(),
            flags: 1,
            name: format!("span-{n}"),
            kind: SpanKind::Server,
            start_unix_nanos: 1_000_000_000,
            end_unix_nanos: 1_002_000_000,
            attributes: Vec::new(),
            status: Status::default(),
            resource: Arc::new(Resource::default()),
        }
    }

    fn options(queue: usize, batch: usize, delay: Duration) -> PipelineOptions {
        PipelineOptions {
            batch: BatchConfig {
                schedule_delay: delay,
                export_timeout: Duration::from_secs(30),
                max_queue_size: queue,
                max_export_batch_size: batch,
                max_concurrent_exports: 4,
            },
            ..PipelineOptions::default()
        }
    }

    fn lines_pipeline(
        buf: &SharedBuf,
        format: LineFormat,
        opts: PipelineOptions,
    ) -> ExportPipeline {
        ExportPipeline::start(
            Sink::Lines {
                writer: Box::new(buf.clone()),
                format,
            },
            opts,
        )
    }

    async fn until(what: &str, mut f: impl FnMut() -> bool) {
        for _ in 0..3000 {
            if f() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("gave up waiting for {what}");
    }

    #[test]
    fn handles_can_move_between_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<SpanQueue>();
        send_sync::<ExportPipeline>();
        send_sync::<ExportStats>();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn jsonl_sink_writes_every_span_in_order() {
        let buf = SharedBuf::default();
        let p = lines_pipeline(
            &buf,
            LineFormat::Jsonl,
            options(16, 4, Duration::from_secs(3600)),
        );
        for n in 1..=6 {
            p.queue().try_send(span(n)).unwrap();
        }
        p.force_flush().await;
        let names: Vec<String> = buf
            .lines()
            .iter()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["name"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(
            names,
            ["span-1", "span-2", "span-3", "span-4", "span-5", "span-6"]
        );
        let s = p.shutdown(Duration::from_secs(5)).await;
        assert_eq!((s.created, s.exported, s.dropped_total()), (6, 6, 0));
        assert_eq!(
            s.requests(RequestOutcome::Success),
            2,
            "a batch of 4, then 2"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_batch_is_sent_without_waiting_for_the_timer() {
        let buf = SharedBuf::default();
        let p = lines_pipeline(
            &buf,
            LineFormat::Console(console::Options::default()),
            options(16, 4, Duration::from_secs(3600)),
        );
        for n in 1..=4 {
            p.queue().try_send(span(n)).unwrap();
        }
        until("the batch of 4", || buf.lines().len() == 4).await;
        assert!(
            buf.lines()[0].contains(" SERVER span-1 - - 2.0ms - "),
            "{:?}",
            buf.lines()
        );
        p.shutdown(Duration::from_secs(5)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_partial_batch_is_sent_when_the_timer_fires() {
        let buf = SharedBuf::default();
        let p = lines_pipeline(
            &buf,
            LineFormat::Jsonl,
            options(16, 8, Duration::from_millis(30)),
        );
        p.queue().try_send(span(1)).unwrap();
        until("the timer to send one span", || buf.lines().len() == 1).await;
        // The line is written before the batch is counted as exported.
        until("the span to be counted", || {
            p.stats().snapshot().exported == 1
        })
        .await;
        assert_eq!(buf.lines().len(), 1);
        p.shutdown(Duration::from_secs(5)).await;
    }

    /// While the sink is stuck, the queue fills to its bound and the rest is dropped without
    /// blocking the producer; when it resumes, what was queued is written.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn full_queue_drops_and_counts_without_blocking() {
        let (release, gate) = std::sync::mpsc::channel();
        let buf = SharedBuf::default();
        *buf.gate.lock().unwrap() = Some(gate);
        let p = lines_pipeline(
            &buf,
            LineFormat::Jsonl,
            options(4, 2, Duration::from_secs(3600)),
        );
        let stats = p.stats();
        p.queue().try_send(span(1)).unwrap();
        p.queue().try_send(span(2)).unwrap();
        until("the worker to hold the first batch", || {
            stats.snapshot().in_flight == 2
        })
        .await;
        let mut refused = 0;
        for n in 3..=12 {
            if let Err(reason) = p.queue().try_send(span(n)) {
                assert_eq!(reason, DropReason::QueueFull);
                refused += 1;
            }
        }
        assert_eq!(refused, 6);
        let s = stats.snapshot();
        assert_eq!((s.queue_len, s.in_flight, s.queue_peak), (4, 2, 4));
        assert_eq!(s.dropped(DropReason::QueueFull), 6);
        assert!(s.is_balanced(), "{s:?}");
        release.send(()).unwrap();
        p.force_flush().await;
        let s = p.shutdown(Duration::from_secs(5)).await;
        assert_eq!((s.created, s.exported, s.dropped_total()), (12, 6, 6));
        assert!(s.is_balanced());
        assert_eq!(buf.lines().len(), 6);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_writer_drops_as_permanent_error() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("disk full"))
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let p = ExportPipeline::start(
            Sink::Lines {
                writer: Box::new(Broken),
                format: LineFormat::Jsonl,
            },
            options(8, 4, Duration::from_secs(3600)),
        );
        for n in 1..=3 {
            p.queue().try_send(span(n)).unwrap();
        }
        let s = p.shutdown(Duration::from_secs(5)).await;
        assert_eq!(s.dropped(DropReason::PermanentError), 3);
        assert_eq!(s.exported, 0);
        assert!(s.is_balanced());
    }
}
