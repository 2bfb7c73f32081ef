//! Errors of the HTTP/2 parser. Like HTTP/1's, they are events: the parser reports one, keeps
//! what it can and goes on, and the caller counts them by [`ErrorKind::as_str`].

use super::Side;

/// What went wrong; [`ErrorKind::as_str`] is a stable label for metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The request side of a connection expected to start with the client preface did not;
    /// it is then read as a connection joined in the middle.
    #[error("missing HTTP/2 client preface")]
    InvalidPreface,
    /// Bytes where a frame should start that are not a frame header (or one that breaks its
    /// type's rules): frame sync is lost until a call starts with a plausible frame.
    #[error("bytes that do not start a frame (lost sync)")]
    Desync,
    /// A frame longer than the receiver's SETTINGS_MAX_FRAME_SIZE: frame sync is lost.
    #[error("frame over the maximum frame size")]
    FrameTooLarge,
    /// A frame whose payload breaks its type's rules (padding longer than the payload,
    /// SETTINGS values out of range); it is skipped by length.
    #[error("invalid frame payload")]
    InvalidFrame,
    /// CONTINUATION without an open header block, or for another stream: skipped.
    #[error("unexpected CONTINUATION frame")]
    UnexpectedContinuation,
    /// Another frame where a CONTINUATION was due: the open header block is lost.
    #[error("header block not continued")]
    MissingContinuation,
    /// A capture gap where a frame header was or could have been: frame sync, and with it the
    /// HPACK state of that direction, is lost.
    #[error("capture gap between frames")]
    GapBetweenFrames,
    /// A capture gap inside a header block: its fields are lost, and the HPACK state of that
    /// direction with them (frame sync is kept).
    #[error("capture gap inside a header block")]
    GapInHeaderBlock,
    /// A capture gap inside a control frame (SETTINGS, RST_STREAM, GOAWAY...): it is ignored.
    #[error("capture gap inside a control frame")]
    GapInControlFrame,
    /// An undecodable header block (bad index, integer, Huffman string or truncation): its
    /// fields are lost and the dynamic table is forgotten.
    #[error("invalid HPACK header block")]
    HpackInvalid,
    /// A dynamic table size update above what the peer advertised: a decoding error (RFC 7541
    /// §4.2); the block's fields are lost and the dynamic table is forgotten.
    #[error("HPACK table size update over the advertised limit")]
    HpackSizeUpdateOverLimit,
    /// A string longer than `Limits::max_string_bytes`: its field is unrecovered.
    #[error("HPACK string over the length limit")]
    HpackStringTooLong,
    /// A header block decoding to more than `Limits::max_header_list_bytes`: the rest of its
    /// fields are decoded for the table's sake but not kept.
    #[error("header list over the size limit")]
    HeaderListTooLarge,
    /// A header block (HEADERS or PUSH_PROMISE plus CONTINUATION) longer than
    /// `Limits::max_header_block_bytes`: skipped, and the HPACK state of that direction lost.
    #[error("header block over the size limit")]
    HeaderBlockTooLarge,
    /// Fields that are not valid HTTP/2 (upper-case or invalid names, CR/LF/NUL in values,
    /// misplaced, unknown or repeated pseudo-headers, trailers without END_STREAM): the
    /// offending fields are dropped.
    #[error("malformed header fields")]
    MalformedHeaders,
    /// A stream's header blocks went over `Limits::max_stream_header_bytes`, or the
    /// connection's over `Limits::max_header_bytes`: the block's fields are not kept.
    #[error("stream header fields over the size limit")]
    StreamHeadersTooLarge,
    /// More streams than `Limits::max_streams` at once: the oldest is dropped, unreported.
    #[error("too many concurrent streams")]
    TooManyStreams,
    /// A frame its stream's state does not allow (DATA before HEADERS, anything after
    /// END_STREAM, a third header block): ignored.
    #[error("frame not allowed in the stream's state")]
    UnexpectedFrame,
    /// More interim (1xx) responses than `Limits::max_interim`: parsed, not kept.
    #[error("too many interim responses")]
    TooManyInterim,
}

impl ErrorKind {
    /// Every kind, for registering metric labels up front.
    pub const ALL: &'static [ErrorKind] = &[
        Self::InvalidPreface,
        Self::Desync,
        Self::FrameTooLarge,
        Self::InvalidFrame,
        Self::UnexpectedContinuation,
        Self::MissingContinuation,
        Self::GapBetweenFrames,
        Self::GapInHeaderBlock,
        Self::GapInControlFrame,
        Self::HpackInvalid,
        Self::HpackSizeUpdateOverLimit,
        Self::HpackStringTooLong,
        Self::HeaderListTooLarge,
        Self::HeaderBlockTooLarge,
        Self::MalformedHeaders,
        Self::StreamHeadersTooLarge,
        Self::TooManyStreams,
        Self::UnexpectedFrame,
        Self::TooManyInterim,
    ];

    /// A stable `snake_case` label (metric label values; never renamed).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::InvalidPreface => "invalid_preface",
            Self::Desync => "desync",
            Self::FrameTooLarge => "frame_too_large",
            Self::InvalidFrame => "invalid_frame",
            Self::UnexpectedContinuation => "unexpected_continuation",
            Self::MissingContinuation => "missing_continuation",
            Self::GapBetweenFrames => "gap_between_frames",
            Self::GapInHeaderBlock => "gap_in_header_block",
            Self::GapInControlFrame => "gap_in_control_frame",
            Self::HpackInvalid => "hpack_invalid",
            Self::HpackSizeUpdateOverLimit => "hpack_size_update_over_limit",
            Self::HpackStringTooLong => "hpack_string_too_long",
            Self::HeaderListTooLarge => "header_list_too_large",
            Self::HeaderBlockTooLarge => "header_block_too_large",
            Self::MalformedHeaders => "malformed_headers",
            Self::StreamHeadersTooLarge => "stream_headers_too_large",
            Self::TooManyStreams => "too_many_streams",
            Self::UnexpectedFrame => "unexpected_frame",
            Self::TooManyInterim => "too_many_interim",
        }
    }
}

/// One parse error: what, on which side, where in that side's stream, and on which stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[error("HTTP/2 {side} stream at offset {offset}: {kind}")]
pub struct ParseError {
    /// The direction whose bytes were at fault.
    pub side: Side,
    /// Stream offset of the frame, the offending byte, or the gap.
    pub offset: u64,
    /// The HTTP/2 stream concerned, when there is one.
    pub stream_id: Option<u32>,
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
        assert_eq!(ErrorKind::ALL.len(), 19);
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
            side: Side::Request,
            offset: 9,
            stream_id: Some(3),
            kind: ErrorKind::GapInHeaderBlock,
        };
        assert_eq!(
            e.to_string(),
            "HTTP/2 request stream at offset 9: capture gap inside a header block"
        );
        let source = std::error::Error::source(&e).map(|s| s.to_string());
        assert_eq!(source.as_deref(), Some("capture gap inside a header block"));
    }
}
