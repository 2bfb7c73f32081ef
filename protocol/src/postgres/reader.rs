//! Cuts one direction's bytes into messages, keeping at most `max_message_bytes` of each.
//!
//! ```text
//! regular message   tag:u8  len:u32be (counts itself, not the tag)  body: len-4 bytes
//! startup packet            len:u32be (counts itself)  code:u32be  body: len-8 bytes
//!     code 0x00030000 StartupMessage (v3.0)   80877102 CancelRequest
//!     code 80877103   SSLRequest              80877104 GSSENCRequest
//! SSL/GSS answer    one byte, 'S' (go encrypt) or 'N' (go on in clear), no framing
//! ```

use super::error::ErrorKind;
use crate::db::{Body, Limits, Side};

/// The startup codes that may open a request stream.
pub(crate) const PROTOCOL_3: u32 = 0x0003_0000;
pub(crate) const CANCEL: u32 = 80_877_102;
pub(crate) const SSL: u32 = 80_877_103;
pub(crate) const GSSENC: u32 = 80_877_104;

/// Type bytes a client sends after startup.
const REQUEST_TAGS: &[u8] = b"QPBEDCHSXFdcfp";
/// Type bytes a server sends.
const RESPONSE_TAGS: &[u8] = b"RKSZTDCIENAt123nsGHWdcVv";

/// One message, its body kept up to the limit.
#[derive(Debug)]
pub(crate) struct Msg {
    /// The type byte; 0 for a startup packet (whose code is the first 4 bytes of `body`).
    pub tag: u8,
    pub body: Vec<u8>,
    /// Declared body length.
    pub len: u64,
    pub truncated: bool,
    pub first: u64,
    pub last: u64,
}

/// What the reader found.
#[derive(Debug)]
pub(crate) enum Item {
    Msg(Msg),
    /// The one-byte answer to SSLRequest/GSSENCRequest.
    EncryptionAnswer {
        byte: u8,
        offset: u64,
    },
    Error {
        kind: ErrorKind,
        offset: u64,
    },
    /// While lost: a complete `ReadyForQuery` just ended.
    Ready,
}

#[derive(Debug)]
enum State {
    Startup { hdr: [u8; 8], n: usize, first: u64 },
    EncryptionAnswer,
    Head { hdr: [u8; 5], n: usize, first: u64 },
    Body { tag: u8, body: Body },
    Lost { window: [u8; 6], n: usize },
}

#[derive(Debug)]
pub(crate) struct Reader {
    side: Side,
    state: State,
    /// Stream offset of the next byte.
    pub pos: u64,
}

/// `Z`, length 5, then the transaction status.
const READY: [u8; 5] = [b'Z', 0, 0, 0, 5];

impl Reader {
    pub(crate) fn new(side: Side) -> Self {
        let state = match side {
            Side::Request => State::Startup {
                hdr: [0; 8],
                n: 0,
                first: 0,
            },
            Side::Response => State::Head {
                hdr: [0; 5],
                n: 0,
                first: 0,
            },
        };
        Self {
            side,
            state,
            pos: 0,
        }
    }

    /// A side that does not know where it is.
    pub(crate) fn lost(side: Side) -> Self {
        let mut r = Self::new(side);
        r.lose();
        r
    }

    pub(crate) fn start_at(&mut self, pos: u64) {
        self.pos = pos;
        if let State::Startup { first, .. } | State::Head { first, .. } = &mut self.state {
            *first = pos;
        }
    }

    pub(crate) fn lose(&mut self) {
        self.state = State::Lost {
            window: [0; 6],
            n: 0,
        };
    }

    pub(crate) fn is_lost(&self) -> bool {
        matches!(self.state, State::Lost { .. })
    }

    /// Parse regular messages from the next byte on.
    pub(crate) fn resume(&mut self) {
        self.state = State::Head {
            hdr: [0; 5],
            n: 0,
            first: self.pos,
        };
    }

    /// The next message is a startup packet (after an SSLRequest answered `N`).
    pub(crate) fn expect_startup(&mut self) {
        self.state = State::Startup {
            hdr: [0; 8],
            n: 0,
            first: self.pos,
        };
    }

    /// The next byte answers an SSLRequest or GSSENCRequest.
    pub(crate) fn expect_encryption_answer(&mut self) {
        if matches!(self.state, State::Head { n: 0, .. }) {
            self.state = State::EncryptionAnswer;
        }
    }

    /// Bytes held for an incomplete message.
    pub(crate) fn buffered(&self) -> usize {
        match &self.state {
            State::Body { body, .. } => body.kept.len(),
            State::Startup { n, .. } => *n,
            State::Head { n, .. } => *n,
            _ => 0,
        }
    }

    /// Heap bytes held: the kept body of the message being read.
    pub(crate) fn heap_bytes(&self) -> usize {
        match &self.state {
            State::Body { body, .. } => body.heap_bytes(),
            _ => 0,
        }
    }

    /// Inside a message (the connection must not end here).
    pub(crate) fn mid_message(&self) -> bool {
        match &self.state {
            State::Startup { n, .. } | State::Head { n, .. } => *n > 0,
            State::Body { .. } => true,
            _ => false,
        }
    }

    /// `len` bytes not captured: true if they were skippable body bytes.
    pub(crate) fn gap(&mut self, len: u64) -> bool {
        self.pos = self.pos.saturating_add(len);
        match &mut self.state {
            State::Body { body, .. } => body.skip_gap(len),
            State::Lost { n, .. } => {
                *n = 0;
                true
            }
            _ => false,
        }
    }

    /// Reads from `input` up to the next item; `None` when `input` is used up.
    pub(crate) fn next(&mut self, input: &mut &[u8], limits: &Limits) -> Option<Item> {
        loop {
            if input.is_empty() {
                return None;
            }
            match &mut self.state {
                State::Lost { window, n } => {
                    // Scan for a complete ReadyForQuery (response side only).
                    let b = input[0];
                    *input = &input[1..];
                    self.pos += 1;
                    if self.side == Side::Request {
                        continue;
                    }
                    if *n == 6 {
                        window.copy_within(1.., 0);
                        *n = 5;
                    }
                    window[*n] = b;
                    *n += 1;
                    if *n == 6 && window[..5] == READY && b"IET".contains(&window[5]) {
                        *n = 0;
                        return Some(Item::Ready);
                    }
                }
                State::EncryptionAnswer => {
                    let byte = input[0];
                    let offset = self.pos;
                    *input = &input[1..];
                    self.pos += 1;
                    self.resume();
                    return Some(Item::EncryptionAnswer { byte, offset });
                }
                State::Startup { hdr, n, first } => {
                    let k = (8 - *n).min(input.len());
                    hdr[*n..*n + k].copy_from_slice(&input[..k]);
                    *n += k;
                    *input = &input[k..];
                    self.pos += k as u64;
                    if *n < 8 {
                        return None;
                    }
                    let first = *first;
                    let len = u32::from_be_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
                    let code = [hdr[4], hdr[5], hdr[6], hdr[7]];
                    if !(8..=10_000).contains(&len) {
                        self.lose();
                        return Some(Item::Error {
                            kind: ErrorKind::MalformedLength { len },
                            offset: first,
                        });
                    }
                    let c = u32::from_be_bytes(code);
                    if c != PROTOCOL_3 && c != CANCEL && c != SSL && c != GSSENC {
                        self.lose();
                        return Some(Item::Error {
                            kind: ErrorKind::UnknownStartup { code: c },
                            offset: first,
                        });
                    }
                    let mut body = Body::new(first, u64::from(len - 8), limits.max_message_bytes);
                    // The code is kept at the front of the body.
                    body.kept.extend_from_slice(&code);
                    body.len += 4;
                    self.state = State::Body { tag: 0, body };
                }
                State::Head { hdr, n, first } => {
                    let k = (5 - *n).min(input.len());
                    hdr[*n..*n + k].copy_from_slice(&input[..k]);
                    *n += k;
                    *input = &input[k..];
                    self.pos += k as u64;
                    if *n < 5 {
                        return None;
                    }
                    let first = *first;
                    let tag = hdr[0];
                    let len = u32::from_be_bytes([hdr[1], hdr[2], hdr[3], hdr[4]]);
                    let tags = match self.side {
                        Side::Request => REQUEST_TAGS,
                        Side::Response => RESPONSE_TAGS,
                    };
                    let kind = if !tags.contains(&tag) {
                        Some(ErrorKind::UnknownMessage { tag })
                    } else if len < 4 {
                        Some(ErrorKind::MalformedLength { len })
                    } else if u64::from(len - 4) > limits.max_declared_len {
                        Some(ErrorKind::TooLarge {
                            len: u64::from(len),
                        })
                    } else {
                        None
                    };
                    if let Some(kind) = kind {
                        self.lose();
                        return Some(Item::Error {
                            kind,
                            offset: first,
                        });
                    }
                    let keep = match (self.side, tag) {
                        // Rows and copy data are counted, passwords never read.
                        (Side::Response, b'D' | b'd' | b'R' | b'T')
                        | (Side::Request, b'd' | b'p') => 0,
                        _ => limits.max_message_bytes,
                    };
                    self.state = State::Body {
                        tag,
                        body: Body::new(first, u64::from(len - 4), keep),
                    };
                }
                State::Body { body, .. } => {
                    let used = body.take(input);
                    *input = &input[used..];
                    self.pos += used as u64;
                }
            }
            if let State::Body { tag, body } = &mut self.state
                && body.done()
            {
                let msg = Msg {
                    tag: *tag,
                    truncated: body.truncated(),
                    len: body.len,
                    first: body.first,
                    last: self.pos - 1,
                    body: std::mem::take(&mut body.kept),
                };
                self.resume();
                return Some(Item::Msg(msg));
            }
        }
    }
}
