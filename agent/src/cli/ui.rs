//! The trace view's place in `sonde run` and `sonde replay`: a tee after the policy stage
//! (the page shows what is exported, sampled and redacted alike), the server, and its
//! counters on `/metrics`.

use std::sync::Arc;

use sonde_export::{
    metrics::SpanMetrics,
    stats::DropReason,
    ui::{
        UiError, UiServer, UiState,
        map::MapReader,
        store::{Limits, TraceStore},
    },
};

use super::plan::UiPlan;
use crate::{span::SpanSink, telemetry::Telemetry};

/// Copies every span it passes on into the trace view's store (when the view is on).
pub(super) struct UiTee<O> {
    store: Option<Arc<TraceStore>>,
    /// The view's own port: a browser's requests for the page are not shown in it.
    own_port: Option<u16>,
    pub(super) inner: O,
}

impl<O> UiTee<O> {
    pub(super) fn new(store: Option<Arc<TraceStore>>, inner: O) -> Self {
        Self {
            store,
            own_port: None,
            inner,
        }
    }

    pub(super) fn hiding_port(mut self, port: Option<u16>) -> Self {
        self.own_port = port;
        self
    }
}

/// A client span of a request to `port` on this host (the page polling the view).
fn calls_own_port(span: &sonde_model::Span, port: u16) -> bool {
    use sonde_model::Value;
    span.kind == sonde_model::SpanKind::Client
        && matches!(span.attr("server.port"), Some(Value::Int(p)) if *p == i64::from(port))
        && match span.attr("server.address") {
            Some(Value::Str(a)) => {
                a == "localhost"
                    || a.parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback())
            }
            _ => false,
        }
}

impl<O: SpanSink> SpanSink for UiTee<O> {
    fn span(&mut self, span: sonde_model::Span) {
        if let Some(s) = &self.store
            && !self.own_port.is_some_and(|p| calls_own_port(&span, p))
        {
            s.add(span.clone());
        }
        self.inner.span(span);
    }

    fn tick(&mut self, now_ns: u64) {
        self.inner.tick(now_ns);
    }

    fn not_sent(&mut self, reason: DropReason) {
        self.inner.not_sent(reason);
    }
}

/// A bound trace view and its store.
pub(super) struct Ui {
    pub(super) server: UiServer,
    pub(super) store: Arc<TraceStore>,
}

/// Binds the trace view; its counters go to `telemetry` when there is one.
pub(super) async fn start(
    plan: &UiPlan,
    metrics: Option<Arc<SpanMetrics>>,
    telemetry: Option<&Telemetry>,
) -> Result<Ui, UiError> {
    let store = Arc::new(TraceStore::new(plan.limits));
    let state = UiState {
        store: Arc::clone(&store),
        map: metrics.map(|m| Arc::new(MapReader::new(m))),
        loopback: plan.address.ip().is_loopback(),
    };
    let server = UiServer::bind(plan.address, state).await?;
    if let Some(t) = telemetry {
        let s = Arc::clone(&store);
        t.add_renderer(Arc::new(move |w| {
            let st = s.stats();
            w.gauge("sonde_ui_traces", "Traces held by the trace view (--ui).")
                .sample(&[], st.traces as f64);
            w.gauge("sonde_ui_spans", "Spans held by the trace view (--ui).")
                .sample(&[], st.spans as f64);
            w.counter(
                "sonde_ui_traces_evicted_total",
                "Traces the trace view evicted, oldest first, to stay within [ui] max_traces and max_spans.",
            )
            .sample(&[], st.evicted as f64);
            w.counter(
                "sonde_ui_spans_refused_total",
                "Spans the trace view did not keep because their trace already held its limit.",
            )
            .sample(&[], st.spans_refused as f64);
        }));
    }
    let limits: Limits = store.limits();
    eprintln!(
        "sonde: trace view on http://{}/ (keeps the last {} traces, {} spans)",
        server.local_addr(),
        limits.traces,
        limits.spans
    );
    Ok(Ui { server, store })
}

/// Span metrics for a replay (`sonde run` has them from its policy stage), so the trace
/// view of a capture has its service map too.
pub(super) struct ReplayMetrics<O> {
    metrics: Option<Arc<SpanMetrics>>,
    peers: crate::sampling::points::Peers,
    pub(super) inner: O,
}

impl<O> ReplayMetrics<O> {
    pub(super) fn new(metrics: Option<Arc<SpanMetrics>>, inner: O) -> Self {
        Self {
            metrics,
            peers: Default::default(),
            inner,
        }
    }
}

impl<O: SpanSink> SpanSink for ReplayMetrics<O> {
    fn span(&mut self, span: sonde_model::Span) {
        if let Some(m) = &self.metrics {
            self.peers.server_seen(&span);
            for p in crate::sampling::points::points_of(&span, &self.peers) {
                m.record(&p, &span.resource, None);
            }
        }
        self.inner.span(span);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use sonde_model::{KeyValue, Resource, Span, SpanId, SpanKind, TraceId};

    use super::*;

    fn span(id: u8, kind: SpanKind, address: &str, port: i64) -> Span {
        Span {
            trace_id: TraceId([id; 16]),
            span_id: SpanId([id; 8]),
            parent_span_id: None,
            trace_state: String::new(),
            flags: 1,
            name: "GET".into(),
            kind,
            start_unix_nanos: 1,
            end_unix_nanos: 2,
            attributes: vec![
                KeyValue::new("server.address", address),
                KeyValue::new("server.port", port),
            ],
            status: Default::default(),
            resource: Arc::new(Resource::default()),
        }
    }

    #[test]
    fn the_page_polling_the_view_is_not_shown_in_it_but_still_exported() {
        let store = Arc::new(TraceStore::new(Limits::default()));
        let mut tee = UiTee::new(Some(Arc::clone(&store)), Vec::new()).hiding_port(Some(9465));
        tee.span(span(1, SpanKind::Client, "127.0.0.1", 9465));
        tee.span(span(2, SpanKind::Client, "localhost", 9465));
        tee.span(span(3, SpanKind::Client, "127.0.0.1", 8080));
        tee.span(span(4, SpanKind::Client, "10.0.0.7", 9465));
        tee.span(span(5, SpanKind::Server, "127.0.0.1", 9465));
        let shown: Vec<u8> = [1u8, 2, 3, 4, 5]
            .into_iter()
            .filter(|i| store.trace(&TraceId([*i; 16])).is_some())
            .collect();
        assert_eq!(shown, vec![3, 4, 5]);
        assert_eq!(tee.inner.len(), 5, "every span is still passed on");
    }
}
