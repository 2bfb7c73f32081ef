//! HTTP/2 frames on the wire (RFC 9113 §4 and §6): the frame header, what each type allows,
//! and the small fixed payloads. The streaming of payloads (padding, header block fragments,
//! DATA) is the reader's job (`reader.rs`); this module only judges and decodes.
//!
//! ```text
//! Frame header (§4.1), 9 octets, then Length octets of payload:
//! +-----------------------------------------------+
//! |                 Length (24)                   |
//! +---------------+---------------+---------------+
//! |   Type (8)    |   Flags (8)   |
//! +-+-------------+---------------+-------------------------------+
//! |R|                 Stream Identifier (31)                      |
//! +=+=============================================================+
//! |                   Frame Payload (0...)                      ...
//! +---------------------------------------------------------------+
//! ```
//!
//! Judging a header comes in two strengths. In sync (the previous frame ended here) the peer is
//! trusted as far as RFC 9113 asks a receiver to be: unknown types and flags are ignored, the R
//! bit is ignored, but a length over the receiver's maximum or a stream identifier a type
//! forbids means the bytes are not where a frame starts. When looking for a frame start after
//! losing sync, a *candidate* must also have a known type, only defined flags, a clear R bit
//! and a stream identifier its sender could have used, because there a wrong guess turns
//! payload bytes into frames.

use std::fmt;

use super::Side;

/// Length of a frame header.
pub const HEADER_LEN: usize = 9;

/// SETTINGS_MAX_FRAME_SIZE before the receiver says otherwise (RFC 9113 §6.5.2).
pub const DEFAULT_MAX_FRAME_SIZE: u32 = 16_384;

/// The largest frame the 24-bit length can describe.
pub const MAX_FRAME_LEN: u32 = (1 << 24) - 1;

/// The frame types of RFC 9113 §6.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameType {
    /// Request or response content (§6.1).
    Data = 0,
    /// Opens a stream, or carries trailers (§6.2).
    Headers = 1,
    /// Deprecated stream priority (§6.3).
    Priority = 2,
    /// Ends a stream abnormally (§6.4).
    RstStream = 3,
    /// Connection parameters (§6.5).
    Settings = 4,
    /// Server push (§6.6).
    PushPromise = 5,
    /// Liveness check (§6.7).
    Ping = 6,
    /// Connection shutdown (§6.8).
    GoAway = 7,
    /// Flow control (§6.9).
    WindowUpdate = 8,
    /// The rest of a header block (§6.10).
    Continuation = 9,
}

impl FrameType {
    /// The type of a type octet, if it is one of RFC 9113's.
    pub const fn from_u8(t: u8) -> Option<Self> {
        Some(match t {
            0 => Self::Data,
            1 => Self::Headers,
            2 => Self::Priority,
            3 => Self::RstStream,
            4 => Self::Settings,
            5 => Self::PushPromise,
            6 => Self::Ping,
            7 => Self::GoAway,
            8 => Self::WindowUpdate,
            9 => Self::Continuation,
            _ => return None,
        })
    }

    /// The RFC's name, e.g. `HEADERS`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Data => "DATA",
            Self::Headers => "HEADERS",
            Self::Priority => "PRIORITY",
            Self::RstStream => "RST_STREAM",
            Self::Settings => "SETTINGS",
            Self::PushPromise => "PUSH_PROMISE",
            Self::Ping => "PING",
            Self::GoAway => "GOAWAY",
            Self::WindowUpdate => "WINDOW_UPDATE",
            Self::Continuation => "CONTINUATION",
        }
    }

    /// The flags this type defines.
    pub const fn defined_flags(self) -> u8 {
        match self {
            Self::Data => flags::END_STREAM | flags::PADDED,
            Self::Headers => {
                flags::END_STREAM | flags::END_HEADERS | flags::PADDED | flags::PRIORITY
            }
            Self::Settings | Self::Ping => flags::ACK,
            Self::PushPromise => flags::END_HEADERS | flags::PADDED,
            Self::Continuation => flags::END_HEADERS,
            Self::Priority | Self::RstStream | Self::GoAway | Self::WindowUpdate => 0,
        }
    }
}

impl fmt::Display for FrameType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Frame flags (RFC 9113 §6).
pub mod flags {
    /// DATA, HEADERS: the last frame the sender sends on the stream.
    pub const END_STREAM: u8 = 0x01;
    /// SETTINGS, PING: an acknowledgement.
    pub const ACK: u8 = 0x01;
    /// HEADERS, PUSH_PROMISE, CONTINUATION: the header block ends in this frame.
    pub const END_HEADERS: u8 = 0x04;
    /// DATA, HEADERS, PUSH_PROMISE: a Pad Length octet and padding are present.
    pub const PADDED: u8 = 0x08;
    /// HEADERS: the stream dependency and weight are present.
    pub const PRIORITY: u8 = 0x20;
}

/// A parsed frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FrameHeader {
    /// Payload length.
    pub len: u32,
    /// The type octet (see [`FrameHeader::frame_type`]).
    pub kind: u8,
    /// The flags octet.
    pub flags: u8,
    /// The stream identifier, R bit excluded.
    pub stream_id: u32,
    /// The R bit was set (receivers ignore it).
    pub reserved: bool,
}

impl FrameHeader {
    /// Reads the 9 octets of a frame header.
    pub fn parse(b: &[u8; HEADER_LEN]) -> Self {
        let id = u32::from_be_bytes([b[5], b[6], b[7], b[8]]);
        Self {
            len: u32::from_be_bytes([0, b[0], b[1], b[2]]),
            kind: b[3],
            flags: b[4],
            stream_id: id & 0x7fff_ffff,
            reserved: id & 0x8000_0000 != 0,
        }
    }

    /// The type, if known.
    pub fn frame_type(&self) -> Option<FrameType> {
        FrameType::from_u8(self.kind)
    }

    /// Whether `flag` is set.
    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// Length of the optional fields before a header block fragment or DATA content: Pad
    /// Length, then HEADERS' stream dependency and weight or PUSH_PROMISE's promised stream.
    pub fn prefix_len(&self) -> u32 {
        let pad = u32::from(self.padded());
        match self.frame_type() {
            Some(FrameType::Headers) if self.has(flags::PRIORITY) => pad + 5,
            Some(FrameType::PushPromise) => pad + 4,
            Some(FrameType::Data | FrameType::Headers) => pad,
            _ => 0,
        }
    }

    /// Whether the payload starts with a Pad Length octet.
    pub fn padded(&self) -> bool {
        matches!(
            self.frame_type(),
            Some(FrameType::Data | FrameType::Headers | FrameType::PushPromise)
        ) && self.has(flags::PADDED)
    }
}

/// Why a frame header cannot be where a frame starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum FrameError {
    /// Longer than the receiver accepts.
    #[error("frame length {len} over the maximum {max}")]
    TooLarge {
        /// The frame's length.
        len: u32,
        /// The receiver's maximum frame size.
        max: u32,
    },
    /// A stream identifier the type does not allow (0 where a stream is needed, or the
    /// reverse; or one the sender could not have opened).
    #[error("{kind} frame on stream {stream_id}")]
    StreamId {
        /// The frame type.
        kind: FrameType,
        /// The identifier.
        stream_id: u32,
    },
    /// A length the type does not allow.
    #[error("{kind} frame with length {len}")]
    Length {
        /// The frame type.
        kind: FrameType,
        /// The length.
        len: u32,
    },
    /// A frame type only the other direction sends (PUSH_PROMISE from a client).
    #[error("{kind} frame sent by the client")]
    Direction {
        /// The frame type.
        kind: FrameType,
    },
    /// A candidate frame start with an unknown type.
    #[error("unknown frame type {0:#04x}")]
    UnknownType(u8),
    /// A candidate frame start with flags its type does not define.
    #[error("{kind} frame with undefined flags {flags:#04x}")]
    Flags {
        /// The frame type.
        kind: FrameType,
        /// The flags octet.
        flags: u8,
    },
    /// A candidate frame start with the R bit set.
    #[error("frame with the reserved bit set")]
    Reserved,
}

/// Judges `h`, sent by `side`, against the receiver's maximum frame length. `candidate`
/// applies the stricter rules used to find a frame start after losing sync.
pub fn check(h: &FrameHeader, side: Side, max_len: u32, candidate: bool) -> Result<(), FrameError> {
    if h.len > max_len {
        return Err(FrameError::TooLarge {
            len: h.len,
            max: max_len,
        });
    }
    let Some(kind) = h.frame_type() else {
        return if candidate {
            Err(FrameError::UnknownType(h.kind))
        } else {
            Ok(())
        };
    };
    if candidate {
        if h.reserved {
            return Err(FrameError::Reserved);
        }
        if h.flags & !kind.defined_flags() != 0 {
            return Err(FrameError::Flags {
                kind,
                flags: h.flags,
            });
        }
    }
    let id = h.stream_id;
    let stream_ok = match kind {
        FrameType::Settings | FrameType::Ping | FrameType::GoAway => id == 0,
        FrameType::WindowUpdate => true,
        // A client sends DATA and HEADERS only on streams it opened (odd); a server on those
        // and on the ones it promised (even). PUSH_PROMISE rides a client's stream.
        FrameType::Data | FrameType::Headers if candidate && side == Side::Request => id % 2 == 1,
        FrameType::PushPromise if candidate => id % 2 == 1,
        _ => id != 0,
    };
    if !stream_ok {
        return Err(FrameError::StreamId {
            kind,
            stream_id: id,
        });
    }
    if kind == FrameType::PushPromise && side == Side::Request {
        return Err(FrameError::Direction { kind });
    }
    let len_ok = match kind {
        FrameType::Priority => h.len == 5,
        FrameType::RstStream | FrameType::WindowUpdate => h.len == 4,
        FrameType::Ping => h.len == 8,
        FrameType::GoAway => h.len >= 8,
        FrameType::Settings if h.has(flags::ACK) => h.len == 0,
        FrameType::Settings => h.len.is_multiple_of(6),
        FrameType::Data | FrameType::Headers | FrameType::PushPromise => h.len >= h.prefix_len(),
        FrameType::Continuation => true,
    };
    if !len_ok {
        return Err(FrameError::Length { kind, len: h.len });
    }
    Ok(())
}

/// An HTTP/2 error code (RFC 9113 §7), as carried by RST_STREAM and GOAWAY.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ErrorCode(pub u32);

impl ErrorCode {
    /// Graceful: nothing went wrong.
    pub const NO_ERROR: Self = Self(0);
    /// The stream is no longer needed (e.g. a client cancelled a call).
    pub const CANCEL: Self = Self(8);
    /// The stream was refused before any processing.
    pub const REFUSED_STREAM: Self = Self(7);

    const NAMES: [&'static str; 14] = [
        "NO_ERROR",
        "PROTOCOL_ERROR",
        "INTERNAL_ERROR",
        "FLOW_CONTROL_ERROR",
        "SETTINGS_TIMEOUT",
        "STREAM_CLOSED",
        "FRAME_SIZE_ERROR",
        "REFUSED_STREAM",
        "CANCEL",
        "COMPRESSION_ERROR",
        "CONNECT_ERROR",
        "ENHANCE_YOUR_CALM",
        "INADEQUATE_SECURITY",
        "HTTP_1_1_REQUIRED",
    ];

    /// The RFC's name (`CANCEL`, ...), or `None` for a code it does not define.
    pub fn name(self) -> Option<&'static str> {
        Self::NAMES.get(self.0 as usize).copied()
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "{:#x}", self.0),
        }
    }
}

/// SETTINGS parameters this crate reads (RFC 9113 §6.5.2).
pub mod setting {
    /// The most the receiver's HPACK decoder lets the sender's encoder use.
    pub const HEADER_TABLE_SIZE: u16 = 0x1;
    /// Whether server push is allowed.
    pub const ENABLE_PUSH: u16 = 0x2;
    /// Streams the sender allows its peer to open.
    pub const MAX_CONCURRENT_STREAMS: u16 = 0x3;
    /// Initial flow-control window.
    pub const INITIAL_WINDOW_SIZE: u16 = 0x4;
    /// The largest frame payload the sender accepts.
    pub const MAX_FRAME_SIZE: u16 = 0x5;
    /// Advisory: the largest header list the sender accepts.
    pub const MAX_HEADER_LIST_SIZE: u16 = 0x6;
}

/// The `(identifier, value)` pairs of a SETTINGS payload (§6.5.1); a trailing partial entry
/// is ignored (the header check rejects such lengths).
///
/// ```text
/// +-------------------------------+
/// |       Identifier (16)         |
/// +-------------------------------+-------------------------------+
/// |                        Value (32)                             |
/// +---------------------------------------------------------------+
/// ```
pub fn settings(payload: &[u8]) -> impl Iterator<Item = (u16, u32)> + '_ {
    payload.chunks_exact(6).map(|c| {
        (
            u16::from_be_bytes([c[0], c[1]]),
            u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
        )
    })
}

/// RST_STREAM's error code (§6.4).
///
/// ```text
/// +---------------------------------------------------------------+
/// |                        Error Code (32)                        |
/// +---------------------------------------------------------------+
/// ```
pub fn rst_stream(payload: &[u8]) -> Option<ErrorCode> {
    Some(ErrorCode(u32::from_be_bytes(
        payload.get(..4)?.try_into().ok()?,
    )))
}

/// GOAWAY's last stream identifier and error code (§6.8); debug data is ignored.
///
/// ```text
/// +-+-------------------------------------------------------------+
/// |R|                  Last-Stream-ID (31)                        |
/// +-+-------------------------------------------------------------+
/// |                      Error Code (32)                          |
/// +---------------------------------------------------------------+
/// |                  Additional Debug Data (*)                    |
/// +---------------------------------------------------------------+
/// ```
pub fn goaway(payload: &[u8]) -> Option<(u32, ErrorCode)> {
    let last = u32::from_be_bytes(payload.get(..4)?.try_into().ok()?) & 0x7fff_ffff;
    let code = u32::from_be_bytes(payload.get(4..8)?.try_into().ok()?);
    Some((last, ErrorCode(code)))
}

/// PUSH_PROMISE's promised stream identifier, from the 4 octets after the Pad Length (§6.6).
///
/// ```text
/// +---------------+
/// |Pad Length? (8)|
/// +-+-------------+-----------------------------------------------+
/// |R|                  Promised Stream ID (31)                    |
/// +-+-----------------------------+-------------------------------+
/// |                   Field Block Fragment (*)                  ...
/// +---------------------------------------------------------------+
/// |                           Padding (*)                       ...
/// +---------------------------------------------------------------+
/// ```
pub fn promised_stream(id: [u8; 4]) -> u32 {
    u32::from_be_bytes(id) & 0x7fff_ffff
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdr(len: u32, kind: u8, flags: u8, id: u32) -> FrameHeader {
        let mut b = [0u8; 9];
        b[..3].copy_from_slice(&len.to_be_bytes()[1..]);
        b[3] = kind;
        b[4] = flags;
        b[5..].copy_from_slice(&id.to_be_bytes());
        FrameHeader::parse(&b)
    }

    #[test]
    fn parses_the_nine_octets() {
        let h = FrameHeader::parse(&[0x01, 0x02, 0x03, 0x01, 0x25, 0x80, 0, 0, 0x05]);
        assert_eq!(
            h,
            FrameHeader {
                len: 0x010203,
                kind: 1,
                flags: 0x25,
                stream_id: 5,
                reserved: true
            }
        );
        assert_eq!(h.frame_type(), Some(FrameType::Headers));
        assert!(h.has(flags::END_STREAM) && h.has(flags::PRIORITY) && !h.padded());
        assert_eq!(h.prefix_len(), 5);
        assert_eq!(hdr(10, 0, flags::PADDED, 1).prefix_len(), 1);
        assert_eq!(hdr(10, 5, flags::PADDED, 1).prefix_len(), 5);
        assert_eq!(
            hdr(10, 1, flags::PADDED | flags::PRIORITY, 1).prefix_len(),
            6
        );
    }

    #[test]
    fn in_sync_rules() {
        let ok = |h: FrameHeader, side| check(&h, side, DEFAULT_MAX_FRAME_SIZE, false);
        use Side::{Request as Q, Response as R};
        assert_eq!(ok(hdr(0, 0, 1, 1), Q), Ok(()));
        assert_eq!(
            ok(hdr(100, 0xb, 0xff, 0), R),
            Ok(()),
            "unknown type: ignored"
        );
        assert_eq!(
            ok(hdr(4, 0, 0x40, 2), R),
            Ok(()),
            "unknown flag, even stream"
        );
        assert_eq!(
            ok(hdr(16_385, 0, 0, 1), Q),
            Err(FrameError::TooLarge {
                len: 16_385,
                max: 16_384
            })
        );
        assert!(matches!(
            ok(hdr(0, 0, 0, 0), Q),
            Err(FrameError::StreamId { .. })
        ));
        assert!(matches!(
            ok(hdr(6, 4, 0, 1), Q),
            Err(FrameError::StreamId { .. })
        ));
        assert!(matches!(
            ok(hdr(7, 4, 0, 0), Q),
            Err(FrameError::Length { .. })
        ));
        assert!(matches!(
            ok(hdr(6, 4, 1, 0), Q),
            Err(FrameError::Length { .. })
        ));
        assert!(matches!(
            ok(hdr(4, 2, 0, 1), Q),
            Err(FrameError::Length { .. })
        ));
        assert!(matches!(
            ok(hdr(7, 7, 0, 0), R),
            Err(FrameError::Length { .. })
        ));
        assert!(matches!(
            ok(hdr(0, 0, 8, 1), Q),
            Err(FrameError::Length { .. })
        ));
        assert!(matches!(
            ok(hdr(8, 5, 4, 1), Q),
            Err(FrameError::Direction { .. })
        ));
        assert_eq!(ok(hdr(8, 5, 4, 1), R), Ok(()));
        assert_eq!(ok(hdr(4, 8, 0, 0), R), Ok(()), "connection WINDOW_UPDATE");
    }

    #[test]
    fn candidate_rules_are_stricter() {
        let cand = |h: FrameHeader, side| check(&h, side, DEFAULT_MAX_FRAME_SIZE, true);
        use Side::{Request as Q, Response as R};
        assert_eq!(cand(hdr(12, 4, 0, 0), R), Ok(()));
        assert_eq!(cand(hdr(100, 1, 0x25, 3), Q), Ok(()));
        assert_eq!(
            cand(hdr(100, 0xb, 0, 0), R),
            Err(FrameError::UnknownType(0xb))
        );
        assert!(matches!(
            cand(hdr(4, 0, 0x40, 1), R),
            Err(FrameError::Flags { .. })
        ));
        assert!(matches!(
            cand(hdr(4, 0, 0, 2), Q),
            Err(FrameError::StreamId { .. })
        ));
        assert_eq!(cand(hdr(4, 0, 0, 2), R), Ok(()), "pushed response DATA");
        let mut reserved = hdr(4, 8, 0, 1);
        reserved.reserved = true;
        assert_eq!(cand(reserved, R), Err(FrameError::Reserved));
    }

    #[test]
    fn payload_decoders() {
        let s: Vec<(u16, u32)> =
            settings(&[0, 1, 0, 0, 0x10, 0, 0, 5, 0, 0, 0x40, 0, 0xff]).collect();
        assert_eq!(s, [(1, 4096), (5, 16_384)]);
        assert_eq!(rst_stream(&[0, 0, 0, 8]), Some(ErrorCode::CANCEL));
        assert_eq!(rst_stream(&[0, 0, 8]), None);
        assert_eq!(
            goaway(&[0x80, 0, 0, 7, 0, 0, 0, 2, b'x']),
            Some((7, ErrorCode(2)))
        );
        assert_eq!(promised_stream([0x80, 0, 0, 2]), 2);
        assert_eq!(ErrorCode(8).to_string(), "CANCEL");
        assert_eq!(ErrorCode(13).name(), Some("HTTP_1_1_REQUIRED"));
        assert_eq!(ErrorCode(0x99).to_string(), "0x99");
    }
}
