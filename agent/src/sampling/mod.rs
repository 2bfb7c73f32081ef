//! Sampling: which spans leave the node.
//!
//! **Head** (decided where the trace starts, honoured downstream): a span with a parent
//! follows its parent's W3C `sampled` flag (the `traceparent` that came in, or the kernel's
//! decision for the server span it is linked to); a new root trace is kept when its trace id
//! falls under the ratio ([`sonde_proto::sampled_by_ratio`]). The kernel makes the same
//! decision for the roots it creates and writes it into the `traceparent` it injects, so every
//! service of a trace decides the same and the trace is kept or dropped whole. Overrides
//! ([`Rule`]) and a per-service rate limit refine the decision for roots in userspace.
//!
//! **Tail** (local, on top): a span the head would drop is kept when it is an error or slower
//! than a threshold, marked `sonde.sampling.tail`; spans of the same trace seen on this node
//! are held in a bounded buffer for a while so that they are kept with it.
//!
//! Every decision is counted ([`SamplingStats`]).

pub mod points;
pub mod sink;

use std::{
    collections::{HashMap, VecDeque},
    sync::atomic::{AtomicU64, Ordering::Relaxed},
    time::Duration,
};

use serde::Deserialize;
use sonde_model::{FLAG_SAMPLED, Span, SpanKind, StatusCode, TraceId, Value};
use sonde_proto::{SAMPLE_ALL, sampled_by_ratio};

use crate::privacy::route_of;

/// The `[sampling]` section of the config file.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SamplingSection {
    /// Fraction of new root traces kept, 0.0..=1.0. Default 1.0 (everything).
    pub ratio: Option<f64>,
    /// Follow the parent's `sampled` flag. Default true.
    pub parent_based: Option<bool>,
    /// Root traces kept per second per service (a token bucket, burst of one second). Default
    /// no limit.
    pub root_rate_limit: Option<f64>,
    /// Tail: keep error spans the head dropped. Default true.
    pub keep_errors: Option<bool>,
    /// Tail: keep spans at least this slow (ms) the head dropped. Default none.
    pub keep_slower_than_ms: Option<u64>,
    /// Tail: spans held while their trace may still be kept. Default 4096.
    pub tail_buffer_spans: Option<usize>,
    /// Tail: how long a held span waits (ms). Default 5000.
    pub tail_wait_ms: Option<u64>,
    /// Overrides for root spans, first match wins.
    #[serde(default)]
    pub rules: Vec<RuleSection>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuleSection {
    /// `service.name` of the root span. Default any.
    pub service: Option<String>,
    /// Its route (`http.route` or `rpc.service/rpc.method`; `prefix*`). Default any.
    pub route: Option<String>,
    /// Fraction kept, 0.0..=1.0.
    pub ratio: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum SamplingError {
    #[error("{field} = {value}: a sampling ratio is between 0.0 and 1.0 (e.g. 0.1 keeps 10%)")]
    Ratio { field: String, value: f64 },
    #[error("[sampling] root_rate_limit = {0}: give a positive number of traces per second")]
    RateLimit(f64),
    #[error("[[sampling.rules]] #{0} matches everything: give a service, a route or both")]
    RuleMatchesAll(usize),
    #[error(
        "OTEL_TRACES_SAMPLER={0}: sonde supports always_on, always_off, traceidratio, \
         parentbased_always_on, parentbased_always_off, parentbased_traceidratio"
    )]
    Sampler(String),
    #[error("OTEL_TRACES_SAMPLER_ARG={0}: expected a ratio between 0.0 and 1.0")]
    SamplerArg(String),
}

/// One override.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    pub service: Option<String>,
    pub route: Option<String>,
    pub ratio: f64,
}

/// Resolved sampling configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingConfig {
    pub ratio: f64,
    pub parent_based: bool,
    pub root_rate_limit: Option<f64>,
    pub rules: Vec<Rule>,
    pub keep_errors: bool,
    pub keep_slower_than: Option<Duration>,
    pub tail_buffer_spans: usize,
    pub tail_wait: Duration,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        Self {
            ratio: 1.0,
            parent_based: true,
            root_rate_limit: None,
            rules: Vec::new(),
            keep_errors: true,
            keep_slower_than: None,
            tail_buffer_spans: 4096,
            tail_wait: Duration::from_secs(5),
        }
    }
}

fn check_ratio(field: impl Into<String>, value: f64) -> Result<f64, SamplingError> {
    if (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err(SamplingError::Ratio {
            field: field.into(),
            value,
        })
    }
}

/// `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG` as (ratio, parent_based).
pub fn from_otel_env(
    sampler: Option<&str>,
    arg: Option<&str>,
) -> Result<(Option<f64>, Option<bool>), SamplingError> {
    let Some(sampler) = sampler else {
        return Ok((None, None));
    };
    let ratio = || match arg {
        None => Ok(1.0),
        Some(a) => a
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|r| (0.0..=1.0).contains(r))
            .ok_or_else(|| SamplingError::SamplerArg(a.to_owned())),
    };
    Ok(match sampler.trim() {
        "always_on" => (Some(1.0), Some(false)),
        "always_off" => (Some(0.0), Some(false)),
        "traceidratio" => (Some(ratio()?), Some(false)),
        "parentbased_always_on" => (Some(1.0), Some(true)),
        "parentbased_always_off" => (Some(0.0), Some(true)),
        "parentbased_traceidratio" => (Some(ratio()?), Some(true)),
        other => return Err(SamplingError::Sampler(other.to_owned())),
    })
}

impl SamplingConfig {
    /// From the file section; `ratio` and `parent_based` given by the environment or flags
    /// win over it.
    pub fn resolve(
        s: &SamplingSection,
        ratio: Option<f64>,
        parent_based: Option<bool>,
    ) -> Result<Self, SamplingError> {
        let d = Self::default();
        let ratio = match ratio {
            Some(r) => check_ratio("--sampling-ratio", r)?,
            None => check_ratio("[sampling] ratio", s.ratio.unwrap_or(d.ratio))?,
        };
        if let Some(l) = s.root_rate_limit
            && !(l > 0.0 && l.is_finite())
        {
            return Err(SamplingError::RateLimit(l));
        }
        let mut rules = Vec::new();
        for (i, r) in s.rules.iter().enumerate() {
            if r.service.is_none() && r.route.is_none() {
                return Err(SamplingError::RuleMatchesAll(i + 1));
            }
            rules.push(Rule {
                service: r.service.clone(),
                route: r.route.clone(),
                ratio: check_ratio(format!("[[sampling.rules]] #{} ratio", i + 1), r.ratio)?,
            });
        }
        Ok(Self {
            ratio,
            parent_based: parent_based.or(s.parent_based).unwrap_or(d.parent_based),
            root_rate_limit: s.root_rate_limit,
            rules,
            keep_errors: s.keep_errors.unwrap_or(d.keep_errors),
            keep_slower_than: s.keep_slower_than_ms.map(Duration::from_millis),
            tail_buffer_spans: s.tail_buffer_spans.unwrap_or(d.tail_buffer_spans),
            tail_wait: s.tail_wait_ms.map_or(d.tail_wait, Duration::from_millis),
        })
    }

    /// The kernel's threshold for new roots (the global ratio).
    pub fn kernel_threshold(&self) -> u64 {
        threshold(self.ratio)
    }

    /// The same decision for new roots made in userspace.
    pub fn root_sampler(&self) -> RootSampler {
        RootSampler::ratio(self.ratio)
    }
}

/// The head-sampling decision for new root traces made in userspace (HTTP/2 calls, exchanges
/// without a kernel context): the kernel's own rule and threshold, as a value handed to the span
/// stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RootSampler {
    threshold: u64,
}

impl Default for RootSampler {
    fn default() -> Self {
        Self {
            threshold: SAMPLE_ALL,
        }
    }
}

impl RootSampler {
    /// Keeps `ratio` of new roots (0.0 to 1.0).
    pub fn ratio(ratio: f64) -> Self {
        Self {
            threshold: threshold(ratio),
        }
    }

    /// W3C flags of a new root trace: the same decision as the kernel's.
    pub fn flags(&self, trace_id: &TraceId) -> u8 {
        u8::from(sampled_by_ratio(&trace_id.0, self.threshold))
    }
}

/// ratio × 2^63, the threshold of [`sampled_by_ratio`].
pub fn threshold(ratio: f64) -> u64 {
    if ratio >= 1.0 {
        SAMPLE_ALL
    } else if ratio <= 0.0 {
        0
    } else {
        (ratio * SAMPLE_ALL as f64) as u64
    }
}

/// Why the head decided what it did (the `by` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HeadBy {
    Parent,
    Ratio,
    Rule,
    RateLimit,
}

impl HeadBy {
    pub const ALL: [Self; 4] = [Self::Parent, Self::Ratio, Self::Rule, Self::RateLimit];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Parent => "parent",
            Self::Ratio => "ratio",
            Self::Rule => "rule",
            Self::RateLimit => "rate_limit",
        }
    }
}

/// What became of spans the head did not keep.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TailOutcome {
    /// Kept: an error.
    KeptError,
    /// Kept: slower than the threshold.
    KeptSlow,
    /// Kept: another span of its trace on this node was kept by the tail.
    KeptTrace,
    /// Dropped: waited in the buffer, nothing kept its trace.
    Expired,
    /// Dropped: pushed out of a full buffer.
    BufferFull,
    /// Dropped at shutdown while held.
    Shutdown,
}

impl TailOutcome {
    pub const ALL: [Self; 6] = [
        Self::KeptError,
        Self::KeptSlow,
        Self::KeptTrace,
        Self::Expired,
        Self::BufferFull,
        Self::Shutdown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::KeptError => "kept_error",
            Self::KeptSlow => "kept_slow",
            Self::KeptTrace => "kept_trace",
            Self::Expired => "dropped_expired",
            Self::BufferFull => "dropped_buffer_full",
            Self::Shutdown => "dropped_shutdown",
        }
    }

    /// The `sonde.sampling.tail` attribute of a kept span.
    pub fn attr(self) -> Option<&'static str> {
        match self {
            Self::KeptError => Some("error"),
            Self::KeptSlow => Some("slow"),
            Self::KeptTrace => Some("trace"),
            _ => None,
        }
    }
}

/// Sampling counters (atomics: the capture thread writes, `/metrics` reads).
#[derive(Debug, Default)]
pub struct SamplingStats {
    /// `[by][sampled]`.
    head: [[AtomicU64; 2]; HeadBy::ALL.len()],
    tail: [AtomicU64; TailOutcome::ALL.len()],
    pub held: AtomicU64,
    /// Spans dropped by the privacy policy's `drop_routes`.
    pub policy_dropped: AtomicU64,
}

impl SamplingStats {
    pub fn head(&self, by: HeadBy, sampled: bool) -> u64 {
        let i = HeadBy::ALL.iter().position(|b| *b == by).unwrap_or(0);
        self.head[i][usize::from(sampled)].load(Relaxed)
    }

    pub fn tail(&self, o: TailOutcome) -> u64 {
        let i = TailOutcome::ALL.iter().position(|b| *b == o).unwrap_or(0);
        self.tail[i].load(Relaxed)
    }

    fn count_head(&self, by: HeadBy, sampled: bool) {
        let i = HeadBy::ALL.iter().position(|b| *b == by).unwrap_or(0);
        self.head[i][usize::from(sampled)].fetch_add(1, Relaxed);
    }

    fn count_tail(&self, o: TailOutcome, n: u64) {
        let i = TailOutcome::ALL.iter().position(|b| *b == o).unwrap_or(0);
        self.tail[i].fetch_add(n, Relaxed);
    }

    pub fn render(&self, w: &mut sonde_export::prom::Writer) {
        let mut f = w.counter(
            "sonde_sampling_head_decisions_total",
            "Head-sampling decisions per span: sampled or not, and by what (parent flag, ratio, rule, rate limit).",
        );
        for by in HeadBy::ALL {
            for (sampled, label) in [(true, "sampled"), (false, "not_sampled")] {
                f = f.sample(
                    &[("decision", label), ("by", by.as_str())],
                    self.head(by, sampled) as f64,
                );
            }
        }
        let mut f = w.counter(
            "sonde_sampling_tail_total",
            "Spans the head did not keep, by what the tail did with them.",
        );
        for o in TailOutcome::ALL {
            f = f.sample(&[("outcome", o.as_str())], self.tail(o) as f64);
        }
        w.gauge(
            "sonde_sampling_tail_held_spans",
            "Spans held while their trace may still be kept by the tail.",
        )
        .sample(&[], self.held.load(Relaxed) as f64);
        w.counter(
            "sonde_privacy_spans_dropped_total",
            "Spans never exported because of [privacy] drop_routes.",
        )
        .sample(&[], self.policy_dropped.load(Relaxed) as f64);
    }
}

/// A token bucket per service for root traces.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at_ns: u64,
}

/// Head decisions.
#[derive(Debug)]
pub struct Sampler {
    config: SamplingConfig,
    global: u64,
    rules: Vec<(Rule, u64)>,
    buckets: HashMap<String, Bucket>,
}

const MAX_BUCKETS: usize = 4096;

impl Sampler {
    pub fn new(config: SamplingConfig) -> Self {
        Self {
            global: threshold(config.ratio),
            rules: config
                .rules
                .iter()
                .map(|r| (r.clone(), threshold(r.ratio)))
                .collect(),
            config,
            buckets: HashMap::new(),
        }
    }

    pub fn config(&self) -> &SamplingConfig {
        &self.config
    }

    /// The head decision for one span (`now_ns` monotonic, for the rate limit).
    pub fn head(&mut self, span: &Span, now_ns: u64) -> (bool, HeadBy) {
        if span.parent_span_id.is_some() && self.config.parent_based {
            return (span.flags & FLAG_SAMPLED != 0, HeadBy::Parent);
        }
        let service = span.resource.service_name().unwrap_or("").to_owned();
        let rule = (span.parent_span_id.is_none())
            .then(|| {
                let route = route_of(span);
                self.rules.iter().find(|(r, _)| {
                    r.service.as_deref().is_none_or(|s| s == service)
                        && r.route.as_deref().is_none_or(|p| {
                            route
                                .as_deref()
                                .is_some_and(|route| match p.strip_suffix('*') {
                                    Some(prefix) => route.starts_with(prefix),
                                    None => route == p,
                                })
                        })
                })
            })
            .flatten();
        let (sampled, by) = match rule {
            Some((_, t)) => (sampled_by_ratio(&span.trace_id.0, *t), HeadBy::Rule),
            None => (
                sampled_by_ratio(&span.trace_id.0, self.global),
                HeadBy::Ratio,
            ),
        };
        if !sampled || span.parent_span_id.is_some() {
            return (sampled, by);
        }
        let limit = self.config.root_rate_limit;
        match limit {
            Some(limit) if !self.take_token(&service, limit, now_ns) => (false, HeadBy::RateLimit),
            _ => (true, by),
        }
    }

    fn take_token(&mut self, service: &str, limit: f64, now_ns: u64) -> bool {
        if !self.buckets.contains_key(service) && self.buckets.len() >= MAX_BUCKETS {
            self.buckets.clear();
        }
        let b = self.buckets.entry(service.to_owned()).or_insert(Bucket {
            tokens: limit,
            at_ns: now_ns,
        });
        let elapsed = now_ns.saturating_sub(b.at_ns) as f64 / 1e9;
        b.tokens = (b.tokens + elapsed * limit).min(limit.max(1.0));
        b.at_ns = now_ns;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Why the tail would keep a span the head dropped, if it would.
    pub fn tail_reason(&self, span: &Span) -> Option<TailOutcome> {
        if self.config.keep_errors && span.status.code == StatusCode::Error {
            return Some(TailOutcome::KeptError);
        }
        match self.config.keep_slower_than {
            Some(t) if span.duration_nanos() >= t.as_nanos() as u64 => Some(TailOutcome::KeptSlow),
            _ => None,
        }
    }
}

/// Spans held by the tail, by trace, oldest first; and traces the tail decided to keep.
#[derive(Debug)]
pub struct TailBuffer<T> {
    by_trace: HashMap<TraceId, Vec<T>>,
    /// (trace, when its first held span arrived), in arrival order.
    order: VecDeque<(TraceId, u64)>,
    held: usize,
    max: usize,
    wait_ns: u64,
    /// Traces kept by the tail on this node, until when (monotonic ns).
    kept: HashMap<TraceId, u64>,
    kept_order: VecDeque<TraceId>,
}

impl<T> TailBuffer<T> {
    pub fn new(max: usize, wait: Duration) -> Self {
        Self {
            by_trace: HashMap::new(),
            order: VecDeque::new(),
            held: 0,
            max: max.max(1),
            wait_ns: wait.as_nanos() as u64,
            kept: HashMap::new(),
            kept_order: VecDeque::new(),
        }
    }

    pub fn held(&self) -> usize {
        self.held
    }

    /// Whether the tail kept this trace a moment ago.
    pub fn is_kept(&self, trace: &TraceId, now_ns: u64) -> bool {
        self.kept.get(trace).is_some_and(|until| *until > now_ns)
    }

    /// The tail keeps `trace`: returns the spans held for it.
    pub fn keep(&mut self, trace: TraceId, now_ns: u64) -> Vec<T> {
        if self.kept.insert(trace, now_ns + self.wait_ns).is_none() {
            self.kept_order.push_back(trace);
            while self.kept_order.len() > self.max {
                if let Some(t) = self.kept_order.pop_front() {
                    self.kept.remove(&t);
                }
            }
        }
        let out = self.by_trace.remove(&trace).unwrap_or_default();
        self.held -= out.len();
        out
    }

    /// Holds a span; returns what a full buffer pushed out.
    pub fn hold(&mut self, trace: TraceId, item: T, now_ns: u64) -> Vec<T> {
        let mut evicted = Vec::new();
        while self.held >= self.max {
            match self.order.pop_front() {
                Some((t, _)) => {
                    if let Some(v) = self.by_trace.remove(&t) {
                        self.held -= v.len();
                        evicted.extend(v);
                    }
                }
                None => break,
            }
        }
        let entry = self.by_trace.entry(trace).or_default();
        if entry.is_empty() {
            self.order.push_back((trace, now_ns));
        }
        entry.push(item);
        self.held += 1;
        evicted
    }

    /// Spans whose wait is over.
    pub fn expire(&mut self, now_ns: u64) -> Vec<T> {
        let mut out = Vec::new();
        while let Some(&(t, at)) = self.order.front() {
            // Entries of traces kept or evicted meanwhile are stale: skip them.
            let live = self.by_trace.contains_key(&t);
            if live && now_ns.saturating_sub(at) < self.wait_ns {
                break;
            }
            self.order.pop_front();
            if let Some(v) = self.by_trace.remove(&t) {
                self.held -= v.len();
                out.extend(v);
            }
        }
        while let Some(t) = self.kept_order.front() {
            if self.kept.get(t).is_some_and(|u| *u > now_ns) {
                break;
            }
            if let Some(t) = self.kept_order.pop_front() {
                self.kept.remove(&t);
            }
        }
        out
    }

    /// Everything held (shutdown).
    pub fn drain(&mut self) -> Vec<T> {
        self.order.clear();
        self.held = 0;
        self.by_trace.drain().flat_map(|(_, v)| v).collect()
    }
}

/// Whether a span is an RPC (gRPC) span.
pub(crate) fn is_rpc(span: &Span) -> bool {
    matches!(span.attr("rpc.system"), Some(Value::Str(_)))
}

pub(crate) fn is_client(span: &Span) -> bool {
    span.kind == SpanKind::Client
}

#[cfg(test)]
mod tests;
