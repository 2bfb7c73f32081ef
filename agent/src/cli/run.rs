//! `sonde run`: the exporter, span metrics, Kubernetes and the metrics endpoint around a live
//! capture, until a signal or the duration.

use std::{
    io::{self, Write as _},
    path::PathBuf,
    process::ExitCode,
    sync::Arc,
    time::Duration,
};

use sonde_export::{
    batch::{ExportPipeline, LineFormat, PipelineOptions, Sink, SpanQueue},
    console,
    metrics::{SpanMetrics, push::MetricsPusher},
    metrics_http::{MetricsServer, MetricsState},
    stats::DropReason,
};
use sonde_proto::Decision;

use super::{
    RunArgs, RunPlan,
    ui::{self, UiTee},
};
use crate::{
    capture::{Capture, CaptureHandle, CgroupUpdates, Observed, Summary},
    config::OutputFormat,
    conn::StreamSink,
    debug_view::DebugView,
    k8s::{
        enrich::{KubeResources, NodeResources},
        store::{SharedStore, Store},
        toggle::{Controller, ControllerOptions},
        watch,
    },
    sampling::sink::PolicySink,
    span::{SpanSink, SpanStage},
    telemetry::Telemetry,
};

/// What can stop `sonde run` once its configuration is valid; each keeps its cause.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("--output-file {path}: {source}")]
    OutputFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("OTLP exporter: {0}")]
    Exporter(#[source] sonde_export::transport::ClientError),
    #[error("OTLP metrics exporter: {0}")]
    MetricsExporter(#[source] sonde_export::transport::ClientError),
    #[error("--metrics-address: {0}")]
    MetricsAddress(#[source] sonde_export::metrics_http::MetricsHttpError),
    #[error("--summary-json {path}: {source}")]
    SummaryJson {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("kubernetes: {0}")]
    Kubernetes(#[source] crate::k8s::watch::WatchError),
    #[error(transparent)]
    Ui(#[from] sonde_export::ui::UiError),
    #[error(transparent)]
    Capture(#[from] crate::capture::CaptureError),
    #[error("the capture task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// The error and each cause under it, one per line.
pub(super) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let c_text = c.to_string();
        // Messages that already include their cause's text say it once.
        if !s.contains(&c_text) {
            s.push_str(&format!("\n  caused by: {c_text}"));
        }
        cause = c.source();
    }
    s
}

pub(super) fn run(args: RunArgs) -> ExitCode {
    let plan = match args.plan(|n| std::env::var(n).ok()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("sonde: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("sonde-export")
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sonde: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run_async(args, plan)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sonde: {}", chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// Hands spans to the exporter's bounded queue; never blocks (a full queue drops, counted).
struct QueueSink(SpanQueue);

impl SpanSink for QueueSink {
    fn span(&mut self, span: sonde_model::Span) {
        let _ = self.0.try_send(span);
    }

    fn not_sent(&mut self, reason: DropReason) {
        self.0.not_sent(reason);
    }
}

/// The console view: finished traces printed as trees, from the capture thread.
struct ConsoleTrees {
    trees: console::TraceTrees,
    out: Box<dyn std::io::Write + Send>,
}

impl ConsoleTrees {
    fn finish(&mut self) {
        let _ = self.trees.flush(0, true, &mut self.out);
        let _ = self.out.flush();
    }
}

impl SpanSink for ConsoleTrees {
    fn span(&mut self, span: sonde_model::Span) {
        let _ = self
            .trees
            .add(span, crate::clock::monotonic_ns(), &mut self.out);
    }

    fn tick(&mut self, now_ns: u64) {
        let _ = self.trees.flush(now_ns, false, &mut self.out);
        let _ = self.out.flush();
    }
}

/// Counts spans and drops them (`--output none`).
struct NullSink;

impl SpanSink for NullSink {
    fn span(&mut self, _span: sonde_model::Span) {}
}

pub(super) async fn wait_for_stop(duration: Option<f64>) {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let sleep = async {
        match duration {
            Some(d) => tokio::time::sleep(Duration::from_secs_f64(d)).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        _ = sleep => {}
    }
}

fn line_writer(file: &Option<PathBuf>) -> Result<Box<dyn std::io::Write + Send>, RunError> {
    match file {
        Some(p) => std::fs::File::create(p)
            .map(|f| Box::new(std::io::BufWriter::new(f)) as Box<dyn std::io::Write + Send>)
            .map_err(|source| RunError::OutputFile {
                path: p.clone(),
                source,
            }),
        None => Ok(Box::new(io::stdout())),
    }
}

async fn run_async(args: RunArgs, plan: RunPlan) -> Result<(), RunError> {
    let telemetry = Telemetry::new();
    let pipeline = match plan.output {
        OutputFormat::Otlp => {
            let cfg = plan
                .export
                .as_ref()
                .expect("plan() resolves the exporter whenever the output is otlp");
            let p = ExportPipeline::otlp(cfg).map_err(RunError::Exporter)?;
            tracing::info!(
                "exporting spans with OTLP ({}) to {}",
                cfg.protocol.as_str(),
                cfg.endpoint
            );
            Some(p)
        }
        OutputFormat::Jsonl => {
            let options = plan
                .export
                .as_ref()
                .map(PipelineOptions::from)
                .unwrap_or_default();
            Some(ExportPipeline::start(
                Sink::Lines {
                    writer: line_writer(&plan.output_file)?,
                    format: LineFormat::Jsonl,
                },
                options,
            ))
        }
        OutputFormat::Console | OutputFormat::Debug | OutputFormat::None => None,
    };
    if let Some(p) = &pipeline {
        telemetry.set_export(p.stats());
    }
    let span_metrics = plan.span_metrics.map(|_| {
        Arc::new(SpanMetrics::new(
            crate::clock::WallClock::measure().unix_ns(crate::clock::monotonic_ns()),
        ))
    });
    if let Some(m) = &span_metrics {
        let m = Arc::clone(m);
        telemetry.add_renderer(Arc::new(move |w| m.render(w)));
    }
    let pusher = match (
        &span_metrics,
        plan.output,
        plan.export.as_ref(),
        plan.span_metrics,
    ) {
        (Some(m), OutputFormat::Otlp, Some(cfg), Some(interval)) => {
            match MetricsPusher::start(cfg, Arc::clone(m), interval) {
                Ok(Some(p)) => {
                    let st = Arc::clone(&p.stats);
                    telemetry.add_renderer(Arc::new(move |w| {
                        let mut f = w.counter(
                            "sonde_span_metrics_pushes_total",
                            "OTLP pushes of the span metrics, by outcome.",
                        );
                        for (o, n) in [("ok", &st.ok), ("failed", &st.failed)] {
                            f = f.sample(
                                &[("outcome", o)],
                                n.load(std::sync::atomic::Ordering::Relaxed) as f64,
                            );
                        }
                    }));
                    Some(p)
                }
                Ok(None) => {
                    tracing::info!(
                        "span metrics are pushed with OTLP/gRPC only; with {} they are on /metrics",
                        cfg.protocol.as_str()
                    );
                    None
                }
                Err(e) => return Err(RunError::MetricsExporter(e)),
            }
        }
        _ => None,
    };
    let mut config = plan.capture.clone();
    let kube = match &plan.kubernetes {
        Some(k) => {
            let node = start_kubernetes(k).await?;
            config.cgroup_updates = Some(node.updates.clone());
            Some(node)
        }
        None => None,
    };
    let _metrics = match plan.metrics {
        Some(addr) => {
            let t = telemetry.clone();
            let t2 = telemetry.clone();
            let targets = kube.as_ref().map(|k| {
                let shared = k.controller.targets.clone();
                Arc::new(move || {
                    let t = shared.lock().map(|t| t.clone()).unwrap_or_default();
                    serde_json::to_string_pretty(&t).unwrap_or_default()
                }) as Arc<dyn Fn() -> String + Send + Sync>
            });
            let state = MetricsState {
                render: Arc::new(move || t.render_prometheus()),
                render_openmetrics: Some(Arc::new(move || t2.render_openmetrics())),
                ready: telemetry.ready.clone(),
                targets,
                targets_public: plan.targets_public,
            };
            match MetricsServer::bind(addr, state).await {
                Ok(s) => {
                    tracing::info!("metrics on http://{}/metrics", s.local_addr());
                    Some(s)
                }
                Err(e) if plan.metrics_explicit => return Err(RunError::MetricsAddress(e)),
                Err(e) => {
                    tracing::warn!(
                        "no metrics endpoint: {e} (set --metrics-address to choose another)"
                    );
                    None
                }
            }
        }
        None => None,
    };

    let ui = match &plan.ui {
        Some(u) => Some(ui::start(u, span_metrics.clone(), Some(&telemetry)).await?),
        None => None,
    };
    let ui_store = ui.as_ref().map(|u| Arc::clone(&u.store));
    let ui_port = ui.as_ref().map(|u| u.server.local_addr().port());
    let resources = || match (&plan.kubernetes, &kube) {
        (Some(k), Some(node)) => NodeResources::Kube(Box::new(
            KubeResources::new(node.store.clone(), k.node.clone(), k.cluster.clone())
                .with_cgroups(node.controller.cgroups.clone()),
        )),
        _ => NodeResources::Host(crate::enrich::ProcessCache::default()),
    };
    let who = if let Some(k) = &plan.kubernetes {
        format!(
            "the pods of node {} that sonde.dev/tracing selects (default policy {})",
            k.node, k.policy.default
        )
    } else if args.pids.is_empty()
        && args.cgroups.is_empty()
        && plan.capture.probes.filter.default == Decision::Trace
    {
        "every process but sonde".to_string()
    } else {
        "the selected processes and cgroups".to_string()
    };
    let summary = match (&pipeline, plan.output) {
        (_, OutputFormat::Debug) => {
            let view = DebugView::new(io::stdout(), args.preview_bytes);
            capture_until(
                Capture::spawn_with(config, view, Some(telemetry.clone())),
                &who,
                args.duration,
            )
            .await?
            .1
        }
        (Some(p), _) => {
            let stage = SpanStage::live_with(
                plan.http.clone(),
                resources(),
                policy_sink(
                    UiTee::new(ui_store.clone(), QueueSink(p.queue())).hiding_port(ui_port),
                    &plan,
                    &span_metrics,
                    &telemetry,
                ),
            );
            let (mut stage, summary) = capture_until(
                Capture::spawn_with(config, stage, Some(telemetry.clone())),
                &who,
                args.duration,
            )
            .await?;
            stage.out_mut().finish();
            summary
        }
        (None, OutputFormat::Console) => {
            let trees = ConsoleTrees {
                trees: console::TraceTrees::new(console::Options {
                    full_ids: plan.full_ids,
                }),
                out: line_writer(&plan.output_file)?,
            };
            let stage = SpanStage::live_with(
                plan.http.clone(),
                resources(),
                policy_sink(
                    UiTee::new(ui_store.clone(), trees).hiding_port(ui_port),
                    &plan,
                    &span_metrics,
                    &telemetry,
                ),
            );
            let (mut stage, summary) = capture_until(
                Capture::spawn_with(config, stage, Some(telemetry.clone())),
                &who,
                args.duration,
            )
            .await?;
            stage.out_mut().finish();
            stage.out_mut().inner_mut().inner.finish();
            summary
        }
        (None, _) => {
            let stage = SpanStage::live_with(
                plan.http.clone(),
                resources(),
                policy_sink(
                    UiTee::new(ui_store.clone(), NullSink).hiding_port(ui_port),
                    &plan,
                    &span_metrics,
                    &telemetry,
                ),
            );
            capture_until(
                Capture::spawn_with(config, stage, Some(telemetry.clone())),
                &who,
                args.duration,
            )
            .await?
            .1
        }
    };
    if let Some(u) = ui {
        u.server.shutdown().await;
    }
    if let Some(p) = pusher {
        p.shutdown(Duration::from_secs(5)).await;
    }
    if let Some(p) = pipeline {
        let s = p.shutdown(Duration::from_secs(5)).await;
        tracing::info!(
            "spans: {} created, {} exported, {} dropped",
            s.created,
            s.exported,
            s.dropped_total()
        );
    }
    let mut err = io::stderr().lock();
    let _ = writeln!(err, "sonde: stopped; totals:");
    for line in summary.lines() {
        let _ = writeln!(err, "  {line}");
    }
    if let Some(path) = &args.summary_json {
        let json = serde_json::to_string_pretty(&telemetry.summary_json()).unwrap_or_default();
        std::fs::write(path, json).map_err(|source| RunError::SummaryJson {
            path: path.clone(),
            source,
        })?;
    }
    Ok(())
}

/// Sampling, span metrics and the privacy policy in front of an output; their counters go to
/// `/metrics`.
fn policy_sink<O: SpanSink>(
    inner: O,
    plan: &RunPlan,
    metrics: &Option<Arc<SpanMetrics>>,
    telemetry: &Telemetry,
) -> PolicySink<O> {
    let sink = PolicySink::new(
        inner,
        plan.sampling.clone(),
        plan.privacy.clone(),
        metrics.clone(),
    );
    let stats = sink.stats();
    telemetry.add_renderer(Arc::new(move |w| stats.render(w)));
    sink
}

/// The Kubernetes side of `sonde run --kubernetes`: watches, store and toggle controller.
struct KubeNode {
    store: SharedStore,
    updates: CgroupUpdates,
    controller: Controller,
    _watches: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for KubeNode {
    fn drop(&mut self) {
        for w in &self._watches {
            w.abort();
        }
    }
}

async fn start_kubernetes(k: &crate::k8s::KubePlan) -> Result<KubeNode, RunError> {
    let client = watch::client(k.kubeconfig.as_deref())
        .await
        .map_err(RunError::Kubernetes)?;
    let store = Store::shared(k.limits);
    let opts = watch::WatchOptions::default();
    let watches = vec![
        tokio::spawn(watch::watch_pods(
            client.clone(),
            k.node.clone(),
            store.clone(),
            opts.clone(),
        )),
        tokio::spawn(watch::watch_namespaces(client, store.clone(), opts)),
    ];
    let updates = CgroupUpdates::default();
    let controller = Controller::spawn(
        store.clone(),
        k.policy.clone(),
        k.node.clone(),
        k.cgroup_root.clone(),
        updates.clone(),
        ControllerOptions::default(),
    );
    tracing::info!(
        "kubernetes: watching the pods of node {} and namespaces; default policy {}",
        k.node,
        k.policy.default
    );
    Ok(KubeNode {
        store,
        updates,
        controller,
        _watches: watches,
    })
}

/// Runs a capture until a signal or the duration; returns its sink and totals.
async fn capture_until<S: StreamSink + Observed + Send + 'static>(
    mut handle: CaptureHandle<S>,
    who: &str,
    duration: Option<f64>,
) -> Result<(S, Summary), RunError> {
    let ready = tokio::task::spawn_blocking(move || handle.wait_ready().map(|_| handle)).await?;
    let handle = ready?;
    eprintln!("sonde: tracing {who}; Ctrl-C to stop");
    crate::alloc::steady();
    wait_for_stop(duration).await;
    Ok(tokio::task::spawn_blocking(move || handle.stop()).await??)
}
