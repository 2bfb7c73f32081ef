//! `sonde replay FILE`: a capture file through the span pipeline, spans to stdout.

use std::{
    io::{self, Write as _},
    process::ExitCode,
    sync::Arc,
};

use sonde_export::{
    batch::ExportPipeline, config::ExportConfig, console, metrics::SpanMetrics,
    ui::store::TraceStore,
};
use sonde_protocol::route::RoutePattern;

use super::{
    ReplayArgs, ReplaySide,
    ui::{ReplayMetrics, UiTee},
};
use crate::{
    config::OutputFormat,
    span::{HttpConfig, SpanSink},
};

/// Writes spans as they come (replays are synchronous).
struct WriterSink {
    out: Box<dyn std::io::Write>,
    format: OutputFormat,
    console: console::Options,
    failed: Option<std::io::Error>,
}

impl SpanSink for WriterSink {
    fn span(&mut self, span: sonde_model::Span) {
        if self.failed.is_some() {
            return;
        }
        let r = match self.format {
            OutputFormat::Jsonl => sonde_export::jsonl::write_span(&mut self.out, &span),
            _ => console::write_span(&mut self.out, &span, &self.console),
        };
        if let Err(e) = r {
            self.failed = Some(e);
        }
    }
}

pub(super) fn replay(args: ReplayArgs) -> ExitCode {
    let mut route_patterns = Vec::new();
    for p in &args.routes {
        match RoutePattern::parse(p) {
            Ok(r) => route_patterns.push(r),
            Err(e) => {
                eprintln!("sonde: --route {p}: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let env = |n: &str| std::env::var(n).ok().filter(|v| !v.trim().is_empty());
    let endpoint = env("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
        || env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some();
    let output = args.output.unwrap_or(if endpoint {
        OutputFormat::Otlp
    } else {
        OutputFormat::Console
    });
    let export = match output {
        OutputFormat::Console | OutputFormat::Jsonl => None,
        OutputFormat::Otlp if !endpoint => {
            eprintln!(
                "sonde: replay --output otlp needs a collector: set OTEL_EXPORTER_OTLP_ENDPOINT"
            );
            return ExitCode::from(2);
        }
        OutputFormat::Otlp => match ExportConfig::from_env(|n| std::env::var(n).ok()) {
            Ok(mut cfg) => {
                cfg.scope_version = env!("CARGO_PKG_VERSION").to_owned();
                Some(cfg)
            }
            Err(e) => {
                eprintln!("sonde: OTLP exporter: {e}");
                return ExitCode::from(2);
            }
        },
        OutputFormat::Debug | OutputFormat::None => {
            eprintln!("sonde: replay --output must be console, jsonl or otlp");
            return ExitCode::from(2);
        }
    };
    let sides = match args.side {
        ReplaySide::Client => crate::replay::Sides::Client,
        ReplaySide::Server => crate::replay::Sides::Server,
        ReplaySide::Both => crate::replay::Sides::Both,
    };
    let http = HttpConfig {
        route_patterns,
        query_allowlist: args.query_allow.clone(),
        ..HttpConfig::default()
    };
    let ui = match super::plan::ui_plan(args.ui.as_deref(), args.ui_public, &Default::default()) {
        Ok(ui) => ui.map(|plan| {
            let store = Arc::new(TraceStore::new(plan.limits));
            let metrics = Arc::new(SpanMetrics::new(0));
            (plan, store, metrics)
        }),
        Err(e) => {
            eprintln!("sonde: {e}");
            return ExitCode::from(2);
        }
    };
    let code = match export {
        Some(cfg) => replay_otlp(&args, sides, http, &cfg, ui.as_ref()),
        None => replay_lines(&args, sides, http, output, ui.as_ref()),
    };
    match ui {
        Some((plan, store, metrics)) if code == ExitCode::SUCCESS => {
            match serve_replay(&plan, store, metrics) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("sonde: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        _ => code,
    }
}

/// The trace view of a replay: its plan, store and span metrics.
type ReplayUi = (super::plan::UiPlan, Arc<TraceStore>, Arc<SpanMetrics>);

fn replay_lines(
    args: &ReplayArgs,
    sides: crate::replay::Sides,
    http: HttpConfig,
    output: OutputFormat,
    ui: Option<&ReplayUi>,
) -> ExitCode {
    let writer = WriterSink {
        out: Box::new(io::BufWriter::new(io::stdout())),
        format: output,
        console: console::Options {
            full_ids: args.full_ids,
        },
        failed: None,
    };
    let sink = UiTee::new(
        ui.map(|u| Arc::clone(&u.1)),
        ReplayMetrics::new(ui.map(|u| Arc::clone(&u.2)), writer),
    );
    match crate::replay::replay(&args.file, sides, http, sink) {
        Ok((sink, summary)) => {
            let mut sink = sink.inner.inner;
            let _ = sink.out.flush();
            print_summary(&summary);
            if let Some(e) = sink.failed {
                eprintln!("sonde: writing spans: {e}");
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sonde: {e}");
            ExitCode::FAILURE
        }
    }
}

fn print_summary(summary: &crate::replay::ReplaySummary) {
    eprintln!(
        "sonde: {} packets, {} TCP segments, {} flows, {} spans; {} bytes retransmitted, \
                 {} lost in gaps, {} parse errors",
        summary.pcap.packets,
        summary.pcap.tcp_segments,
        summary.tcp.flows,
        summary.spans.spans_created,
        summary.tcp.retransmitted_bytes,
        summary.conns.gap_lost_bytes,
        summary.spans.parse_errors.values().sum::<u64>()
    );
}

/// The replay's spans to a collector. A replay makes its spans faster than any exporter takes
/// them, so they are queued half a queue at a time, each part flushed before the next: none is
/// dropped at the queue.
fn replay_otlp(
    args: &ReplayArgs,
    sides: crate::replay::Sides,
    http: HttpConfig,
    cfg: &ExportConfig,
    ui: Option<&ReplayUi>,
) -> ExitCode {
    let sink = UiTee::new(
        ui.map(|u| Arc::clone(&u.1)),
        ReplayMetrics::new(ui.map(|u| Arc::clone(&u.2)), Vec::new()),
    );
    let (spans, summary) = match crate::replay::replay(&args.file, sides, http, sink) {
        Ok((sink, summary)) => (sink.inner.inner, summary),
        Err(e) => {
            eprintln!("sonde: {e}");
            return ExitCode::FAILURE;
        }
    };
    print_summary(&summary);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sonde: {e}");
            return ExitCode::FAILURE;
        }
    };
    let stats = rt.block_on(async {
        let pipeline = ExportPipeline::otlp(cfg)?;
        let queue = pipeline.queue();
        let part = (cfg.batch.max_queue_size / 2).max(1);
        let mut spans = spans.into_iter().peekable();
        while spans.peek().is_some() {
            for span in spans.by_ref().take(part) {
                let _ = queue.try_send(span);
            }
            pipeline.force_flush().await;
        }
        Ok::<_, sonde_export::transport::ClientError>(
            pipeline.shutdown(cfg.batch.export_timeout).await,
        )
    });
    match stats {
        Ok(s) => {
            eprintln!(
                "sonde: spans: {} created, {} exported to {}, {} dropped",
                s.created,
                s.exported,
                cfg.endpoint,
                s.dropped_total()
            );
            if s.dropped_total() > 0 || s.exported < s.created {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("sonde: OTLP exporter: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Serves a finished replay's spans until Ctrl-C or SIGTERM.
fn serve_replay(
    plan: &super::plan::UiPlan,
    store: Arc<TraceStore>,
    metrics: Arc<SpanMetrics>,
) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let state = sonde_export::ui::UiState {
            store: Arc::clone(&store),
            map: Some(Arc::new(sonde_export::ui::map::MapReader::new(metrics))),
            loopback: plan.address.ip().is_loopback(),
        };
        let server = sonde_export::ui::UiServer::bind(plan.address, state)
            .await
            .map_err(|e| super::run::chain(&e))?;
        let st = store.stats();
        eprintln!(
            "sonde: trace view of the replay on http://{}/ ({} traces, {} spans); Ctrl-C to stop",
            server.local_addr(),
            st.traces,
            st.spans
        );
        super::run::wait_for_stop(None).await;
        server.shutdown().await;
        Ok(())
    })
}
