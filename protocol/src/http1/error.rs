//! Errors of the HTTP/1 parser. They are events, not failures: the parser reports one, recovers
//! where it can and goes on, and the caller counts them by [`ErrorKind::as_str`].

use super::Side;

/// What went wrong; [`ErrorKind::as_str`] is a stable label for metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The request line is not `method SP request-target SP HTTP/1.x`.
    #[error("malformed request line")]
    MalformedRequestLine,
    /// The status line is not `HTTP/1.x SP 3DIGIT [SP reason]`.
    #[error("malformed status line")]
    MalformedStatusLine,
    /// A field line is not `name ":" value`, or holds a control byte or a bare CR.
    #[error("malformed header field")]
    MalformedHeader,
    /// More header fields than `Limits::max_headers`.
    #[error("too many header fields")]
    TooManyHeaders,
    /// A head longer than `Limits::max_head_bytes`.
    #[error("message head too large")]
    HeadTooLarge,
    /// `Content-Length` is not a number, overflows, or several values disagree.
    #[error("invalid Content-Length")]
    InvalidContentLength,
    /// A request whose `Transfer-Encoding` does not end in `chunked`: its length is unknowable.
    #[error("invalid Transfer-Encoding")]
    InvalidTransferEncoding,
    /// Malformed chunked framing (size line, CRLF after data, trailer line).
    #[error("invalid chunked framing")]
    InvalidChunk,
    /// Trailer fields over `Limits::max_headers` or `Limits::max_head_bytes`.
    #[error("trailer section too large")]
    TrailerTooLarge,
    /// The connection ended inside a head.
    #[error("connection ended inside a message head")]
    TruncatedHead,
    /// A response arrived while no request was waiting for one; it is parsed and dropped.
    #[error("response without a pending request")]
    UnexpectedResponse,
    /// A response answered a request that was not captured or could not be parsed; it is
    /// consumed so later responses still pair with the right requests.
    #[error("response to a request that was lost")]
    ResponseToLostRequest,
    /// More than `Limits::max_pending` requests awaiting a response; the oldest is dropped.
    #[error("too many requests awaiting a response")]
    TooManyPending,
    /// More interim (1xx) responses for one request than `Limits::max_interim`; the extra ones
    /// are parsed but not kept.
    #[error("too many interim responses")]
    TooManyInterim,
    /// Bytes where a message should start that do not start one; they are skipped up to the
    /// next plausible message start.
    #[error("bytes that do not start a message (lost sync)")]
    Desync,
    /// A capture gap cut a message head: that message is lost.
    #[error("capture gap inside a message head")]
    GapInHead,
    /// A capture gap cut chunked framing: the rest of that body cannot be delimited.
    #[error("capture gap inside chunked framing")]
    GapInChunkFraming,
    /// A capture gap between messages: whatever it held is lost (counted as one message).
    #[error("capture gap between messages")]
    GapBetweenMessages,
}

impl ErrorKind {
    /// Every kind, for registering metric labels up front.
    pub const ALL: &'static [ErrorKind] = &[
        Self::MalformedRequestLine,
        Self::MalformedStatusLine,
        Self::MalformedHeader,
        Self::TooManyHeaders,
        Self::HeadTooLarge,
        Self::InvalidContentLength,
        Self::InvalidTransferEncoding,
        Self::InvalidChunk,
        Self::TrailerTooLarge,
        Self::TruncatedHead,
        Self::UnexpectedResponse,
        Self::ResponseToLostRequest,
        Self::TooManyPending,
        Self::TooManyInterim,
        Self::Desync,
        Self::GapInHead,
        Self::GapInChunkFraming,
        Self::GapBetweenMessages,
    ];

    /// A stable `snake_case` label (metric label values; never renamed).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::MalformedRequestLine => "malformed_request_line",
            Self::MalformedStatusLine => "malformed_status_line",
            Self::MalformedHeader => "malformed_header",
            Self::TooManyHeaders => "too_many_headers",
            Self::HeadTooLarge => "head_too_large",
            Self::InvalidContentLength => "invalid_content_length",
            Self::InvalidTransferEncoding => "invalid_transfer_encoding",
            Self::InvalidChunk => "invalid_chunk",
            Self::TrailerTooLarge => "trailer_too_large",
            Self::TruncatedHead => "truncated_head",
            Self::UnexpectedResponse => "unexpected_response",
            Self::ResponseToLostRequest => "response_to_lost_request",
            Self::TooManyPending => "too_many_pending",
            Self::TooManyInterim => "too_many_interim",
            Self::Desync => "desync",
            Self::GapInHead => "gap_in_head",
            Self::GapInChunkFraming => "gap_in_chunk_framing",
            Self::GapBetweenMessages => "gap_between_messages",
        }
    }
}

/// One parse error: what, on which side, and where in that side's stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[error("HTTP/1 {side} stream at offset {offset}: {kind}")]
pub struct ParseError {
    /// The direction whose bytes were at fault.
    pub side: Side,
    /// Stream offset of the message start, the offending byte, or the gap.
    pub offset: u64,
    /// What went wrong.
    #[source]
    pub kind: ErrorKind,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn labels_are_unique_snake_case_and_cover_all_kinds() {
        let labels: HashSet<&str> = ErrorKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(labels.len(), ErrorKind::ALL.len());
        assert_eq!(ErrorKind::ALL.len(), 18);
        for l in labels {
            assert!(
                l.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{l}"
            );
        }
    }

    #[test]
    fn display_names_side_offset_and_kind() {
        let e = ParseError {
            side: Side::Response,
            offset: 42,
            kind: ErrorKind::InvalidChunk,
        };
        assert_eq!(
            e.to_string(),
            "HTTP/1 response stream at offset 42: invalid chunked framing"
        );
        let source = std::error::Error::source(&e).map(|s| s.to_string());
        assert_eq!(source.as_deref(), Some("invalid chunked framing"));
    }
}
