//! OTLP/gRPC: tonic's generated `TraceService` client over a lazily connected channel that
//! reconnects by itself after the collector comes back.

use std::{sync::Arc, time::Duration};

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, trace_service_client::TraceServiceClient,
};
use tonic::{
    codec::CompressionEncoding,
    metadata::{AsciiMetadataKey, AsciiMetadataValue},
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity},
};
use tonic_types::StatusExt;

use super::{Accepted, ClientError, ExportError, USER_AGENT, rejected, tls};
use crate::config::{Compression, ExportConfig};

/// Cheap to clone: the state is shared.
#[derive(Clone, Debug)]
pub struct GrpcClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    client: TraceServiceClient<Channel>,
    metadata: Vec<(AsciiMetadataKey, AsciiMetadataValue)>,
    endpoint: String,
}

impl GrpcClient {
    pub fn new(config: &ExportConfig) -> Result<Self, ClientError> {
        let endpoint_text = config.endpoint.to_string();
        let grpc_err = |source| ClientError::GrpcEndpoint {
            endpoint: endpoint_text.clone(),
            source,
        };
        let mut endpoint = Endpoint::from_shared(endpoint_text.clone())
            .map_err(grpc_err)?
            .connect_timeout(config.timeout)
            .user_agent(USER_AGENT)
            .map_err(grpc_err)?;
        if config.uses_tls() {
            let material = tls::load(&config.tls)?;
            let mut tls_config = ClientTlsConfig::new();
            tls_config = match material.ca {
                Some(ca) => tls_config.ca_certificate(Certificate::from_pem(ca.bytes)),
                None => tls_config.with_native_roots(),
            };
            if let Some((cert, key)) = material.identity {
                tls_config = tls_config.identity(Identity::from_pem(cert.bytes, key.bytes));
            }
            endpoint = endpoint.tls_config(tls_config).map_err(grpc_err)?;
        }
        let mut client = TraceServiceClient::new(endpoint.connect_lazy())
            .accept_compressed(CompressionEncoding::Gzip);
        if config.compression == Compression::Gzip {
            client = client.send_compressed(CompressionEncoding::Gzip);
        }
        let metadata = config
            .headers
            .iter()
            .map(|(name, value)| {
                let bad = || ClientError::Metadata { name: name.clone() };
                Ok((
                    name.parse::<AsciiMetadataKey>().map_err(|_| bad())?,
                    value.parse::<AsciiMetadataValue>().map_err(|_| bad())?,
                ))
            })
            .collect::<Result<_, ClientError>>()?;
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                metadata,
                endpoint: endpoint_text,
            }),
        })
    }

    pub fn endpoint(&self) -> &str {
        &self.inner.endpoint
    }

    pub async fn export(
        &self,
        request: &ExportTraceServiceRequest,
        timeout: Duration,
    ) -> Result<Accepted, ExportError> {
        let mut req = tonic::Request::new(request.clone());
        req.set_timeout(timeout);
        for (k, v) in &self.inner.metadata {
            req.metadata_mut().insert(k.clone(), v.clone());
        }
        let mut client = self.inner.client.clone();
        let answer = tokio::time::timeout(timeout, client.export(req))
            .await
            .map_err(|_| ExportError::Timeout {
                endpoint: self.inner.endpoint.clone(),
                timeout,
            })?;
        match answer {
            Ok(resp) => Ok(resp
                .into_inner()
                .partial_success
                .map(|p| Accepted {
                    rejected_spans: rejected(p.rejected_spans),
                    message: p.error_message,
                })
                .unwrap_or_default()),
            Err(status) => Err(ExportError::Grpc {
                endpoint: self.inner.endpoint.clone(),
                code: status.code(),
                message: status.message().to_owned(),
                retry_info: status.get_details_retry_info().and_then(|r| r.retry_delay),
            }),
        }
    }
}
