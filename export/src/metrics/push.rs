//! Pushes the span metrics to the collector as OTLP/gRPC every interval (and once at
//! shutdown), cumulative, like the OpenTelemetry SDKs' periodic reader
//! (`OTEL_METRIC_EXPORT_INTERVAL`). Failures are counted and retried at the next interval: a
//! cumulative point loses nothing by waiting.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use tokio::{sync::watch, task::JoinHandle};
use tonic::{
    codec::CompressionEncoding,
    metadata::{AsciiMetadataKey, AsciiMetadataValue},
    transport::Channel,
};

use super::SpanMetrics;
use crate::{
    config::{Compression, ExportConfig, Protocol},
    otlp,
    transport::ClientError,
};

/// Default interval between pushes (the OpenTelemetry default is 60 s).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);

/// Outcomes of metric pushes.
#[derive(Debug, Default)]
pub struct PushStats {
    pub ok: AtomicU64,
    pub failed: AtomicU64,
}

/// A running pusher.
pub struct MetricsPusher {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    pub stats: Arc<PushStats>,
}

fn now_unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

impl MetricsPusher {
    /// Starts pushing to the collector of `config` (gRPC only: with `http/protobuf`, `None`
    /// and the metrics stay on `/metrics`). Call inside a tokio runtime.
    pub fn start(
        config: &ExportConfig,
        metrics: Arc<SpanMetrics>,
        interval: Duration,
    ) -> Result<Option<Self>, ClientError> {
        if config.protocol != Protocol::Grpc {
            return Ok(None);
        }
        let endpoint = crate::transport::grpc_endpoint(config)?;
        let mut client = MetricsServiceClient::new(endpoint.connect_lazy());
        if config.compression == Compression::Gzip {
            client = client.send_compressed(CompressionEncoding::Gzip);
        }
        let metadata: Vec<(AsciiMetadataKey, AsciiMetadataValue)> = config
            .headers
            .iter()
            .filter_map(|(k, v)| Some((k.parse().ok()?, v.parse().ok()?)))
            .collect();
        let scope = otlp::scope(&config.scope_version);
        let timeout = config.timeout;
        let stats = Arc::new(PushStats::default());
        let (stop, mut stopped) = watch::channel(false);
        let st = Arc::clone(&stats);
        let task = tokio::spawn(async move {
            let push = |client: &mut MetricsServiceClient<Channel>| {
                let request = super::otlp::to_request(
                    &metrics.snapshot(),
                    metrics.start_unix_nanos,
                    now_unix_nanos(),
                    &scope,
                );
                let mut req = tonic::Request::new(request);
                req.set_timeout(timeout);
                for (k, v) in &metadata {
                    req.metadata_mut().insert(k.clone(), v.clone());
                }
                let mut c = client.clone();
                async move { tokio::time::timeout(timeout, c.export(req)).await }
            };
            let mut warned = false;
            loop {
                let last = tokio::select! {
                    _ = tokio::time::sleep(interval) => false,
                    _ = stopped.changed() => true,
                };
                let failure = match push(&mut client).await {
                    Ok(Ok(_)) => None,
                    Ok(Err(status)) => Some(format!("{}: {}", status.code(), status.message())),
                    Err(_) => Some(format!("no answer within {timeout:?}")),
                };
                match failure {
                    None => {
                        st.ok.fetch_add(1, Relaxed);
                    }
                    Some(error) => {
                        st.failed.fetch_add(1, Relaxed);
                        if !warned {
                            warned = true;
                            tracing::warn!(
                                %error,
                                "span metrics: OTLP push failed; retrying at the next interval"
                            );
                        }
                    }
                }
                if last {
                    return;
                }
            }
        });
        Ok(Some(Self { stop, task, stats }))
    }

    /// Pushes once more and stops.
    pub async fn shutdown(self, timeout: Duration) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(timeout, self.task).await;
    }
}
