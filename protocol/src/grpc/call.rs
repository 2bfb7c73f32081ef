//! The gRPC reading of one HTTP/2 exchange: service and method from `:path`, the status from
//! the trailers (or a Trailers-Only head), and the message counts of each direction.

use super::{
    Code, Messages, Role, is_error, is_grpc_content_type, is_grpc_web_content_type, parse_path,
    percent_decode,
};
use crate::http2::H2Exchange;

/// Where a call's status came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StatusSource {
    /// The response trailers.
    Trailers,
    /// The response head, sent with END_STREAM and no body ("Trailers-Only").
    TrailersOnly,
}

/// The gRPC reading of one exchange.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrpcCall {
    /// `rpc.service`, e.g. `package.Service` (`None` if `:path` was not recovered).
    pub service: Option<String>,
    /// `rpc.method`, e.g. `Method`.
    pub method: Option<String>,
    /// `grpc-status` as sent (a number; not necessarily a defined [`Code`]).
    pub status: Option<u32>,
    /// `grpc-message`, percent-decoded.
    pub message: Option<String>,
    /// Where the status came from, when there is one.
    pub status_source: Option<StatusSource>,
    /// The trailers (or Trailers-Only head) held fields that could not be recovered, so a
    /// missing status may be one of them.
    pub status_unknown: bool,
    /// Requests messages (when the request's DATA was followed).
    pub request_messages: Option<Messages>,
    /// Response messages.
    pub response_messages: Option<Messages>,
    /// gRPC-Web rather than native gRPC.
    pub web: bool,
}

impl GrpcCall {
    /// The gRPC reading of `x`, if it is a gRPC call: a request or response `content-type`
    /// of `application/grpc...`.
    pub fn from_exchange(x: &H2Exchange) -> Option<Self> {
        let ct_req = x
            .request
            .as_ref()
            .and_then(|r| r.headers.get("content-type"));
        let ct_resp = x
            .response
            .as_ref()
            .and_then(|r| r.headers.get("content-type"));
        let ct = ct_req
            .into_iter()
            .chain(ct_resp)
            .find(|v| is_grpc_content_type(v))?;
        let (service, method) = x
            .request
            .as_ref()
            .and_then(|r| r.path.as_deref())
            .and_then(parse_path)
            .map_or((None, None), |(s, m)| {
                (Some(s.to_string()), Some(m.to_string()))
            });
        let (status_fields, source) = match (&x.response_trailers, &x.response) {
            (Some(t), _) => (Some(t), Some(StatusSource::Trailers)),
            (None, Some(head)) if head.headers.get("grpc-status").is_some() => {
                (Some(&head.headers), Some(StatusSource::TrailersOnly))
            }
            (None, Some(head))
                if x.response_extent
                    .is_some_and(|e| e.complete && e.body_len == 0) =>
            {
                (Some(&head.headers), Some(StatusSource::TrailersOnly))
            }
            _ => (None, None),
        };
        let status = status_fields
            .and_then(|h| h.get_str("grpc-status"))
            .and_then(|s| s.trim().parse::<u32>().ok());
        let message = status_fields
            .and_then(|h| h.get("grpc-message"))
            .map(percent_decode);
        let status_unknown = status.is_none() && status_fields.is_some_and(|h| !h.is_exact());
        Some(Self {
            service,
            method,
            status,
            message,
            status_source: if status.is_some() { source } else { None },
            status_unknown,
            request_messages: x.request_extent.and_then(|e| e.messages),
            response_messages: x.response_extent.and_then(|e| e.messages),
            web: is_grpc_web_content_type(ct),
        })
    }

    /// The status as a [`Code`] (undefined numbers read as UNKNOWN).
    pub fn code(&self) -> Option<Code> {
        self.status
            .map(|s| Code::from_u32(s).unwrap_or(Code::Unknown))
    }

    /// Whether the call is an error for `role`: a non-OK status per sonde's convention, or no
    /// status at all (the call did not finish, or its status was not captured).
    pub fn is_error(&self, role: Role) -> bool {
        match self.status {
            Some(s) => is_error(s, role),
            None => true,
        }
    }
}
