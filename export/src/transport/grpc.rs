//! OTLP/gRPC: the `TraceService/Export` unary call through tonic, over a lazily connected
//! channel that reconnects by itself after the collector comes back. The request goes out as
//! the batch's pre-encoded bytes ([`EncodedRequest`]), so retries re-send them as they are.

use std::{sync::Arc, time::Duration};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use tonic::{
    GrpcMethod,
    client::Grpc,
    codec::CompressionEncoding,
    codegen::http::uri::PathAndQuery,
    metadata::{AsciiMetadataKey, AsciiMetadataValue},
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity},
};
use tonic_types::StatusExt;

use super::{Accepted, ClientError, EncodedRequest, ExportError, USER_AGENT, rejected, tls};

const SERVICE: &str = "opentelemetry.proto.collector.trace.v1.TraceService";
const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
use crate::config::{Compression, ExportConfig};

/// Cheap to clone: the state is shared.
#[derive(Clone, Debug)]
pub struct GrpcClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    client: Grpc<Channel>,
    metadata: Vec<(AsciiMetadataKey, AsciiMetadataValue)>,
    endpoint: String,
}

/// The collector's gRPC endpoint as `config` says: timeout, user agent, TLS (a CA, or the
/// system's roots; a client identity for mutual TLS). Traces and metrics use it alike.
pub(crate) fn endpoint(config: &ExportConfig) -> Result<Endpoint, ClientError> {
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
    Ok(endpoint)
}

impl GrpcClient {
    pub fn new(config: &ExportConfig) -> Result<Self, ClientError> {
        let endpoint_text = config.endpoint.to_string();
        let endpoint = endpoint(config)?;
        let mut client =
            Grpc::new(endpoint.connect_lazy()).accept_compressed(CompressionEncoding::Gzip);
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
        request: &EncodedRequest,
        timeout: Duration,
    ) -> Result<Accepted, ExportError> {
        // A clone of the bytes handle, not of the batch.
        let mut req = tonic::Request::new(request.clone());
        req.set_timeout(timeout);
        for (k, v) in &self.inner.metadata {
            req.metadata_mut().insert(k.clone(), v.clone());
        }
        req.extensions_mut()
            .insert(GrpcMethod::new(SERVICE, "Export"));
        let mut client = self.inner.client.clone();
        let call = async move {
            // What tonic's generated client does: readiness failures are `Unknown`.
            client
                .ready()
                .await
                .map_err(|e| tonic::Status::unknown(format!("Service was not ready: {e}")))?;
            let codec =
                tonic_prost::ProstCodec::<EncodedRequest, ExportTraceServiceResponse>::default();
            client
                .unary(req, PathAndQuery::from_static(EXPORT_PATH), codec)
                .await
        };
        let answer =
            tokio::time::timeout(timeout, call)
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
