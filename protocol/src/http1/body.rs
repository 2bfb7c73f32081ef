//! Message bodies: delimited, counted, never buffered.
//!
//! Which framing a message has is decided from its head (RFC 9112 §6.3), by the connection,
//! because a response's framing depends on the request it answers:
//!
//! ```text
//! response to HEAD, 1xx, 204, 304          no body
//! response 101, or 2xx to CONNECT           the connection stops being HTTP/1
//! Transfer-Encoding ending in "chunked"     chunked (wins over Content-Length)
//! other Transfer-Encoding                   response: until close; request: invalid
//! Content-Length: N                         N bytes (all values must agree)
//! none of the above                         response: until close; request: no body
//! ```
//!
//! Chunked bodies are decoded by a byte-level state machine that keeps only counters, so chunk
//! sizes, extensions and trailers split across syscalls cost nothing to resume:
//!
//! ```text
//! chunked-body = *chunk last-chunk trailer-section CRLF
//! chunk        = chunk-size [ BWS chunk-ext ] CRLF chunk-data CRLF
//! chunk-size   = 1*16HEXDIG                       (larger does not fit a u64: invalid)
//! chunk-ext    = *( ";" name [ "=" value ] )      skipped, at most max_chunk_line bytes
//! last-chunk   = 1*"0" [ chunk-ext ] CRLF
//! trailer-section = *( field-line CRLF )          skipped, counted against the head limits
//! ```

use super::Limits;
use super::error::ErrorKind;
use super::headers::{Headers, ResponseHead, trim_ows};

/// How a message's body is delimited, as decided from its head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body: the message ends with its head.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Everything until the connection ends (responses only).
    UntilClose,
    /// The head makes the length unknowable; the error was reported, the stream resyncs.
    Invalid,
    /// The connection switches protocol after this head; parsing stops.
    Stop,
}

/// A body in progress.
#[derive(Clone, Debug)]
pub(crate) struct Body {
    kind: Kind,
    /// Body bytes so far (chunked framing excluded), gap bytes included.
    len: u64,
    /// Body bytes that were in capture gaps.
    uncaptured: u64,
}

#[derive(Clone, Debug)]
enum Kind {
    Length { remaining: u64 },
    Chunked(Chunked),
    UntilClose,
}

/// Outcome of feeding bytes to a body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Feed {
    /// The body ended after the first `n` bytes.
    Done(usize),
    /// All bytes were body; more to come.
    More,
}

/// Invalid framing at `data[at]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BodyError {
    pub kind: ErrorKind,
    pub at: usize,
}

/// Outcome of a capture gap inside a body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GapOutcome {
    /// The whole gap was body; the body goes on (or ended exactly at the gap's end: `Ended`).
    Inside,
    /// The body ended after `used` bytes of the gap; the rest of the gap is past the message.
    Ended { used: u64 },
    /// The gap hides framing: the end of the body cannot be found.
    Broken,
}

impl Body {
    pub(crate) fn new(framing: Framing) -> Option<Self> {
        let kind = match framing {
            Framing::Length(n) if n > 0 => Kind::Length { remaining: n },
            Framing::Chunked => Kind::Chunked(Chunked::default()),
            Framing::UntilClose => Kind::UntilClose,
            _ => return None,
        };
        Some(Self {
            kind,
            len: 0,
            uncaptured: 0,
        })
    }

    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    pub(crate) fn uncaptured(&self) -> u64 {
        self.uncaptured
    }

    pub(crate) fn is_chunked(&self) -> bool {
        matches!(self.kind, Kind::Chunked(_))
    }

    /// Delimited by the end of the connection.
    pub(crate) fn until_close(&self) -> bool {
        matches!(self.kind, Kind::UntilClose)
    }

    pub(crate) fn feed(&mut self, data: &[u8], limits: &Limits) -> Result<Feed, BodyError> {
        match &mut self.kind {
            Kind::Length { remaining } => {
                let n = data
                    .len()
                    .min(usize::try_from(*remaining).unwrap_or(usize::MAX));
                *remaining -= n as u64;
                self.len += n as u64;
                Ok(if *remaining == 0 {
                    Feed::Done(n)
                } else {
                    Feed::More
                })
            }
            Kind::Chunked(c) => c.feed(data, &mut self.len, limits),
            Kind::UntilClose => {
                self.len += data.len() as u64;
                Ok(Feed::More)
            }
        }
    }

    /// `len` bytes of the body's stream were not captured.
    pub(crate) fn gap(&mut self, len: u64) -> GapOutcome {
        let (inside, ended) = match &mut self.kind {
            Kind::Length { remaining } => {
                let used = len.min(*remaining);
                *remaining -= used;
                (used, *remaining == 0)
            }
            Kind::Chunked(c) => match &mut c.state {
                State::Data { remaining } if *remaining >= len => {
                    *remaining -= len;
                    if *remaining == 0 {
                        c.state = State::DataCr;
                    }
                    (len, false)
                }
                _ => return GapOutcome::Broken,
            },
            Kind::UntilClose => (len, false),
        };
        self.len += inside;
        self.uncaptured += inside;
        if ended {
            GapOutcome::Ended { used: inside }
        } else {
            GapOutcome::Inside
        }
    }
}

#[derive(Clone, Debug, Default)]
struct Chunked {
    state: State,
    /// Bytes of the current chunk-size line's extension.
    ext_bytes: usize,
    trailer_lines: usize,
    trailer_bytes: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// In chunk-size: `digits` hex digits read so far.
    Size {
        value: u64,
        digits: u8,
    },
    /// After chunk-size: whitespace and extensions up to the line end.
    Ext {
        value: u64,
    },
    /// CR seen at the end of the size line.
    SizeLf {
        value: u64,
    },
    Data {
        remaining: u64,
    },
    /// Expecting the CRLF after chunk-data.
    DataCr,
    DataLf,
    /// At the start of a trailer line, or of the final empty line.
    TrailerStart,
    TrailerLine,
    /// CR seen; `empty`: it ends the empty line that closes the body.
    TrailerLf {
        empty: bool,
    },
}

impl Default for State {
    fn default() -> Self {
        Self::Size {
            value: 0,
            digits: 0,
        }
    }
}

impl Chunked {
    fn feed(&mut self, data: &[u8], len: &mut u64, limits: &Limits) -> Result<Feed, BodyError> {
        let invalid = |at| BodyError {
            kind: ErrorKind::InvalidChunk,
            at,
        };
        let mut i = 0;
        while i < data.len() {
            let b = data[i];
            self.state = match self.state {
                State::Data { remaining } => {
                    let avail = data.len() - i;
                    let n = avail.min(usize::try_from(remaining).unwrap_or(usize::MAX));
                    *len += n as u64;
                    i += n;
                    let remaining = remaining - n as u64;
                    self.state = if remaining == 0 {
                        State::DataCr
                    } else {
                        State::Data { remaining }
                    };
                    continue;
                }
                State::Size { value, digits } => match hex(b) {
                    Some(d) if digits < 16 => State::Size {
                        value: value << 4 | u64::from(d),
                        digits: digits + 1,
                    },
                    Some(_) => return Err(invalid(i)),
                    None if digits == 0 => return Err(invalid(i)),
                    None => match b {
                        b'\r' => State::SizeLf { value },
                        b'\n' => self.size_line_done(value),
                        b' ' | b'\t' | b';' => {
                            self.ext_bytes = 1;
                            State::Ext { value }
                        }
                        _ => return Err(invalid(i)),
                    },
                },
                State::Ext { value } => match b {
                    b'\r' => State::SizeLf { value },
                    b'\n' => self.size_line_done(value),
                    _ if is_ctl(b) => return Err(invalid(i)),
                    _ => {
                        self.ext_bytes += 1;
                        if self.ext_bytes > limits.max_chunk_line_bytes {
                            return Err(invalid(i));
                        }
                        State::Ext { value }
                    }
                },
                State::SizeLf { value } if b == b'\n' => self.size_line_done(value),
                State::DataCr if b == b'\r' => State::DataLf,
                State::DataCr | State::DataLf if b == b'\n' => State::default(),
                State::TrailerStart => match b {
                    b'\r' => State::TrailerLf { empty: true },
                    b'\n' => return Ok(Feed::Done(i + 1)),
                    _ => {
                        self.trailer_lines += 1;
                        if self.trailer_lines > limits.max_headers {
                            return Err(BodyError {
                                kind: ErrorKind::TrailerTooLarge,
                                at: i,
                            });
                        }
                        // Re-read this byte as the first of the line.
                        self.state = State::TrailerLine;
                        continue;
                    }
                },
                State::TrailerLine => match b {
                    b'\r' => State::TrailerLf { empty: false },
                    b'\n' => State::TrailerStart,
                    _ if is_ctl(b) => return Err(invalid(i)),
                    _ => State::TrailerLine,
                },
                State::TrailerLf { empty: true } if b == b'\n' => return Ok(Feed::Done(i + 1)),
                State::TrailerLf { empty: false } if b == b'\n' => State::TrailerStart,
                State::SizeLf { .. } | State::DataCr | State::DataLf | State::TrailerLf { .. } => {
                    return Err(invalid(i));
                }
            };
            if matches!(self.state, State::TrailerLine | State::TrailerLf { .. }) {
                self.trailer_bytes += 1;
                if self.trailer_bytes > limits.max_head_bytes {
                    return Err(BodyError {
                        kind: ErrorKind::TrailerTooLarge,
                        at: i,
                    });
                }
            }
            i += 1;
        }
        Ok(Feed::More)
    }

    fn size_line_done(&mut self, value: u64) -> State {
        self.ext_bytes = 0;
        if value == 0 {
            State::TrailerStart
        } else {
            State::Data { remaining: value }
        }
    }
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

fn is_ctl(b: u8) -> bool {
    (b < 0x20 && b != b'\t') || b == 0x7f
}

pub(crate) fn request_framing(headers: &Headers) -> Result<Framing, ErrorKind> {
    match transfer_coding(headers) {
        Coding::Chunked => Ok(Framing::Chunked),
        Coding::Other => Err(ErrorKind::InvalidTransferEncoding),
        Coding::None => Ok(match content_length(headers)? {
            Some(n) => Framing::Length(n),
            None => Framing::Empty,
        }),
    }
}

pub(crate) fn response_framing(
    head_request: bool,
    head: &ResponseHead,
) -> Result<Framing, ErrorKind> {
    if head_request || matches!(head.status, 100..=199 | 204 | 304) {
        return Ok(Framing::Empty);
    }
    Ok(match transfer_coding(&head.headers) {
        Coding::Chunked => Framing::Chunked,
        Coding::Other => Framing::UntilClose,
        Coding::None => match content_length(&head.headers)? {
            Some(n) => Framing::Length(n),
            None => Framing::UntilClose,
        },
    })
}

enum Coding {
    None,
    Chunked,
    Other,
}

/// `chunked` only counts as the final coding (RFC 9112 §6.3).
fn transfer_coding(headers: &Headers) -> Coding {
    let mut codings = headers
        .get_all("transfer-encoding")
        .flat_map(|v| v.split(|&b| b == b','))
        .map(trim_ows)
        .peekable();
    if codings.peek().is_none() {
        return Coding::None;
    }
    let mut chunked_last = false;
    for c in codings {
        if chunked_last && !c.is_empty() {
            return Coding::Other;
        }
        chunked_last = c.eq_ignore_ascii_case(b"chunked");
    }
    if chunked_last {
        Coding::Chunked
    } else {
        Coding::Other
    }
}

/// All `Content-Length` values (comma lists included) must be the same number.
fn content_length(headers: &Headers) -> Result<Option<u64>, ErrorKind> {
    let mut found = None;
    for value in headers
        .get_all("content-length")
        .flat_map(|v| v.split(|&b| b == b','))
    {
        let digits = trim_ows(value);
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return Err(ErrorKind::InvalidContentLength);
        }
        let n = digits.iter().try_fold(0u64, |n, &d| {
            n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        });
        match (n, found) {
            (None, _) => return Err(ErrorKind::InvalidContentLength),
            (Some(n), Some(prev)) if n != prev => return Err(ErrorKind::InvalidContentLength),
            (Some(n), _) => found = Some(n),
        }
    }
    Ok(found)
}

#[cfg(test)]
#[path = "body_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "framing_tests.rs"]
mod framing_tests;
