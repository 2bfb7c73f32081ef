//! Self-telemetry: every counter of every stage, rendered as Prometheus text for `/metrics`
//! and as JSON for `--summary-json`.
//!
//! The capture thread publishes a snapshot of its counters once per tick (the kernel's per-CPU
//! counters are read then); the HTTP server renders the latest snapshot together with the
//! exporter's live atomics. Counters only grow, so a scrape between two ticks is at most one
//! tick behind.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use serde_json::{Value, json};
use sonde_export::{prom, stats::ExportStats};

use crate::{
    conn::ConnStats,
    events::DecodeErrors,
    pipeline::stages::{Stage, StageTimes},
    probes::KernelCounters,
    span::SpanStats,
    tls::{AttachedFile, TlsStats},
};

/// Totals at the end of a capture (or at any time).
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub kernel: KernelCounters,
    pub conns: ConnStats,
    pub decode_errors: DecodeErrors,
    pub records: u64,
    pub conns_tracked: usize,
    /// What the TLS probes attached and detached.
    pub tls: TlsStats,
    /// Files with TLS probes attached at the time of the summary.
    pub tls_files: Vec<AttachedFile>,
    /// Where the capture thread's time went (sampled, see `pipeline::stages`).
    pub stages: StageTimes,
    /// Nanoseconds spent draining and decoding the ring buffer.
    pub decode_ns: u64,
}

impl Summary {
    /// Human-readable totals, one `name value` pair per line.
    pub fn lines(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .kernel
            .0
            .iter()
            .map(|(k, n)| format!("kernel.{k} {n}"))
            .collect();
        let c = &self.conns;
        for (k, n) in [
            ("conns.opened", c.opened),
            ("conns.discovered", c.discovered),
            ("conns.closed", c.closed),
            ("conns.evicted_idle", c.evicted_idle),
            ("conns.evicted_limit", c.evicted_limit),
            ("conns.ended_by_process_exit", c.ended_by_exit),
            ("conns.open_record_missing", c.open_missing),
            ("conns.roles_inferred", c.roles_inferred),
            ("conns.tls_switched", c.tls_switched),
            ("stream.tls_ciphertext_dropped", c.tls_ciphertext_dropped),
            ("stream.gap_not_captured_bytes", c.gap_not_captured_bytes),
            ("stream.gap_unreadable_bytes", c.gap_unreadable_bytes),
            ("stream.gap_lost_bytes", c.gap_lost_bytes),
            ("stream.gaps_lost", c.gaps_lost),
            ("stream.reordered", c.reordered),
            ("stream.resequenced", c.resequenced),
            ("stream.reorder_overflows", c.pending_overflows),
            ("tls.files_attached", self.tls.files_attached),
            ("tls.files_detached", self.tls.files_detached),
            ("tls.attach_failures", self.tls.attach_failures),
            ("tls.users_swept", self.tls.users_swept),
            ("events.records", self.records),
            ("events.decode_errors", self.decode_errors.total()),
            ("conns.tracked_now", self.conns_tracked as u64),
        ] {
            v.push(format!("{k} {n}"));
        }
        v
    }
}

/// What the capture thread last published.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub capture: Summary,
    pub spans: SpanStats,
    /// Run time and count of each kernel program (zero unless `kernel.bpf_stats_enabled`).
    pub programs: Vec<(String, Duration, u64)>,
}

/// Shared between the capture thread, the metrics server and `main`.
#[derive(Default)]
pub struct Telemetry {
    snapshot: Mutex<Snapshot>,
    /// Set once the kernel programs are attached: `/readyz` says 200 from then on.
    pub ready: Arc<AtomicBool>,
    export: Mutex<Option<Arc<ExportStats>>>,
    /// More families (span metrics, sampling), rendered after the agent's own.
    extras: Mutex<Vec<Renderer>>,
}

/// Writes families of another stage into an exposition.
pub type Renderer = Arc<dyn Fn(&mut prom::Writer) + Send + Sync>;

/// CPU seconds (user + system) and resident bytes of this process.
fn process_usage() -> (f64, u64) {
    // SAFETY: rusage is plain integers; all-zero is valid. (Not a struct literal: musl's
    // rusage has private reserved fields.)
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a rusage.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let cpu = ru.ru_utime.tv_sec as f64
        + ru.ru_utime.tv_usec as f64 / 1e6
        + ru.ru_stime.tv_sec as f64
        + ru.ru_stime.tv_usec as f64 / 1e6;
    let rss = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        // SAFETY: sysconf has no preconditions.
        .map_or(0, |pages| {
            pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64
        });
    (cpu, rss)
}

/// Nanoseconds per stage of the pipeline: measured (decode, tick, encode) or estimated from the
/// sampled batches (the others).
fn stage_ns(capture: &Summary, encode_ns: Option<u64>) -> Vec<(&'static str, u64)> {
    let mut v = vec![("decode", capture.decode_ns)];
    let est = capture.stages.estimated_ns();
    for (s, ns) in Stage::CHARGED.iter().zip(est) {
        v.push((s.name(), ns));
    }
    v.push(("tick", capture.stages.tick_ns));
    if let Some(e) = encode_ns {
        v.push(("encode", e));
    }
    v
}

impl Telemetry {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn publish(&self, snapshot: Snapshot) {
        if let Ok(mut s) = self.snapshot.lock() {
            *s = snapshot;
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        self.snapshot.lock().map(|s| s.clone()).unwrap_or_default()
    }

    pub fn set_export(&self, stats: Arc<ExportStats>) {
        if let Ok(mut e) = self.export.lock() {
            *e = Some(stats);
        }
    }

    /// Nanoseconds the exporter spent encoding, when it exports.
    fn encode_ns(&self) -> Option<u64> {
        self.export
            .lock()
            .ok()?
            .as_ref()
            .map(|e| e.snapshot().encode_ns)
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    /// Adds families to every rendering.
    pub fn add_renderer(&self, r: Renderer) {
        if let Ok(mut e) = self.extras.lock() {
            e.push(r);
        }
    }

    /// The whole `/metrics` body.
    pub fn render_prometheus(&self) -> String {
        self.render(prom::Writer::new())
    }

    /// The whole `/metrics` body as OpenMetrics (with exemplars).
    pub fn render_openmetrics(&self) -> String {
        self.render(prom::Writer::openmetrics())
    }

    fn render(&self, mut w: prom::Writer) -> String {
        let s = self.snapshot();
        let k = &s.capture.kernel;
        let c = &s.capture.conns;
        w.counter(
            "sonde_events_received_total",
            "Records read from the kernel ring buffer.",
        )
        .sample(&[], s.capture.records as f64);
        let encode_ns = self.encode_ns();
        let mut f = w.counter(
            "sonde_pipeline_stage_seconds_total",
            "Time of the agent's pipeline by stage: decode (ring buffer drain and decode), conn \
             (tracking, reassembly), parse (protocol detection and parsing), span (span \
             building and linking), policy (sampling, privacy, span metrics, export queue), \
             tick (timers), encode (OTLP export requests). conn, parse, span and policy are \
             estimated from one batch in 32.",
        );
        for (stage, ns) in stage_ns(&s.capture, encode_ns) {
            f = f.sample(&[("stage", stage)], ns as f64 / 1e9);
        }
        w.counter(
            "sonde_events_lost_total",
            "Records the kernel could not write because the ring buffer was full.",
        )
        .sample(&[], k.get(sonde_proto::Counter::RingbufFull) as f64);
        let mut f = w.counter(
            "sonde_bytes_total",
            "Bytes moved by traced syscalls: captured, not captured (truncated), and in records lost to a full ring buffer.",
        );
        for (kind, n) in [
            ("captured", k.get(sonde_proto::Counter::CapturedBytes)),
            ("truncated", k.get(sonde_proto::Counter::TruncatedBytes)),
            ("lost", k.get(sonde_proto::Counter::RingbufFullBytes)),
        ] {
            f = f.sample(&[("kind", kind)], n as f64);
        }
        let mut f = w.counter(
            "sonde_kernel_counter_total",
            "Every counter of the kernel programs, by name (summed over CPUs).",
        );
        for (name, n) in &k.0 {
            f = f.sample(&[("counter", name)], *n as f64);
        }
        w.counter(
            "sonde_decode_errors_total",
            "Kernel records that failed to decode.",
        )
        .sample(&[], s.capture.decode_errors.total() as f64);
        w.gauge("sonde_connections_tracked", "Connections tracked now.")
            .sample(&[], s.capture.conns_tracked as f64);
        w.counter(
            "sonde_connections_opened_total",
            "Connections that became known, by how.",
        )
        .sample(&[("source", "connect_or_accept")], c.opened as f64)
        .sample(&[("source", "discovered")], c.discovered as f64);
        w.counter(
            "sonde_connections_ended_total",
            "Connections no longer tracked, by why.",
        )
        .sample(&[("reason", "closed")], c.closed as f64)
        .sample(&[("reason", "process_exit")], c.ended_by_exit as f64)
        .sample(&[("reason", "evicted_idle")], c.evicted_idle as f64)
        .sample(&[("reason", "evicted_limit")], c.evicted_limit as f64);
        w.counter(
            "sonde_stream_gap_bytes_total",
            "Bytes of connection streams delivered as gaps, by reason.",
        )
        .sample(
            &[("reason", "not_captured")],
            c.gap_not_captured_bytes as f64,
        )
        .sample(&[("reason", "unreadable")], c.gap_unreadable_bytes as f64)
        .sample(&[("reason", "lost")], c.gap_lost_bytes as f64);
        w.counter(
            "sonde_stream_reordered_total",
            "Records put back in stream order (or resequenced after an offset race).",
        )
        .sample(&[("kind", "reordered")], c.reordered as f64)
        .sample(&[("kind", "resequenced")], c.resequenced as f64)
        .sample(&[("kind", "reorder_overflow")], c.pending_overflows as f64);
        let t = &s.capture.tls;
        w.gauge(
            "sonde_tls_files_attached",
            "Files (libssl, Go binaries) with TLS uprobes attached now.",
        )
        .sample(&[], s.capture.tls_files.len() as f64);
        w.counter(
            "sonde_tls_files_total",
            "TLS files by what happened to them: attached, detached (unused), failed to attach.",
        )
        .sample(&[("event", "attached")], t.files_attached as f64)
        .sample(&[("event", "detached")], t.files_detached as f64)
        .sample(&[("event", "attach_failed")], t.attach_failures as f64);
        let mut f = w.counter(
            "sonde_elf_refused_total",
            "ELF files (traced executables, TLS libraries) not inspected because they exceed the agent's limits, by inspector and reason; each file is logged once at warn with its path.",
        );
        for (inspector, reason, n) in crate::elfread::REFUSALS.samples() {
            f = f.sample(&[("inspector", inspector), ("reason", reason)], n as f64);
        }
        w.counter(
            "sonde_tls_users_swept_total",
            "Processes dropped from attached TLS files because they were gone without an exit seen.",
        )
        .sample(&[], t.users_swept as f64);
        let mut f = w.counter(
            "sonde_protocol_connections_total",
            "Connections by detected protocol.",
        );
        for (p, n) in &s.spans.conns_by_protocol {
            f = f.sample(&[("protocol", p)], *n as f64);
        }
        let mut f = w.counter(
            "sonde_parse_errors_total",
            "Protocol parse errors, by protocol and kind.",
        );
        for ((p, kind), n) in &s.spans.parse_errors {
            f = f.sample(&[("protocol", p), ("kind", kind)], *n as f64);
        }
        let mut f = w.counter(
            "sonde_incomplete_exchanges_total",
            "Requests without a complete response, by reason.",
        );
        for (reason, n) in &s.spans.incomplete {
            f = f.sample(&[("reason", reason)], *n as f64);
        }
        w.counter("sonde_spans_created_total", "Spans built from traffic.")
            .sample(&[], s.spans.spans_created as f64);
        let mut f = w.counter(
            "sonde_trace_links_total",
            "Spans by how their trace context was found (header, linked, ambiguous, adopted, new).",
        );
        for (how, n) in &s.spans.trace_links {
            f = f.sample(&[("link", how)], *n as f64);
        }
        w.counter(
            "sonde_h2_unrecovered_fields_total",
            "HTTP/2 header fields sonde could not decode (joined a connection late, missed a header block); never guessed.",
        )
        .sample(&[], s.spans.h2_unrecovered_fields as f64);
        w.counter(
            "sonde_h2c_upgrades_total",
            "Connections that switched from HTTP/1.1 to HTTP/2 with Upgrade: h2c.",
        )
        .sample(&[], s.spans.h2c_upgrades as f64);
        w.counter(
            "sonde_db_reported_by_client_total",
            "Database operations seen at a traced server whose traced client reported them (one span per operation).",
        )
        .sample(&[], s.spans.db_reported_by_client as f64);
        w.gauge(
            "sonde_trace_open_requests",
            "Server requests in progress that outgoing HTTP/2 calls of the same process may be linked to.",
        )
        .sample(&[], s.spans.links_open as f64);
        w.gauge(
            "sonde_trace_peer_contexts",
            "Contexts of HTTP/2 client streams kept for the server end of the connection.",
        )
        .sample(&[], s.spans.links_peers as f64);
        w.counter(
            "sonde_trace_context_dropped_total",
            "Userspace trace-context entries dropped at their bounds (their spans start new traces).",
        )
        .sample(&[], s.spans.links_dropped as f64);
        w.gauge(
            "sonde_conn_state_bytes",
            "Heap bytes of the parser state of all tracked connections (measured about once a second).",
        )
        .sample(&[], s.spans.state_bytes as f64);
        w.counter(
            "sonde_conn_state_evictions_total",
            "Connections whose parser state was dropped to stay within [capture] state_budget_bytes (parsed again from their next bytes).",
        )
        .sample(&[], s.spans.state_evictions as f64);
        w.counter(
            "sonde_conn_state_evicted_bytes_total",
            "Heap bytes of parser state dropped to stay within the budget.",
        )
        .sample(&[], s.spans.state_evicted_bytes as f64);
        let mut f = w.counter(
            "sonde_trace_injections_total",
            "Outgoing HTTP/1 requests by traceparent injection outcome.",
        );
        for (outcome, n) in &s.spans.injections {
            f = f.sample(&[("outcome", outcome)], *n as f64);
        }
        if let Some(e) = self.export.lock().ok().and_then(|e| e.clone()) {
            e.render_prometheus(&mut w);
        }
        let mut f = w.counter(
            "sonde_bpf_program_run_seconds_total",
            "Time the kernel spent in each sonde program (only while kernel.bpf_stats_enabled=1).",
        );
        for (name, t, _) in &s.programs {
            f = f.sample(&[("program", name)], t.as_secs_f64());
        }
        let mut f = w.counter(
            "sonde_bpf_program_runs_total",
            "Runs of each sonde program (only while kernel.bpf_stats_enabled=1).",
        );
        for (name, _, n) in &s.programs {
            f = f.sample(&[("program", name)], *n as f64);
        }
        let (cpu, rss) = process_usage();
        w.counter(
            "sonde_process_cpu_seconds_total",
            "CPU time (user + system) of the agent.",
        )
        .sample(&[], cpu);
        w.gauge(
            "sonde_process_resident_memory_bytes",
            "Resident memory of the agent.",
        )
        .sample(&[], rss as f64);
        let extras = self.extras.lock().map(|e| e.clone()).unwrap_or_default();
        for r in extras {
            r(&mut w);
        }
        w.finish()
    }

    /// Everything as one JSON document (`--summary-json`).
    pub fn summary_json(&self) -> Value {
        let s = self.snapshot();
        let export = self.export.lock().ok().and_then(|e| e.clone()).map(|e| {
            let x = e.snapshot();
            json!({
                "created": x.created,
                "exported": x.exported,
                "dropped": x.dropped.iter().map(|(r, n)| (r.as_str().to_owned(), json!(n))).collect::<serde_json::Map<_, _>>(),
                "retries": x.retries,
                "queued": x.queue_len,
                "in_flight": x.in_flight,
                "balanced": x.is_balanced(),
            })
        });
        let (cpu, rss) = process_usage();
        let st = &s.capture.stages;
        let stages = json!({
            "ns": stage_ns(&s.capture, self.encode_ns())
                .into_iter()
                .map(|(k, v)| (k.to_owned(), json!(v)))
                .collect::<serde_json::Map<_, _>>(),
            "batches": st.batches,
            "events": st.events,
            "sampled_batches": st.sampled_batches,
            "sampled_events": st.sampled_events,
        });
        json!({
            "stages": stages,
            "kernel": s.capture.kernel.0,
            "capture": s.capture.lines(),
            "spans": {
                "created": s.spans.spans_created,
                "by_protocol": s.spans.conns_by_protocol,
                "parse_errors": s.spans.parse_errors.iter().map(|((p, k), n)| (format!("{p}/{k}"), json!(n))).collect::<serde_json::Map<_, _>>(),
                "incomplete": s.spans.incomplete,
                "trace_links": s.spans.trace_links,
                "h2_unrecovered_fields": s.spans.h2_unrecovered_fields,
                "h2c_upgrades": s.spans.h2c_upgrades,
                "db_reported_by_client": s.spans.db_reported_by_client,
                "trace_context_dropped": s.spans.links_dropped,
                "injections": s.spans.injections,
                "conn_state_bytes": s.spans.state_bytes,
                "conn_state_evictions": s.spans.state_evictions,
                "conn_state_evicted_bytes": s.spans.state_evicted_bytes,
            },
            "export": export,
            "programs": s.programs.iter().map(|(n, t, c)| json!({"name": n, "run_time_ns": t.as_nanos() as u64, "run_count": c})).collect::<Vec<_>>(),
            "process": {"cpu_seconds": cpu, "rss_bytes": rss},
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elfread::{
        BoundedFile, Inspector, Limits, REFUSALS, Refusal,
        testelf::{Sec, build, write},
    };

    #[test]
    fn elf_refusals_are_on_metrics() {
        let elf = build(&[Sec::new(".data", object::elf::SHT_PROGBITS, vec![0; 64])]);
        let path = write("telemetry-truncated", &elf[..100]);
        let file = BoundedFile::open(&path, Limits::DEFAULT).unwrap();
        let r = Refusal::Truncated {
            offset: 200,
            size: 192,
            len: 100,
        };
        REFUSALS.record(Inspector::Runtime, &file, &path, r);
        let body = Telemetry::new().render_prometheus();
        let line = body
            .lines()
            .find(|l| {
                l.starts_with("sonde_elf_refused_total{")
                    && l.contains("inspector=\"runtime\"")
                    && l.contains("reason=\"truncated\"")
            })
            .unwrap_or_else(|| panic!("no runtime/truncated sample in:\n{body}"));
        let value: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(value >= 1.0, "{line}");
        assert!(
            body.contains("# TYPE sonde_elf_refused_total counter"),
            "{body}"
        );
    }
}
