//! The one driver of the agent's userspace pipeline: events from an [`EventSource`] go through
//! connection tracking into a [`StreamSink`] (the span stage, then policy and outputs), and what
//! the kernel must be told goes through a [`KernelControl`]. Live capture drives it with the
//! ring buffer and the real probes (`crate::capture`); `sonde replay` and the unit tests drive
//! it with recorded events and [`NoKernel`], so everything after the kernel runs without root.

pub mod stages;
#[cfg(test)]
mod tests;

use std::time::Instant;

use stages::{Stage, StageTimes};

use crate::{
    conn::{CollectSink, ConnTracker, StreamSink},
    debug_view::DebugView,
    events::{DecodeErrors, Event, EventSource, ProcKind},
    span::{ResourceSource, SpanSink, SpanStage, SpanStats},
};

/// A stream sink whose counters the capture publishes, and which may need time to pass.
pub trait Observed {
    /// The span stage's counters, for sinks that build spans.
    fn span_stats(&self) -> SpanStats {
        SpanStats::default()
    }

    /// Called once per tick with the monotonic time.
    fn tick(&mut self, _now_ns: u64) {}
}

impl Observed for CollectSink {}

impl<W: std::io::Write> Observed for DebugView<W> {}

impl<O: SpanSink, R: ResourceSource> Observed for SpanStage<O, R> {
    fn span_stats(&self) -> SpanStats {
        self.stats().clone()
    }

    fn tick(&mut self, now_ns: u64) {
        SpanStage::tick(self, now_ns);
    }
}

/// What the pipeline tells the kernel side (probes, TLS uprobes, runtime checks).
pub trait KernelControl {
    /// Process `pid` opened (or was found with) a connection.
    fn connection(&mut self, _pid: u32) {}
    /// Process `pid` exec'd a new program.
    fn exec(&mut self, _pid: u32) {}
    /// Process `pid` is gone: the kernel may forget it and these sockets of it.
    fn process_gone(&mut self, _pid: u32, _fds: Vec<u32>) {}
    /// Time passes (monotonic ns).
    fn tick(&mut self, _now_ns: u64) {}
}

/// No kernel: replays and tests.
pub struct NoKernel;

impl KernelControl for NoKernel {}

/// Connection tracking and the sink it feeds, with the decode errors of the source.
pub struct Driver<S> {
    pub tracker: ConnTracker,
    pub sink: S,
    pub errors: DecodeErrors,
    /// Where the time of live batches goes ([`Driver::pull`]).
    pub stages: StageTimes,
    batch: Vec<Event>,
}

impl<S: StreamSink + Observed> Driver<S> {
    pub fn new(tracker: ConnTracker, sink: S) -> Self {
        Self {
            tracker,
            sink,
            errors: DecodeErrors::default(),
            stages: StageTimes::default(),
            batch: Vec::with_capacity(4096),
        }
    }

    /// One event.
    pub fn event(&mut self, ev: Event, kernel: &mut impl KernelControl) {
        let exec = match &ev {
            Event::ConnOpen(o) => {
                kernel.connection(o.meta.pid);
                None
            }
            Event::Proc(p) if p.kind == ProcKind::Exec => Some(p.meta.pid),
            _ => None,
        };
        let gone = self.tracker.handle(ev, &mut self.sink);
        // After the span stage has read the new program's /proc entry (a few small files):
        // the kernel side's checks read its binaries (TLS libraries, Go), which takes long
        // enough for a short-lived client to exit first.
        if let Some(pid) = exec {
            kernel.exec(pid);
        }
        if let Some((pid, fds)) = gone {
            kernel.process_gone(pid, fds);
        }
    }

    /// Waits for the source's next batch and handles it; `false` once the source is exhausted.
    /// Cancel-safe at its only await (before anything of the batch is handled).
    pub async fn pull(
        &mut self,
        source: &mut impl EventSource,
        kernel: &mut impl KernelControl,
    ) -> std::io::Result<bool> {
        let more = source.next_batch(&mut self.batch, &mut self.errors).await?;
        let mut batch = std::mem::take(&mut self.batch);
        let timed = self.stages.begin(batch.len(), Stage::Conn);
        for ev in batch.drain(..) {
            self.event(ev, kernel);
        }
        if timed {
            self.stages.end();
        }
        self.batch = batch;
        Ok(more)
    }

    /// Time passes: reorder windows and idle connections, then the sink and the kernel side.
    pub fn tick(&mut self, now_ns: u64, kernel: &mut impl KernelControl) {
        let started = Instant::now();
        self.tracker.tick(now_ns, &mut self.sink);
        self.sink.tick(now_ns);
        kernel.tick(now_ns);
        self.stages.tick_ns += started.elapsed().as_nanos() as u64;
    }

    /// Ends every connection still open (in flight exchanges end as `Shutdown`).
    pub fn shutdown(&mut self, now_ns: u64) {
        self.tracker.shutdown(now_ns, &mut self.sink);
    }

    /// Runs a finite source to its end, with time taken from the events (the latest syscall
    /// return seen), then shuts down at that time: replays of recordings and tests.
    pub async fn run_recorded(
        mut self,
        source: &mut impl EventSource,
        kernel: &mut impl KernelControl,
    ) -> std::io::Result<S> {
        let mut now = 0;
        loop {
            let more = source.next_batch(&mut self.batch, &mut self.errors).await?;
            let mut batch = std::mem::take(&mut self.batch);
            for ev in batch.drain(..) {
                let t = ev.meta().exit_ns;
                self.event(ev, kernel);
                if t > now {
                    now = t;
                    self.tick(now, kernel);
                }
            }
            self.batch = batch;
            if !more {
                break;
            }
        }
        self.shutdown(now);
        Ok(self.sink)
    }
}
