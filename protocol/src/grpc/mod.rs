//! gRPC over HTTP/2, read from [`H2Exchange`]s: which calls are gRPC, their service and
//! method, their status, and how many messages went each way.
//!
//! gRPC adds no framing of its own to HTTP/2 besides the length prefix of each message, so a
//! call is one exchange (one stream) whatever its shape: unary, client streaming, server
//! streaming or bidirectional. Its status comes from the response trailers, or from the
//! response head when the server answers with HEADERS and END_STREAM only ("Trailers-Only").
//!
//! ```text
//! request   HEADERS  :method POST, :path /package.Service/Method, content-type application/grpc…
//!           DATA*    Length-Prefixed-Message*            (END_STREAM on the last frame)
//! response  HEADERS  :status 200, content-type application/grpc…
//!           DATA*    Length-Prefixed-Message*
//!           HEADERS  grpc-status, grpc-message (percent-encoded)   (trailers, END_STREAM)
//!  or       HEADERS  :status, grpc-status, grpc-message, END_STREAM (Trailers-Only)
//!
//! Length-Prefixed-Message:
//! +-----------------+---------------------------------+---------------------------...
//! | Compressed (8)  |     Message-Length (32, BE)     | Message (Message-Length octets)
//! +-----------------+---------------------------------+---------------------------...
//! ```
//!
//! Messages are counted as DATA goes by ([`MessageCounter`]), never buffered.

use std::fmt;

mod call;

pub use self::call::{GrpcCall, StatusSource};

/// Whether a `content-type` value is gRPC's: `application/grpc`, optionally followed by
/// `+format` (`+proto`, `+json`), `-web...`, or parameters (`;...`).
pub fn is_grpc_content_type(value: &[u8]) -> bool {
    const BASE: &[u8] = b"application/grpc";
    value.len() >= BASE.len()
        && value[..BASE.len()].eq_ignore_ascii_case(BASE)
        && matches!(value.get(BASE.len()), None | Some(b'+' | b';' | b'-'))
}

/// Whether a `content-type` value is gRPC-Web's (`application/grpc-web...`), where the
/// trailers travel in the body.
pub fn is_grpc_web_content_type(value: &[u8]) -> bool {
    const BASE: &[u8] = b"application/grpc-web";
    value.len() >= BASE.len() && value[..BASE.len()].eq_ignore_ascii_case(BASE)
}

/// `(service, method)` from a gRPC `:path` `/package.Service/Method` (the query, if any, is
/// ignored). `None` unless both parts are non-empty.
pub fn parse_path(path: &str) -> Option<(&str, &str)> {
    let path = path.split('?').next().unwrap_or_default();
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    (!service.is_empty() && !method.is_empty() && !method.contains('/'))
        .then_some((service, method))
}

/// The status codes of gRPC (`grpc-status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u32)]
pub enum Code {
    /// Success.
    Ok = 0,
    /// Cancelled, typically by the caller.
    Cancelled = 1,
    /// Unknown error.
    Unknown = 2,
    /// The client specified an invalid argument.
    InvalidArgument = 3,
    /// The deadline expired before the operation could complete.
    DeadlineExceeded = 4,
    /// Some requested entity was not found.
    NotFound = 5,
    /// The entity a client attempted to create already exists.
    AlreadyExists = 6,
    /// The caller lacks permission.
    PermissionDenied = 7,
    /// Some resource has been exhausted.
    ResourceExhausted = 8,
    /// The system is not in a state required for the operation.
    FailedPrecondition = 9,
    /// The operation was aborted.
    Aborted = 10,
    /// The operation was attempted past the valid range.
    OutOfRange = 11,
    /// The operation is not implemented.
    Unimplemented = 12,
    /// Internal error.
    Internal = 13,
    /// The service is currently unavailable.
    Unavailable = 14,
    /// Unrecoverable data loss or corruption.
    DataLoss = 15,
    /// The request lacks valid authentication credentials.
    Unauthenticated = 16,
}

impl Code {
    /// Every code, in numeric order.
    pub const ALL: [Code; 17] = [
        Self::Ok,
        Self::Cancelled,
        Self::Unknown,
        Self::InvalidArgument,
        Self::DeadlineExceeded,
        Self::NotFound,
        Self::AlreadyExists,
        Self::PermissionDenied,
        Self::ResourceExhausted,
        Self::FailedPrecondition,
        Self::Aborted,
        Self::OutOfRange,
        Self::Unimplemented,
        Self::Internal,
        Self::Unavailable,
        Self::DataLoss,
        Self::Unauthenticated,
    ];

    /// The code with this number, if gRPC defines it.
    pub fn from_u32(n: u32) -> Option<Self> {
        Self::ALL.get(n as usize).copied()
    }

    /// The code's number.
    pub const fn as_u32(self) -> u32 {
        self as u32
    }

    /// The canonical name, e.g. `NOT_FOUND`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "OK",
            Self::Cancelled => "CANCELLED",
            Self::Unknown => "UNKNOWN",
            Self::InvalidArgument => "INVALID_ARGUMENT",
            Self::DeadlineExceeded => "DEADLINE_EXCEEDED",
            Self::NotFound => "NOT_FOUND",
            Self::AlreadyExists => "ALREADY_EXISTS",
            Self::PermissionDenied => "PERMISSION_DENIED",
            Self::ResourceExhausted => "RESOURCE_EXHAUSTED",
            Self::FailedPrecondition => "FAILED_PRECONDITION",
            Self::Aborted => "ABORTED",
            Self::OutOfRange => "OUT_OF_RANGE",
            Self::Unimplemented => "UNIMPLEMENTED",
            Self::Internal => "INTERNAL",
            Self::Unavailable => "UNAVAILABLE",
            Self::DataLoss => "DATA_LOSS",
            Self::Unauthenticated => "UNAUTHENTICATED",
        }
    }

    /// Whether a server span with this status is an error (sonde's convention, from the
    /// OpenTelemetry gRPC semantic conventions): UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED,
    /// INTERNAL, UNAVAILABLE and DATA_LOSS. The other codes describe the client's request.
    pub const fn is_server_error(self) -> bool {
        matches!(
            self,
            Self::Unknown
                | Self::DeadlineExceeded
                | Self::Unimplemented
                | Self::Internal
                | Self::Unavailable
                | Self::DataLoss
        )
    }

    /// Whether a client span with this status is an error: anything but OK.
    pub const fn is_client_error(self) -> bool {
        !matches!(self, Self::Ok)
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which end of a call a span describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// The caller.
    Client,
    /// The callee.
    Server,
}

/// Whether a call that ended with status number `status` is an error for `role`. Numbers gRPC
/// does not define count as UNKNOWN, as gRPC clients read them.
pub fn is_error(status: u32, role: Role) -> bool {
    let code = Code::from_u32(status).unwrap_or(Code::Unknown);
    match role {
        Role::Client => code.is_client_error(),
        Role::Server => code.is_server_error(),
    }
}

/// Decodes a `grpc-message` value: percent-encoded UTF-8 (gRPC's PROTOCOL-HTTP2 spec). A `%`
/// not followed by two hex digits is kept as is; invalid UTF-8 becomes U+FFFD.
pub fn percent_decode(value: &[u8]) -> String {
    let mut out = Vec::with_capacity(value.len());
    let mut i = 0;
    while i < value.len() {
        let b = value[i];
        let hex = |j: usize| value.get(j).and_then(|&c| (c as char).to_digit(16));
        match (b, hex(i + 1), hex(i + 2)) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// gRPC messages seen in one direction of a call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Messages {
    /// Messages whose length prefix was seen (gRPC-Web trailer frames excluded).
    pub count: u32,
    /// Of which were flagged compressed.
    pub compressed: u32,
    /// The count is exact: every prefix was seen and the last message ended with the stream.
    /// False when a capture gap hid a prefix (the count is then a lower bound) or the stream
    /// ended inside a message.
    pub exact: bool,
}

/// Counts length-prefixed messages in one direction's DATA, incrementally and without
/// buffering. A gap inside a message body is skipped by length; a gap over a prefix loses the
/// count's exactness for good (there is nothing to resynchronise on).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MessageCounter {
    prefix: [u8; 5],
    have: u8,
    /// Body bytes left in the current message.
    remaining: u64,
    count: u32,
    compressed: u32,
    lost: bool,
}

impl MessageCounter {
    /// A counter at the start of a direction's DATA.
    pub fn new() -> Self {
        Self::default()
    }

    /// DATA content bytes, in order.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.lost {
                return;
            }
            if self.remaining > 0 {
                let n = (bytes.len() as u64).min(self.remaining);
                self.remaining -= n;
                bytes = &bytes[n as usize..];
                continue;
            }
            let take = (5 - usize::from(self.have)).min(bytes.len());
            self.prefix[usize::from(self.have)..][..take].copy_from_slice(&bytes[..take]);
            self.have += take as u8;
            bytes = &bytes[take..];
            if self.have == 5 {
                self.have = 0;
                let flags = self.prefix[0];
                let len = u32::from_be_bytes([
                    self.prefix[1],
                    self.prefix[2],
                    self.prefix[3],
                    self.prefix[4],
                ]);
                // gRPC-Web carries its trailers as a body frame with the MSB of the flags set.
                if flags & 0x80 == 0 {
                    self.count = self.count.saturating_add(1);
                    if flags & 1 != 0 {
                        self.compressed = self.compressed.saturating_add(1);
                    }
                }
                self.remaining = u64::from(len);
            }
        }
    }

    /// `n` DATA content bytes were not captured.
    pub fn skip(&mut self, n: u64) {
        if n == 0 || self.lost {
            return;
        }
        if self.have == 0 && n <= self.remaining {
            self.remaining -= n;
        } else {
            self.lost = true;
        }
    }

    /// The count so far; `ended` says the direction's stream ended (END_STREAM) here.
    pub fn messages(&self, ended: bool) -> Messages {
        Messages {
            count: self.count,
            compressed: self.compressed,
            exact: ended && !self.lost && self.have == 0 && self.remaining == 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        for ct in [
            "application/grpc",
            "application/grpc+proto",
            "application/grpc+json",
            "application/grpc;charset=utf-8",
            "Application/GRPC",
            "application/grpc-web+proto",
        ] {
            assert!(is_grpc_content_type(ct.as_bytes()), "{ct}");
        }
        for ct in [
            "application/grpcx",
            "application/json",
            "application/grp",
            "",
        ] {
            assert!(!is_grpc_content_type(ct.as_bytes()), "{ct}");
        }
        assert!(is_grpc_web_content_type(b"application/grpc-web-text"));
        assert!(!is_grpc_web_content_type(b"application/grpc"));
    }

    #[test]
    fn paths() {
        assert_eq!(
            parse_path("/helloworld.Greeter/SayHello"),
            Some(("helloworld.Greeter", "SayHello"))
        );
        assert_eq!(parse_path("/Svc/M?x=1"), Some(("Svc", "M")));
        for bad in ["", "/", "//M", "/Svc/", "/Svc", "Svc/M", "/a/b/c"] {
            assert_eq!(parse_path(bad), None, "{bad}");
        }
    }

    #[test]
    fn codes_names_and_error_conventions() {
        assert_eq!(Code::ALL.len(), 17);
        for (i, c) in Code::ALL.iter().enumerate() {
            assert_eq!(c.as_u32(), i as u32);
            assert_eq!(Code::from_u32(i as u32), Some(*c));
        }
        assert_eq!(Code::from_u32(17), None);
        assert_eq!(Code::NotFound.to_string(), "NOT_FOUND");
        assert_eq!(Code::Unauthenticated.as_str(), "UNAUTHENTICATED");
        let server: Vec<&str> = Code::ALL
            .iter()
            .filter(|c| c.is_server_error())
            .map(|c| c.as_str())
            .collect();
        assert_eq!(
            server,
            [
                "UNKNOWN",
                "DEADLINE_EXCEEDED",
                "UNIMPLEMENTED",
                "INTERNAL",
                "UNAVAILABLE",
                "DATA_LOSS"
            ]
        );
        assert_eq!(Code::ALL.iter().filter(|c| c.is_client_error()).count(), 16);
        assert!(!is_error(5, Role::Server) && is_error(5, Role::Client));
        assert!(is_error(99, Role::Server), "undefined reads as UNKNOWN");
        assert!(!is_error(0, Role::Client));
    }

    #[test]
    fn messages_are_percent_decoded() {
        assert_eq!(
            percent_decode(b"no such key: caf%C3%A9 100%25"),
            "no such key: café 100%"
        );
        assert_eq!(percent_decode(b"50% off %zz %4"), "50% off %zz %4");
        assert_eq!(percent_decode(b"%FF"), "\u{fffd}");
    }

    #[test]
    fn counting_messages_across_frames() {
        let mut m = MessageCounter::new();
        // Two messages (3 and 0 bytes) and a compressed one of 2, fed in awkward pieces.
        let wire = [
            0, 0, 0, 0, 3, b'a', b'b', b'c', 0, 0, 0, 0, 0, 1, 0, 0, 0, 2, b'x', b'y',
        ];
        for chunk in wire.chunks(3) {
            m.feed(chunk);
        }
        assert_eq!(
            m.messages(true),
            Messages {
                count: 3,
                compressed: 1,
                exact: true
            }
        );
        assert!(!m.messages(false).exact, "not ended");
        // A message cut by the end of the stream.
        let mut m = MessageCounter::new();
        m.feed(&[0, 0, 0, 0, 9, b'a']);
        assert_eq!(
            m.messages(true),
            Messages {
                count: 1,
                compressed: 0,
                exact: false
            }
        );
        // A gap inside a body is skipped; one over a prefix loses exactness.
        let mut m = MessageCounter::new();
        m.feed(&[0, 0, 0, 0x10, 0]);
        m.skip(4096);
        m.feed(&[0, 0, 0, 0, 0]);
        assert_eq!(
            m.messages(true),
            Messages {
                count: 2,
                compressed: 0,
                exact: true
            }
        );
        m.skip(1);
        m.feed(&[0, 0, 0, 0, 0]);
        assert_eq!(
            m.messages(true),
            Messages {
                count: 2,
                compressed: 0,
                exact: false
            }
        );
        // gRPC-Web trailer frames are not messages.
        let mut m = MessageCounter::new();
        m.feed(&[0, 0, 0, 0, 1, b'a', 0x80, 0, 0, 0, 2, b'o', b'k']);
        assert_eq!(m.messages(true).count, 1);
    }
}
