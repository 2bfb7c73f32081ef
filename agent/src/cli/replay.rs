//! `sonde replay FILE`: a capture file through the span pipeline, spans to stdout.

use std::{
    io::{self, Write as _},
    process::ExitCode,
};

use sonde_export::console;
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
    if !matches!(args.output, OutputFormat::Console | OutputFormat::Jsonl) {
        eprintln!("sonde: replay --output must be console or jsonl");
        return ExitCode::from(2);
    }
    let sides = match args.side {
        ReplaySide::Client => crate::replay::Sides::Client,
        ReplaySide::Server => crate::replay::Sides::Server,
        ReplaySide::Both => crate::replay::Sides::Both,
    };
    let sink = WriterSink {
        out: Box::new(io::BufWriter::new(io::stdout())),
        format: args.output,
        console: console::Options {
            full_ids: args.full_ids,
        },
        failed: None,
    };
    let http = HttpConfig {
        route_patterns,
        query_allowlist: args.query_allow.clone(),
        ..HttpConfig::default()
    };
    match crate::replay::replay(&args.file, sides, http, sink) {
        Ok((mut sink, summary)) => {
            let _ = sink.out.flush();
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
