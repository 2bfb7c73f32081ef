//! OTLP/HTTP with binary protobuf bodies: a POST per batch on hyper's pooled HTTP/1.1 client,
//! TLS by rustls (ring), gzip by flate2.

use std::{io::Write as _, sync::Arc, time::Duration, time::SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;

use super::{Accepted, ClientError, EncodedRequest, ExportError, USER_AGENT, rejected, tls};
use crate::{
    config::{Compression, ExportConfig},
    retry,
};

/// Responses larger than this are cut (only a status message or partial success is read).
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// Cheap to clone: the state is shared.
#[derive(Clone, Debug)]
pub struct HttpClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    endpoint: http::Uri,
    endpoint_text: String,
    headers: http::HeaderMap,
    gzip: bool,
}

impl HttpClient {
    pub fn new(config: &ExportConfig) -> Result<Self, ClientError> {
        let tls = if config.uses_tls() {
            tls::rustls_config(tls::load(&config.tls)?, true)?
        } else {
            // Plain http: no files to read, and no roots needed.
            let none = tls::Material {
                ca: None,
                identity: None,
            };
            tls::rustls_config(none, false)?
        };
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(config.timeout));
        http.set_nodelay(true);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        let mut headers = http::HeaderMap::new();
        for (name, value) in &config.headers {
            let bad = || ClientError::Header { name: name.clone() };
            headers.insert(
                http::HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad())?,
                http::HeaderValue::from_str(value).map_err(|_| bad())?,
            );
        }
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                endpoint_text: config.endpoint.to_string(),
                endpoint: config.endpoint.clone(),
                headers,
                gzip: config.compression == Compression::Gzip,
            }),
        })
    }

    pub fn endpoint(&self) -> &str {
        &self.inner.endpoint_text
    }

    fn body(&self, request: &EncodedRequest) -> Bytes {
        let raw = &request.0;
        if !self.inner.gzip {
            return raw.clone();
        }
        let mut enc = flate2::write::GzEncoder::new(
            Vec::with_capacity(raw.len() / 4),
            flate2::Compression::fast(),
        );
        // Writing into a Vec cannot fail.
        let _ = enc.write_all(raw);
        enc.finish().unwrap_or_default().into()
    }

    pub async fn export(
        &self,
        request: &EncodedRequest,
        timeout: Duration,
    ) -> Result<Accepted, ExportError> {
        let mut builder = http::Request::post(self.inner.endpoint.clone())
            .header(http::header::CONTENT_TYPE, "application/x-protobuf")
            .header(http::header::USER_AGENT, USER_AGENT);
        if self.inner.gzip {
            builder = builder.header(http::header::CONTENT_ENCODING, "gzip");
        }
        let mut req = builder
            .body(Full::new(self.body(request)))
            .expect("method, URI and static headers are valid");
        req.headers_mut().extend(
            self.inner
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone())),
        );

        let timed_out = || ExportError::Timeout {
            endpoint: self.inner.endpoint_text.clone(),
            timeout,
        };
        let exchange = async {
            let resp = self
                .inner
                .client
                .request(req)
                .await
                .map_err(|e| ExportError::Connect {
                    endpoint: self.inner.endpoint_text.clone(),
                    source: Box::new(e),
                })?;
            let (parts, body) = resp.into_parts();
            let body = Limited::new(body, MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            Ok::<_, ExportError>((parts, body))
        };
        let (parts, body) = tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| timed_out())??;

        if parts.status.is_success() {
            // An empty or undecodable 2xx body still means "accepted".
            let resp = ExportTraceServiceResponse::decode(body).unwrap_or_default();
            return Ok(resp
                .partial_success
                .map(|p| Accepted {
                    rejected_spans: rejected(p.rejected_spans),
                    message: p.error_message,
                })
                .unwrap_or_default());
        }
        let retry_after = parts
            .headers
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| retry::parse_retry_after(v, SystemTime::now()));
        Err(ExportError::Http {
            endpoint: self.inner.endpoint_text.clone(),
            status: parts.status.as_u16(),
            message: error_message(&parts.headers, &body),
            retry_after,
        })
    }
}

/// The spec has error bodies be a `google.rpc.Status`; fall back to (a bit of) the text.
fn error_message(headers: &http::HeaderMap, body: &[u8]) -> String {
    let is_protobuf = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-protobuf"));
    if is_protobuf && let Ok(status) = tonic_types::Status::decode(body) {
        return status.message;
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    match text.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_message_prefers_the_status_message() {
        let status = tonic_types::Status {
            code: 3,
            message: "bad span".into(),
            details: vec![],
        };
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/x-protobuf"),
        );
        assert_eq!(error_message(&headers, &status.encode_to_vec()), "bad span");
        assert_eq!(
            error_message(&http::HeaderMap::new(), b"  plain text\n"),
            "plain text"
        );
        let long = "x".repeat(300);
        assert_eq!(
            error_message(&http::HeaderMap::new(), long.as_bytes())
                .chars()
                .count(),
            201
        );
    }
}
