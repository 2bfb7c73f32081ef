//! The trace view's memory: the most recent traces, assembled from spans in whatever order
//! they finish (a server span usually ends, and arrives, before the client span that caused
//! it), bounded in traces and in spans.
//!
//! Traces are evicted oldest first (by when their first span arrived) once either bound is
//! passed; a span that arrives for an evicted trace starts it again, partial. A trace that
//! already holds [`Limits::spans_per_trace`] spans takes no more (counted). Everything is
//! assembled when read, so a late child simply appears under its parent at the next read.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use crate::span::{Span, SpanId, StatusCode, TraceId, Value};

/// The store's bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Traces kept.
    pub traces: usize,
    /// Spans kept, all traces together.
    pub spans: usize,
    /// Spans kept per trace.
    pub spans_per_trace: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            traces: 1000,
            spans: 20_000,
            spans_per_trace: 1000,
        }
    }
}

/// Counters for `/metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub traces: usize,
    pub spans: usize,
    /// Traces evicted to stay within the limits.
    pub evicted: u64,
    /// Spans not kept because their trace was full.
    pub spans_refused: u64,
}

#[derive(Debug)]
struct Trace {
    spans: Vec<Span>,
}

#[derive(Debug, Default)]
struct Inner {
    traces: HashMap<TraceId, Trace>,
    /// Trace ids by arrival of their first span, oldest first.
    order: VecDeque<TraceId>,
    spans: usize,
    evicted: u64,
    spans_refused: u64,
}

/// Shared between the span pipeline (writes) and the page's requests (reads).
#[derive(Debug)]
pub struct TraceStore {
    inner: Mutex<Inner>,
    limits: Limits,
}

/// What the trace list is filtered by; empty fields do not filter.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Filter {
    /// Any span of the trace is of this service.
    pub service: String,
    /// The root span's name contains this.
    pub operation: String,
    /// `Some(true)`: only traces with an error; `Some(false)`: only traces without.
    pub error: Option<bool>,
    /// The trace lasts at least this long.
    pub min_duration_ns: u64,
    /// A span's name, service or attribute value contains this (case-insensitive).
    pub text: String,
    /// Rows returned at most.
    pub limit: usize,
}

/// One row of the trace list.
#[derive(Clone, Debug, PartialEq)]
pub struct TraceSummary {
    pub trace_id: TraceId,
    pub root_service: String,
    pub root_name: String,
    pub root_kind: crate::span::SpanKind,
    pub start_unix_nanos: u64,
    pub duration_ns: u64,
    pub spans: usize,
    /// Distinct services, in order of first appearance by start time.
    pub services: Vec<String>,
    pub error: bool,
}

/// The list, and what the filter controls offer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Listing {
    pub traces: Vec<TraceSummary>,
    /// Traces that matched (before `limit`).
    pub matched: usize,
    pub services: Vec<String>,
    pub operations: Vec<String>,
}

/// One span of an assembled trace, in display order.
#[derive(Clone, Debug, PartialEq)]
pub struct Placed {
    pub span: Span,
    pub depth: usize,
    /// Its parent is not in the trace (not arrived, evicted, or in another node's agent).
    pub orphan: bool,
}

/// The service of a span: its resource's `service.name`.
pub fn service_of(span: &Span) -> &str {
    span.resource.service_name().unwrap_or("unknown")
}

impl TraceStore {
    pub fn new(limits: Limits) -> Self {
        let limits = Limits {
            traces: limits.traces.max(1),
            spans: limits.spans.max(1),
            spans_per_trace: limits.spans_per_trace.max(1),
        };
        Self {
            inner: Mutex::new(Inner::default()),
            limits,
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves spans that are still spans.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps a span.
    pub fn add(&self, span: Span) {
        let mut g = self.lock();
        let inner = &mut *g;
        match inner.traces.get_mut(&span.trace_id) {
            Some(t) if t.spans.len() >= self.limits.spans_per_trace => {
                inner.spans_refused += 1;
                return;
            }
            Some(t) => t.spans.push(span),
            None => {
                inner.order.push_back(span.trace_id);
                inner
                    .traces
                    .insert(span.trace_id, Trace { spans: vec![span] });
            }
        }
        inner.spans += 1;
        while inner.traces.len() > self.limits.traces || inner.spans > self.limits.spans {
            let Some(oldest) = inner.order.pop_front() else {
                break;
            };
            if let Some(t) = inner.traces.remove(&oldest) {
                inner.spans -= t.spans.len();
                inner.evicted += 1;
            }
        }
    }

    pub fn stats(&self) -> StoreStats {
        let g = self.lock();
        StoreStats {
            traces: g.traces.len(),
            spans: g.spans,
            evicted: g.evicted,
            spans_refused: g.spans_refused,
        }
    }

    /// The traces that pass `filter`, newest (by start) first.
    pub fn list(&self, filter: &Filter) -> Listing {
        let g = self.lock();
        let text = filter.text.to_lowercase();
        let mut services = std::collections::BTreeSet::new();
        let mut operations = std::collections::BTreeSet::new();
        let mut rows = Vec::new();
        for t in g.traces.values() {
            let summary = summarize(&t.spans);
            services.extend(summary.services.iter().cloned());
            operations.insert(summary.root_name.clone());
            let keep = (filter.service.is_empty() || summary.services.contains(&filter.service))
                && (filter.operation.is_empty() || summary.root_name.contains(&filter.operation))
                && filter.error.is_none_or(|e| e == summary.error)
                && summary.duration_ns >= filter.min_duration_ns
                && (text.is_empty() || t.spans.iter().any(|s| mentions(s, &text)));
            if keep {
                rows.push(summary);
            }
        }
        drop(g);
        rows.sort_by(|a, b| {
            b.start_unix_nanos
                .cmp(&a.start_unix_nanos)
                .then(a.trace_id.cmp(&b.trace_id))
        });
        let matched = rows.len();
        rows.truncate(filter.limit);
        Listing {
            traces: rows,
            matched,
            services: services.into_iter().collect(),
            operations: operations.into_iter().collect(),
        }
    }

    /// One trace's spans in display order: depth first from the roots (spans without a parent
    /// in the trace), children by start time.
    pub fn trace(&self, id: &TraceId) -> Option<Vec<Placed>> {
        let spans = self.lock().traces.get(id)?.spans.clone();
        Some(assemble(spans))
    }
}

/// Whether a span's name, service or an attribute value contains `needle` (lower case).
fn mentions(span: &Span, needle: &str) -> bool {
    let has = |s: &str| s.to_lowercase().contains(needle);
    has(&span.name)
        || has(service_of(span))
        || span.attributes.iter().any(|kv| match &kv.value {
            Value::Str(s) => has(s),
            Value::StrArray(v) => v.iter().any(|s| has(s)),
            Value::Int(i) => has(&i.to_string()),
            _ => false,
        })
}

/// The spans whose parent is not among `spans`, by start.
fn roots(spans: &[Span]) -> Vec<usize> {
    let ids: std::collections::HashSet<SpanId> = spans.iter().map(|s| s.span_id).collect();
    let mut r: Vec<usize> = (0..spans.len())
        .filter(|&i| spans[i].parent_span_id.is_none_or(|p| !ids.contains(&p)))
        .collect();
    // A true root (no parent at all) before an orphan that started earlier.
    r.sort_by_key(|&i| {
        (
            spans[i].parent_span_id.is_some(),
            spans[i].start_unix_nanos,
            spans[i].span_id,
        )
    });
    r
}

fn summarize(spans: &[Span]) -> TraceSummary {
    // Without a root (a cycle of parents), the earliest span stands for one.
    let root = roots(spans).first().map_or_else(
        || {
            spans
                .iter()
                .min_by_key(|s| s.start_unix_nanos)
                .unwrap_or(&spans[0])
        },
        |&i| &spans[i],
    );
    let start = spans.iter().map(|s| s.start_unix_nanos).min().unwrap_or(0);
    let end = spans
        .iter()
        .map(|s| s.end_unix_nanos)
        .max()
        .unwrap_or(start);
    let mut by_start: Vec<&Span> = spans.iter().collect();
    by_start.sort_by_key(|s| s.start_unix_nanos);
    let mut services: Vec<String> = Vec::new();
    for s in by_start {
        let svc = service_of(s);
        if !services.iter().any(|x| x == svc) {
            services.push(svc.to_owned());
        }
    }
    TraceSummary {
        trace_id: root.trace_id,
        root_service: service_of(root).to_owned(),
        root_name: root.name.clone(),
        root_kind: root.kind,
        start_unix_nanos: start,
        duration_ns: end.saturating_sub(start),
        spans: spans.len(),
        services,
        error: spans.iter().any(|s| s.status.code == StatusCode::Error),
    }
}

fn assemble(spans: Vec<Span>) -> Vec<Placed> {
    let index: HashMap<SpanId, usize> = spans
        .iter()
        .enumerate()
        .map(|(i, s)| (s.span_id, i))
        .collect();
    let mut children: HashMap<usize, Vec<usize>> = HashMap::new();
    for (i, s) in spans.iter().enumerate() {
        if let Some(&p) = s.parent_span_id.as_ref().and_then(|p| index.get(p))
            && p != i
        {
            children.entry(p).or_default().push(i);
        }
    }
    for c in children.values_mut() {
        c.sort_by_key(|&i| (spans[i].start_unix_nanos, spans[i].span_id));
    }
    let mut out = Vec::with_capacity(spans.len());
    let mut seen = vec![false; spans.len()];
    let mut stack: Vec<(usize, usize, bool)> = roots(&spans)
        .into_iter()
        .rev()
        .map(|i| (i, 0, spans[i].parent_span_id.is_some()))
        .collect();
    while let Some((i, depth, orphan)) = stack.pop() {
        if std::mem::replace(&mut seen[i], true) {
            continue;
        }
        if let Some(c) = children.get(&i) {
            stack.extend(c.iter().rev().map(|&c| (c, depth + 1, false)));
        }
        out.push((i, depth, orphan));
    }
    // A cycle of parents (never made by sonde, but the ids come from the wire) has no root:
    // show its spans flat rather than lose them.
    for (i, s) in seen.iter().enumerate() {
        if !s {
            out.push((i, 0, true));
        }
    }
    let mut spans: Vec<Option<Span>> = spans.into_iter().map(Some).collect();
    out.into_iter()
        .filter_map(|(i, depth, orphan)| {
            spans[i].take().map(|span| Placed {
                span,
                depth,
                orphan,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::span::{KeyValue, Resource, SpanKind, Status};

    fn span(trace: u8, id: u8, parent: Option<u8>, service: &str, start: u64, end: u64) -> Span {
        Span {
            trace_id: TraceId([trace; 16]),
            span_id: SpanId([id; 8]),
            parent_span_id: parent.map(|p| SpanId([p; 8])),
            trace_state: String::new(),
            flags: 1,
            name: format!("op{id}"),
            kind: if parent.is_none() {
                SpanKind::Client
            } else {
                SpanKind::Server
            },
            start_unix_nanos: start,
            end_unix_nanos: end,
            attributes: vec![KeyValue::new("url.path", format!("/p{id}"))],
            status: Status::default(),
            resource: Arc::new(Resource {
                attributes: vec![KeyValue::new("service.name", service)],
            }),
        }
    }

    fn order(placed: &[Placed]) -> Vec<(u8, usize, bool)> {
        placed
            .iter()
            .map(|p| (p.span.span_id.0[0], p.depth, p.orphan))
            .collect()
    }

    #[test]
    fn out_of_order_spans_assemble_into_one_tree() {
        let store = TraceStore::new(Limits::default());
        // Children finish (and arrive) before their parents.
        store.add(span(1, 4, Some(2), "db", 30, 40));
        store.add(span(1, 3, Some(2), "db", 15, 25));
        let partial = store.trace(&TraceId([1; 16])).unwrap();
        assert_eq!(order(&partial), vec![(3, 0, true), (4, 0, true)]);
        store.add(span(1, 2, Some(1), "api", 10, 50));
        store.add(span(1, 1, None, "curl", 0, 60));
        let placed = store.trace(&TraceId([1; 16])).unwrap();
        assert_eq!(
            order(&placed),
            vec![(1, 0, false), (2, 1, false), (3, 2, false), (4, 2, false)]
        );
        let list = store.list(&Filter {
            limit: 10,
            ..Filter::default()
        });
        let t = &list.traces[0];
        assert_eq!(
            (t.root_service.as_str(), t.root_name.as_str(), t.spans),
            ("curl", "op1", 4)
        );
        assert_eq!((t.start_unix_nanos, t.duration_ns), (0, 60));
        assert_eq!(t.services, vec!["curl", "api", "db"]);
    }

    #[test]
    fn a_late_child_appears_under_its_parent() {
        let store = TraceStore::new(Limits::default());
        store.add(span(1, 1, None, "curl", 0, 60));
        store.add(span(1, 2, Some(1), "api", 10, 50));
        store.add(span(2, 9, None, "other", 100, 110));
        // Long after the trace looked finished, another child of span 2.
        store.add(span(1, 5, Some(2), "db", 20, 30));
        let placed = store.trace(&TraceId([1; 16])).unwrap();
        assert_eq!(
            order(&placed),
            vec![(1, 0, false), (2, 1, false), (5, 2, false)]
        );
        assert_eq!(store.stats().spans, 4);
    }

    #[test]
    fn the_oldest_traces_are_evicted_by_trace_and_span_bounds() {
        let store = TraceStore::new(Limits {
            traces: 3,
            spans: 4,
            spans_per_trace: 3,
        });
        for t in 1..=4u8 {
            store.add(span(
                t,
                1,
                None,
                "svc",
                u64::from(t) * 100,
                u64::from(t) * 100 + 10,
            ));
        }
        // Four traces, room for three: trace 1 (the first to arrive) went.
        assert_eq!(store.stats().evicted, 1);
        assert!(store.trace(&TraceId([1; 16])).is_none());
        assert!(store.trace(&TraceId([2; 16])).is_some());
        // Trace 4 grows to three spans: five spans in all, room for four: trace 2 goes.
        store.add(span(4, 2, Some(1), "svc", 401, 402));
        store.add(span(4, 3, Some(1), "svc", 403, 404));
        let st = store.stats();
        assert_eq!((st.traces, st.spans, st.evicted), (2, 4, 2));
        assert!(store.trace(&TraceId([2; 16])).is_none());
        // A fourth span for a full trace is refused, and counted.
        store.add(span(4, 4, Some(1), "svc", 405, 406));
        assert_eq!(store.stats().spans_refused, 1);
        assert_eq!(store.trace(&TraceId([4; 16])).unwrap().len(), 3);
        // Newest first.
        let ids: Vec<u8> = store
            .list(&Filter {
                limit: 10,
                ..Filter::default()
            })
            .traces
            .iter()
            .map(|t| t.trace_id.0[0])
            .collect();
        assert_eq!(ids, vec![4, 3]);
    }

    #[test]
    fn filters_select_by_service_operation_status_duration_and_text() {
        let store = TraceStore::new(Limits::default());
        store.add(span(1, 1, None, "curl", 0, 1_000_000));
        store.add(span(1, 2, Some(1), "api", 10, 900_000));
        let mut failed = span(2, 3, None, "worker", 2_000_000, 2_000_500);
        failed.status = Status {
            code: StatusCode::Error,
            message: "boom".into(),
        };
        store.add(failed);
        let ids = |f: Filter| -> Vec<u8> {
            store
                .list(&Filter { limit: 10, ..f })
                .traces
                .iter()
                .map(|t| t.trace_id.0[0])
                .collect()
        };
        assert_eq!(
            ids(Filter {
                service: "api".into(),
                ..Filter::default()
            }),
            vec![1]
        );
        assert_eq!(
            ids(Filter {
                operation: "op3".into(),
                ..Filter::default()
            }),
            vec![2]
        );
        assert_eq!(
            ids(Filter {
                error: Some(true),
                ..Filter::default()
            }),
            vec![2]
        );
        assert_eq!(
            ids(Filter {
                error: Some(false),
                ..Filter::default()
            }),
            vec![1]
        );
        assert_eq!(
            ids(Filter {
                min_duration_ns: 1000,
                ..Filter::default()
            }),
            vec![1]
        );
        assert_eq!(
            ids(Filter {
                text: "/P2".into(),
                ..Filter::default()
            }),
            vec![1]
        );
        let all = store.list(&Filter {
            limit: 1,
            ..Filter::default()
        });
        assert_eq!((all.traces.len(), all.matched), (1, 2));
        assert_eq!(all.services, vec!["api", "curl", "worker"]);
    }

    #[test]
    fn a_cycle_of_parents_is_shown_flat_not_lost() {
        let store = TraceStore::new(Limits::default());
        store.add(span(1, 1, Some(2), "a", 0, 10));
        store.add(span(1, 2, Some(1), "b", 1, 9));
        let placed = store.trace(&TraceId([1; 16])).unwrap();
        assert_eq!(order(&placed), vec![(1, 0, true), (2, 0, true)]);
        assert_eq!(store.list(&Filter::default()).matched, 1);
    }
}
