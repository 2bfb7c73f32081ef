//! OTLP clients: one request out, one classified answer back.
//!
//! Each client makes exactly one attempt; [`crate::batch`] decides about retries from the
//! [`ExportError::class`] of the failure, so gRPC and HTTP share one retry loop and one set
//! of counters.

mod grpc;
mod http;
pub(crate) mod tls;

use std::{path::PathBuf, time::Duration};

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message as _;

pub(crate) use self::grpc::endpoint as grpc_endpoint;
pub use self::{grpc::GrpcClient, http::HttpClient};
use crate::{
    config::{ExportConfig, Protocol},
    retry::{self, Class},
};

/// `User-Agent` of every request.
pub const USER_AGENT: &str = concat!("sonde/", env!("CARGO_PKG_VERSION"));

/// What the receiver accepted.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Accepted {
    /// Spans the receiver rejected in an otherwise successful request (partial success).
    pub rejected_spans: u64,
    /// The receiver's explanation, if any (may be set with zero rejected: a warning).
    pub message: String,
}

/// One failed attempt.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{endpoint} answered gRPC status {code:?}: {message}")]
    Grpc {
        endpoint: String,
        code: tonic::Code,
        message: String,
        /// The server's `RetryInfo.retry_delay`.
        retry_info: Option<Duration>,
    },
    #[error("{endpoint} answered HTTP {status}: {message}")]
    Http {
        endpoint: String,
        status: u16,
        message: String,
        /// The server's `Retry-After`.
        retry_after: Option<Duration>,
    },
    #[error("cannot reach {endpoint}: {source}")]
    Connect {
        endpoint: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("no answer from {endpoint} within {timeout:?}")]
    Timeout { endpoint: String, timeout: Duration },
}

impl ExportError {
    /// Retryable or permanent, per the OTLP spec ([`retry`]). Connection failures and
    /// timeouts are retryable.
    pub fn class(&self) -> Class {
        match self {
            Self::Grpc {
                code, retry_info, ..
            } => retry::classify_grpc(*code, *retry_info),
            Self::Http {
                status,
                retry_after,
                ..
            } => retry::classify_http(*status, *retry_after),
            Self::Connect { .. } | Self::Timeout { .. } => Class::Retryable { throttle: None },
        }
    }
}

/// The client could not be built from the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot read {path} ({var}): {source}")]
    ReadFile {
        path: PathBuf,
        var: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} ({var}) holds no PEM certificate; give a PEM file with a CERTIFICATE block")]
    NoCertificate { path: PathBuf, var: &'static str },
    #[error("{path} ({var}) holds no PEM private key; give a PEM file with a PRIVATE KEY block")]
    NoKey { path: PathBuf, var: &'static str },
    #[error("TLS setup failed: {source}")]
    Tls {
        #[source]
        source: rustls::Error,
    },
    #[error("gRPC endpoint {endpoint}: {source}")]
    GrpcEndpoint {
        endpoint: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error(
        "header {name:?} cannot be sent as gRPC metadata (names lower-case ASCII, values ASCII); fix OTEL_EXPORTER_OTLP_HEADERS"
    )]
    Metadata { name: String },
    #[error("header {name:?} is not a valid HTTP header; fix OTEL_EXPORTER_OTLP_HEADERS")]
    Header { name: String },
}

/// An `ExportTraceServiceRequest` in its protobuf encoding, made once per batch: every attempt
/// sends the same bytes (a retry costs no re-encoding and no copy of the batch), and a batch
/// in flight holds its wire form only.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EncodedRequest(pub Bytes);

impl EncodedRequest {
    pub fn of(request: &ExportTraceServiceRequest) -> Self {
        Self(request.encode_to_vec().into())
    }
}

/// Lets the pre-encoded bytes go through tonic's prost codec unchanged. Never decoded.
impl prost::Message for EncodedRequest {
    fn encode_raw(&self, buf: &mut impl bytes::BufMut) {
        buf.put_slice(&self.0);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl bytes::Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        prost::encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        self.0.len()
    }

    fn clear(&mut self) {
        self.0 = Bytes::new();
    }
}

/// An OTLP trace client for the configured protocol.
#[derive(Clone, Debug)]
pub enum OtlpClient {
    Grpc(GrpcClient),
    Http(HttpClient),
}

impl OtlpClient {
    /// Builds the client; reads the TLS files now. Connections are made lazily, so an
    /// unreachable collector is not an error here. Call inside a tokio runtime.
    pub fn new(config: &ExportConfig) -> Result<Self, ClientError> {
        Ok(match config.protocol {
            Protocol::Grpc => Self::Grpc(GrpcClient::new(config)?),
            Protocol::HttpProtobuf => Self::Http(HttpClient::new(config)?),
        })
    }

    /// One attempt, bounded by `timeout`.
    pub async fn export(
        &self,
        request: &EncodedRequest,
        timeout: Duration,
    ) -> Result<Accepted, ExportError> {
        match self {
            Self::Grpc(c) => c.export(request, timeout).await,
            Self::Http(c) => c.export(request, timeout).await,
        }
    }

    pub fn endpoint(&self) -> String {
        match self {
            Self::Grpc(c) => c.endpoint().to_owned(),
            Self::Http(c) => c.endpoint().to_owned(),
        }
    }
}

/// Clamps a partial-success count into `[0, batch]`.
fn rejected(count: i64) -> u64 {
    u64::try_from(count).unwrap_or(0)
}
