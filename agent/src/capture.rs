//! The live capture pipeline: kernel programs → ring buffer → typed events → reassembled
//! streams handed to a [`StreamSink`].
//!
//! [`Capture::spawn`] runs it on a thread of its own (with a single-threaded tokio runtime) until
//! stopped, which is what `sonde run` and the privileged tests use.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::Duration,
};

use tokio::sync::oneshot;

use crate::{
    clock::monotonic_ns,
    conn::{ConnTracker, Limits, StreamSink},
    events::RingBufSource,
    pipeline::{Driver, KernelControl},
    probes::{ProbeConfig, ProbeError, Probes},
    procfs::Procfs,
    telemetry::{Snapshot, Telemetry},
    tls::TlsTracker,
};
pub use crate::{pipeline::Observed, telemetry::Summary};
use sonde_proto::Decision;

/// Per-cgroup decisions that change while the capture runs (the Kubernetes toggle): the
/// writer publishes the whole desired set; the capture applies the difference to the kernel's
/// cgroup map on its next tick.
#[derive(Clone, Debug, Default)]
pub struct CgroupUpdates {
    inner: Arc<Mutex<(u64, BTreeMap<u64, Decision>)>>,
}

impl CgroupUpdates {
    /// Replaces the desired set (cgroup id → decision); cgroups left out get no decision.
    pub fn set(&self, desired: BTreeMap<u64, Decision>) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if g.1 != desired {
            g.0 += 1;
            g.1 = desired;
        }
    }

    /// The version and set, if newer than `seen`.
    fn newer(&self, seen: u64) -> Option<(u64, BTreeMap<u64, Decision>)> {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        (g.0 != seen).then(|| (g.0, g.1.clone()))
    }
}

/// Applies the newest desired cgroup set to the kernel.
#[derive(Default)]
struct AppliedCgroups {
    version: u64,
    applied: BTreeMap<u64, Decision>,
}

impl AppliedCgroups {
    fn sync(&mut self, updates: &CgroupUpdates, probes: &mut Probes) {
        let Some((version, desired)) = updates.newer(self.version) else {
            return;
        };
        let mut failed = false;
        for (&id, &d) in &desired {
            if self.applied.get(&id) != Some(&d) && probes.set_cgroup(id, d).is_err() {
                failed = true;
            }
        }
        for &id in self.applied.keys() {
            if !desired.contains_key(&id) && probes.set_cgroup(id, Decision::Unset).is_err() {
                failed = true;
            }
        }
        if failed {
            tracing::warn!("could not write every cgroup decision to the kernel; retrying");
            self.applied.clear();
            return;
        }
        tracing::debug!("traced cgroups: {} (version {version})", desired.len());
        self.version = version;
        self.applied = desired;
    }
}

#[derive(Clone, Debug)]
pub struct CaptureConfig {
    /// Cgroup decisions that change at runtime, applied every tick.
    pub cgroup_updates: Option<CgroupUpdates>,
    pub probes: ProbeConfig,
    pub limits: Limits,
    /// Longest time an event waits in the ring buffer on a quiet host.
    pub poll_interval: Duration,
    /// How often reorder windows and idle connections are checked.
    pub tick_interval: Duration,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        Self {
            cgroup_updates: None,
            probes: ProbeConfig::default(),
            limits: Limits::default(),
            poll_interval: Duration::from_millis(20),
            tick_interval: Duration::from_millis(100),
        }
    }
}

/// A running capture on its own thread.
pub struct CaptureHandle<S> {
    stop: Option<oneshot::Sender<()>>,
    ready: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<Result<(S, Summary), CaptureError>>>,
}

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error(transparent)]
    Probes(#[from] Box<ProbeError>),
    #[error("reading the ring buffer: {0}")]
    Io(#[from] std::io::Error),
    #[error("the capture thread panicked")]
    Panicked,
    #[error("the ring buffer was already taken")]
    NoRing,
}

impl<S: StreamSink + Observed + Send + 'static> CaptureHandle<S> {
    /// Whether the programs are attached (events from now on are seen).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Blocks until the programs are attached, or the capture failed to start.
    pub fn wait_ready(&mut self) -> Result<(), CaptureError> {
        while !self.is_ready() {
            if self.thread.as_ref().is_some_and(|t| t.is_finished()) {
                return match self.thread.take().map(thread::JoinHandle::join) {
                    Some(Ok(Err(e))) => Err(e),
                    _ => Err(CaptureError::Panicked),
                };
            }
            thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    /// Stops the capture after draining what the kernel already wrote, and returns the sink.
    pub fn stop(mut self) -> Result<(S, Summary), CaptureError> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        match self.thread.take().map(thread::JoinHandle::join) {
            Some(Ok(r)) => r,
            _ => Err(CaptureError::Panicked),
        }
    }
}

pub struct Capture;

impl Capture {
    /// Loads the programs and runs the pipeline on a new thread, feeding `sink`.
    pub fn spawn<S: StreamSink + Observed + Send + 'static>(
        config: CaptureConfig,
        sink: S,
    ) -> CaptureHandle<S> {
        Self::spawn_with(config, sink, None)
    }

    /// As [`Capture::spawn`], publishing counters to `telemetry` once per tick.
    pub fn spawn_with<S: StreamSink + Observed + Send + 'static>(
        config: CaptureConfig,
        sink: S,
        telemetry: Option<Arc<Telemetry>>,
    ) -> CaptureHandle<S> {
        let (tx, rx) = oneshot::channel();
        let ready = Arc::new(AtomicBool::new(false));
        let ready2 = ready.clone();
        let thread = thread::Builder::new()
            .name("sonde-capture".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(run(config, sink, rx, ready2, telemetry))
            })
            .expect("spawning the capture thread");
        CaptureHandle {
            stop: Some(tx),
            ready,
            thread: Some(thread),
        }
    }
}

/// Processes whose runtime was looked at (Go processes are marked unlinkable in the kernel).
#[derive(Default)]
struct Runtimes {
    seen: std::collections::HashSet<u32>,
}

impl Runtimes {
    fn check(&mut self, pid: u32, probes: &mut Probes) {
        if self.seen.len() > 65_536 {
            self.seen.clear();
        }
        if !self.seen.insert(pid) {
            return;
        }
        let exe = std::path::PathBuf::from(format!("/proc/{pid}/exe"));
        if crate::enrich::runtime::is_go_binary(&exe) {
            if let Err(e) = probes.mark_no_link(pid) {
                tracing::debug!("cannot mark Go process {pid}: {e}");
            } else {
                tracing::debug!(
                    "process {pid} is a Go program: its outgoing requests are not linked"
                );
            }
        }
    }

    fn forget(&mut self, pid: u32) {
        self.seen.remove(&pid);
    }
}

/// The kernel side of live capture: the probes, the TLS uprobes, runtime checks and the
/// traced cgroups.
struct LiveKernel {
    probes: Probes,
    tls: TlsTracker,
    runtimes: Runtimes,
    cgroups: AppliedCgroups,
    updates: Option<CgroupUpdates>,
    /// Draining after a stop: no new attachments.
    stopping: bool,
}

impl KernelControl for LiveKernel {
    fn connection(&mut self, pid: u32) {
        if !self.stopping {
            self.runtimes.check(pid, &mut self.probes);
            self.tls.connection(&mut self.probes, pid, monotonic_ns());
        }
    }

    fn exec(&mut self, pid: u32) {
        if !self.stopping {
            self.tls.exec(&mut self.probes, pid, monotonic_ns());
        }
    }

    fn process_gone(&mut self, pid: u32, fds: Vec<u32>) {
        self.runtimes.forget(pid);
        self.tls.exit(&mut self.probes, pid);
        self.probes.forget_process(pid, fds);
    }

    fn tick(&mut self, now_ns: u64) {
        if let Some(u) = &self.updates {
            self.cgroups.sync(u, &mut self.probes);
        }
        self.tls.tick(&mut self.probes, now_ns);
    }
}

fn summarize<S>(kernel: &LiveKernel, driver: &Driver<S>, source: &RingBufSource) -> Summary {
    Summary {
        kernel: kernel.probes.counters(),
        conns: driver.tracker.stats.clone(),
        decode_errors: driver.errors.clone(),
        records: source.records,
        conns_tracked: driver.tracker.len(),
        tls: kernel.tls.stats.clone(),
        tls_files: kernel.tls.attached(),
        stages: driver.stages.clone(),
        decode_ns: source.decode_ns,
    }
}

fn publish<S: Observed>(
    telemetry: Option<&Arc<Telemetry>>,
    probes: &Probes,
    summary: Summary,
    sink: &S,
) {
    if let Some(t) = telemetry {
        t.publish(Snapshot {
            capture: summary,
            spans: sink.span_stats(),
            programs: probes.program_stats(),
        });
    }
}

/// Hands the heap that start-up used and freed (kernel BTF parsed by aya, ELF inspection of
/// TLS libraries) back to the system: glibc keeps it otherwise, and it would count in the
/// agent's RSS for its whole life. musl returns large frees by itself.
fn release_startup_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The pipeline loop: events until `stop` fires, then a final drain.
pub async fn run<S: StreamSink + Observed>(
    config: CaptureConfig,
    sink: S,
    mut stop: oneshot::Receiver<()>,
    ready: Arc<AtomicBool>,
    telemetry: Option<Arc<Telemetry>>,
) -> Result<(S, Summary), CaptureError> {
    let mut probes = Probes::load(&config.probes).map_err(Box::new)?;
    let ring = probes.take_events().ok_or(CaptureError::NoRing)?;
    let mut source = RingBufSource::new(ring, config.poll_interval)?;
    let procfs = Procfs::default();
    let tracker = ConnTracker::new(
        config.limits.clone(),
        Box::new(move |c| match c.local {
            Some(local) => procfs.role_of(c.pid, c.netns, local),
            None => sonde_proto::Role::Unknown,
        }),
    );
    let mut driver = Driver::new(tracker, sink);
    let mut tick = tokio::time::interval(config.tick_interval);
    // The traced set first (the TLS scan looks at traced processes only), then the TLS
    // libraries of running processes, before sonde says it is ready.
    let mut kernel = LiveKernel {
        probes,
        tls: TlsTracker::default(),
        runtimes: Runtimes::default(),
        cgroups: AppliedCgroups::default(),
        updates: config.cgroup_updates.clone(),
        stopping: false,
    };
    if let Some(u) = &kernel.updates {
        kernel.cgroups.sync(u, &mut kernel.probes);
    }
    kernel.tls.start(&mut kernel.probes);
    release_startup_memory();
    ready.store(true, Ordering::Release);
    if let Some(t) = &telemetry {
        t.set_ready(true);
    }
    tracing::info!(
        "kernel programs attached in {:?}; capturing {} bytes per syscall",
        kernel.probes.load_time,
        config.probes.capture_bytes
    );
    let mut ticks: u64 = 0;
    loop {
        tokio::select! {
            r = driver.pull(&mut source, &mut kernel) => {
                r?;
            }
            _ = tick.tick() => {
                driver.tick(monotonic_ns(), &mut kernel);
                ticks += 1;
                // Counters for /metrics about once a second.
                if ticks.is_multiple_of(10) {
                    let summary = summarize(&kernel, &driver, &source);
                    publish(telemetry.as_ref(), &kernel.probes, summary, &driver.sink);
                }
            }
            _ = &mut stop => break,
        }
    }
    // Whatever the kernel wrote before the stop is still delivered: wait one poll interval
    // for in-flight records, then drain.
    kernel.stopping = true;
    tokio::time::sleep(config.poll_interval).await;
    loop {
        let before = source.records;
        let drained = tokio::time::timeout(
            Duration::from_millis(1),
            driver.pull(&mut source, &mut kernel),
        )
        .await;
        if source.records == before || drained.is_err() {
            break;
        }
    }
    let summary = summarize(&kernel, &driver, &source);
    driver.shutdown(monotonic_ns());
    publish(
        telemetry.as_ref(),
        &kernel.probes,
        summary.clone(),
        &driver.sink,
    );
    if let Some(t) = &telemetry {
        t.set_ready(false);
    }
    Ok((driver.sink, summary))
}
