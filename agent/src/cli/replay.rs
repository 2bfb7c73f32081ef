//! `sonde replay FILE`: a capture file through the span pipeline, spans to stdout.

use std::{
    io::{self, Write as _},
    process::ExitCode,
};

use sonde_export::{batch::ExportPipeline, config::ExportConfig, console};
use sonde_protocol::route::RoutePattern;

use super::{ReplayArgs, ReplaySide};
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
    if let Some(cfg) = export {
        return replay_otlp(&args, sides, http, &cfg);
    }
    let sink = WriterSink {
        out: Box::new(io::BufWriter::new(io::stdout())),
        format: output,
        console: console::Options {
            full_ids: args.full_ids,
        },
        failed: None,
    };
    match crate::replay::replay(&args.file, sides, http, sink) {
        Ok((mut sink, summary)) => {
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
) -> ExitCode {
    let (spans, summary) = match crate::replay::replay(&args.file, sides, http, Vec::new()) {
        Ok(r) => r,
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
