//! A writer for the Prometheus text exposition format, version 0.0.4.
//!
//! The agent renders all its counters through this on every scrape, so it only appends to a
//! `String`: no registry, no locking. Families write their `# HELP`/`# TYPE` lines once, then
//! samples; label values and help text are escaped as the format requires.
//!
//! ```
//! let mut w = sonde_export::prom::Writer::new();
//! w.counter("sonde_drops_total", "Drops, by reason.")
//!     .sample(&[("reason", "queue_full")], 3.0)
//!     .sample(&[("reason", "parser")], 0.0);
//! assert!(w.finish().contains("sonde_drops_total{reason=\"queue_full\"} 3\n"));
//! ```

use std::fmt::Write as _;

use crate::{
    span::{SpanId, TraceId},
    stats::{ExportStats, HistogramSnapshot},
};

/// The `Content-Type` of what [`Writer::finish`] returns.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The `Content-Type` of an OpenMetrics exposition ([`Writer::openmetrics`]).
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Accumulates one exposition.
#[derive(Debug, Default)]
pub struct Writer {
    out: String,
    /// OpenMetrics 1.0 text: counter families named without `_total`, exemplars on
    /// histogram buckets, `# EOF` at the end.
    openmetrics: bool,
}

/// An exemplar of a histogram bucket: the span that stands for it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ExemplarRef {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub value: f64,
    pub unix_nanos: u64,
}

/// Samples of one metric family.
pub struct Family<'w> {
    w: &'w mut Writer,
    name: &'w str,
}

/// Samples of one histogram family.
pub struct HistogramFamily<'w> {
    w: &'w mut Writer,
    name: &'w str,
}

impl Writer {
    pub fn new() -> Self {
        Self::default()
    }

    /// A writer of OpenMetrics text (what scrapers asking for `application/openmetrics-text`
    /// get): the same families, plus exemplars.
    pub fn openmetrics() -> Self {
        Self {
            out: String::new(),
            openmetrics: true,
        }
    }

    pub fn is_openmetrics(&self) -> bool {
        self.openmetrics
    }

    pub fn counter<'w>(&'w mut self, name: &'w str, help: &str) -> Family<'w> {
        self.header(name, help, "counter");
        Family { w: self, name }
    }

    pub fn gauge<'w>(&'w mut self, name: &'w str, help: &str) -> Family<'w> {
        self.header(name, help, "gauge");
        Family { w: self, name }
    }

    pub fn histogram<'w>(&'w mut self, name: &'w str, help: &str) -> HistogramFamily<'w> {
        self.header(name, help, "histogram");
        HistogramFamily { w: self, name }
    }

    /// The exposition text.
    pub fn finish(mut self) -> String {
        if self.openmetrics {
            self.out.push_str("# EOF\n");
        }
        self.out
    }

    fn header(&mut self, name: &str, help: &str, kind: &str) {
        debug_assert!(is_valid_metric_name(name), "invalid metric name {name:?}");
        // OpenMetrics names a counter family without the `_total` of its sample.
        let name = match (self.openmetrics, kind) {
            (true, "counter") => name.strip_suffix("_total").unwrap_or(name),
            _ => name,
        };
        self.out.push_str("# HELP ");
        self.out.push_str(name);
        self.out.push(' ');
        escape_help(&mut self.out, help);
        self.out.push_str("\n# TYPE ");
        self.out.push_str(name);
        self.out.push(' ');
        self.out.push_str(kind);
        self.out.push('\n');
    }

    fn line(
        &mut self,
        name: &str,
        suffix: &str,
        labels: &[(&str, &str)],
        extra: Option<(&str, &str)>,
        value: f64,
    ) {
        self.line_exemplar(name, suffix, labels, extra, value, None);
    }

    fn line_exemplar(
        &mut self,
        name: &str,
        suffix: &str,
        labels: &[(&str, &str)],
        extra: Option<(&str, &str)>,
        value: f64,
        exemplar: Option<&ExemplarRef>,
    ) {
        self.out.push_str(name);
        self.out.push_str(suffix);
        if !labels.is_empty() || extra.is_some() {
            self.out.push('{');
            let mut first = true;
            for (k, v) in labels.iter().copied().chain(extra) {
                debug_assert!(is_valid_label_name(k), "invalid label name {k:?}");
                if !first {
                    self.out.push(',');
                }
                first = false;
                self.out.push_str(k);
                self.out.push_str("=\"");
                escape_label_value(&mut self.out, v);
                self.out.push('"');
            }
            self.out.push('}');
        }
        self.out.push(' ');
        push_value(&mut self.out, value);
        if let (true, Some(e)) = (self.openmetrics, exemplar) {
            let _ = write!(
                self.out,
                " # {{trace_id=\"{}\",span_id=\"{}\"}} ",
                e.trace_id, e.span_id
            );
            push_value(&mut self.out, e.value);
            let secs = e.unix_nanos / 1_000_000_000;
            let frac = e.unix_nanos % 1_000_000_000;
            if frac == 0 {
                let _ = write!(self.out, " {secs}");
            } else {
                let f = format!("{frac:09}");
                let _ = write!(self.out, " {secs}.{}", f.trim_end_matches('0'));
            }
        }
        self.out.push('\n');
    }
}

impl<'w> Family<'w> {
    /// One sample with these labels.
    pub fn sample(self, labels: &[(&str, &str)], value: f64) -> Self {
        self.w.line(self.name, "", labels, None, value);
        self
    }
}

impl<'w> HistogramFamily<'w> {
    /// The `_bucket`, `_sum` and `_count` lines of one labelled histogram.
    pub fn sample(self, labels: &[(&str, &str)], h: &HistogramSnapshot) -> Self {
        self.sample_with_exemplars(labels, h, &[])
    }

    /// [`Self::sample`] with one optional exemplar per bucket (written in OpenMetrics only).
    pub fn sample_with_exemplars(
        self,
        labels: &[(&str, &str)],
        h: &HistogramSnapshot,
        exemplars: &[Option<ExemplarRef>],
    ) -> Self {
        let mut le = String::new();
        for (i, count) in h.cumulative.iter().enumerate() {
            le.clear();
            match h.bounds.get(i) {
                Some(b) => {
                    push_value(&mut le, *b);
                    // OpenMetrics wants canonical floats here: `1.0`, not `1`.
                    if self.w.openmetrics && !le.contains(['.', 'e', 'N', 'I']) {
                        le.push_str(".0");
                    }
                }
                None => le.push_str("+Inf"),
            }
            let exemplar = exemplars.get(i).and_then(Option::as_ref);
            self.w.line_exemplar(
                self.name,
                "_bucket",
                labels,
                Some(("le", &le)),
                *count as f64,
                exemplar,
            );
        }
        self.w.line(self.name, "_sum", labels, None, h.sum_seconds);
        self.w
            .line(self.name, "_count", labels, None, h.count as f64);
        self
    }
}

/// `\` and newline are escaped in HELP text.
fn escape_help(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// `\`, `"` and newline are escaped in label values.
fn escape_label_value(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Go-style float text: integers without a fraction, `NaN`, `+Inf`, `-Inf`.
fn push_value(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        let _ = write!(out, "{}", v as i64);
    } else {
        let _ = write!(out, "{v}");
    }
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`
pub fn is_valid_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`, not starting with `__` (reserved).
pub fn is_valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    !name.starts_with("__")
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The exporter's own counters, in this format.
impl ExportStats {
    /// Writes every export metric (`sonde_export_*`) in Prometheus text format.
    pub fn render_prometheus(&self, w: &mut Writer) {
        let s = self.snapshot();
        w.counter(
            "sonde_export_spans_created_total",
            "Spans offered to the exporter (queued or dropped at the queue).",
        )
        .sample(&[], s.created as f64);
        w.counter(
            "sonde_export_spans_exported_total",
            "Spans the receiver accepted.",
        )
        .sample(&[], s.exported as f64);
        let mut f = w.counter(
            "sonde_export_spans_dropped_total",
            "Spans dropped, by reason.",
        );
        for (reason, n) in s.dropped {
            f = f.sample(&[("reason", reason.as_str())], n as f64);
        }
        w.counter(
            "sonde_export_retries_total",
            "Export attempts that were retries of a failed attempt.",
        )
        .sample(&[], s.retries as f64);
        let mut f = w.counter(
            "sonde_export_requests_total",
            "Export requests (attempts), by outcome.",
        );
        for (outcome, n) in s.requests {
            f = f.sample(&[("outcome", outcome.as_str())], n as f64);
        }
        w.gauge(
            "sonde_export_queue_spans",
            "Spans waiting in the export queue.",
        )
        .sample(&[], s.queue_len as f64);
        w.gauge(
            "sonde_export_queue_peak_spans",
            "Most spans ever waiting in the export queue at once.",
        )
        .sample(&[], s.queue_peak as f64);
        w.gauge(
            "sonde_export_queue_capacity_spans",
            "Bound of the export queue (OTEL_BSP_MAX_QUEUE_SIZE).",
        )
        .sample(&[], s.queue_capacity as f64);
        w.gauge(
            "sonde_export_in_flight_spans",
            "Spans in the batch being exported (or retried) now.",
        )
        .sample(&[], s.in_flight as f64);
        w.histogram(
            "sonde_export_request_duration_seconds",
            "Duration of export requests (attempts), any outcome.",
        )
        .sample(&[], &s.latency);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_with_help_type_and_escaped_labels() {
        let mut w = Writer::new();
        w.counter("x_total", "Help with \\ and\nnewline.")
            .sample(&[("path", "a\"b\\c\nd"), ("k", "v")], 2.0)
            .sample(&[], 0.5);
        assert_eq!(
            w.finish(),
            "# HELP x_total Help with \\\\ and\\nnewline.\n\
             # TYPE x_total counter\n\
             x_total{path=\"a\\\"b\\\\c\\nd\",k=\"v\"} 2\n\
             x_total 0.5\n"
        );
    }

    #[test]
    fn gauge_values_special_floats() {
        let mut w = Writer::new();
        w.gauge("g", "G.")
            .sample(&[("a", "1")], f64::NAN)
            .sample(&[("a", "2")], f64::INFINITY)
            .sample(&[("a", "3")], f64::NEG_INFINITY)
            .sample(&[("a", "4")], -7.0)
            .sample(&[("a", "5")], 1e20);
        let text = w.finish();
        let lines: Vec<&str> = text.lines().skip(2).collect();
        assert_eq!(
            lines,
            [
                "g{a=\"1\"} NaN",
                "g{a=\"2\"} +Inf",
                "g{a=\"3\"} -Inf",
                "g{a=\"4\"} -7",
                "g{a=\"5\"} 100000000000000000000"
            ]
        );
        assert!(text.starts_with("# HELP g G.\n# TYPE g gauge\n"));
    }

    #[test]
    fn histogram_lines() {
        let h = HistogramSnapshot {
            bounds: vec![0.1, 1.0],
            cumulative: vec![1, 3, 4],
            sum_seconds: 2.5,
            count: 4,
        };
        let mut w = Writer::new();
        w.histogram("lat_seconds", "Latency.")
            .sample(&[("op", "x")], &h);
        let text = w.finish();
        assert_eq!(
            text.lines().skip(2).collect::<Vec<_>>(),
            [
                "lat_seconds_bucket{op=\"x\",le=\"0.1\"} 1",
                "lat_seconds_bucket{op=\"x\",le=\"1\"} 3",
                "lat_seconds_bucket{op=\"x\",le=\"+Inf\"} 4",
                "lat_seconds_sum{op=\"x\"} 2.5",
                "lat_seconds_count{op=\"x\"} 4",
            ]
        );
    }

    #[test]
    fn name_validation() {
        assert!(is_valid_metric_name("sonde:x_total"));
        assert!(!is_valid_metric_name("9x"));
        assert!(!is_valid_metric_name("a-b"));
        assert!(!is_valid_metric_name(""));
        assert!(is_valid_label_name("reason"));
        assert!(!is_valid_label_name("__name__"));
        assert!(!is_valid_label_name("a:b"));
    }
}
