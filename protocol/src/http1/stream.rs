//! One direction of a connection: bytes and gaps in, message boundaries out to [`Pairing`].
//!
//! ```text
//!            ┌──────── head complete, body to read ───────┐
//!            │                                             ▼
//!   Idle ──► Head ── head complete, no body ──► Idle     Body ── body ends ──► Idle
//!    ▲        │                                             │
//!    │        └─ bad head / gap in head ─┐    gap in framing / bad chunk ─┐
//!    │                                   ▼                                ▼
//!    └─── a tentative head confirms ◄── Resync: try a head at every byte that could start one
//! ```
//!
//! A head that starts at a message boundary is a message as soon as its first bytes look like
//! one (`detect`'s rule): from then on it keeps its pairing slot even if it fails, and scanning
//! resumes where it failed. A head tried while resynchronising is *tentative*: it becomes a
//! message only once its whole start line is valid (`GET /x HTTP/1.1`, `HTTP/1.1 200 OK`); if
//! it fails before that, scanning resumes one byte after where it began, replaying the few
//! bytes buffered for it. Every byte is a candidate, not only those after an LF, because a
//! response usually follows a body that does not end in one; the byte-by-byte start line check
//! keeps that linear. Only an incomplete head is ever buffered.

use super::body::{Body, Feed, Framing, GapOutcome};
use super::error::ErrorKind;
use super::head::{self, HeadScanner, Scan};
use super::pairing::{Failure, Pairing};
use super::{EndReason, Extent, Http1Event, Limits, Side};
use crate::detect;

/// Buffers larger than this are released once their head is done.
pub(crate) const KEEP_CAPACITY: usize = 4096;

/// What a stream needs from the connection while it works.
pub(crate) struct Cx<'a> {
    pub pair: &'a mut Pairing,
    pub limits: &'a Limits,
    pub out: &'a mut Vec<Http1Event>,
}

#[derive(Debug)]
pub(crate) struct Stream {
    side: Side,
    state: State,
    /// The bytes of an incomplete head (at most `max_head_bytes`).
    buf: Vec<u8>,
    /// Offset of the next byte expected; `None` before the first call.
    next: Option<u64>,
}

#[derive(Debug)]
enum State {
    /// At a message boundary; stray CR/LF between messages are skipped.
    Idle,
    Head(HeadState),
    Body {
        body: Body,
        first: u64,
        last: u64,
    },
    /// Looking for a message start.
    Resync,
    /// Request side: bytes that are not HTTP after a request that may switch protocols, held
    /// (skipped, not yet reported) until the response says whether it switched.
    Held,
    Stopped,
}

#[derive(Debug)]
struct HeadState {
    first: u64,
    scanner: HeadScanner,
    /// Tried while resynchronising, and its start line not yet complete: not a message yet.
    tentative: bool,
    /// The pairing was told this message started.
    started: bool,
}

/// Where feeding goes on after a head step.
enum Step {
    /// At this index of the current bytes.
    At(usize),
    /// After scanning `bytes` (earlier bytes, at `offset`, given back by a failed tentative
    /// head) again, at this index of the current bytes.
    Replay {
        offset: u64,
        bytes: Vec<u8>,
        then: usize,
    },
}

impl Stream {
    pub(crate) fn new(side: Side) -> Self {
        Self {
            side,
            state: State::Idle,
            buf: Vec::new(),
            next: None,
        }
    }

    /// Bytes buffered for an incomplete head.
    pub(crate) fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Heap bytes held: the buffer of an incomplete head (kept up to [`KEEP_CAPACITY`] between
    /// heads). The head and body states own nothing on the heap.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.buf.capacity()
    }

    pub(crate) fn data(&mut self, offset: u64, bytes: &[u8], cx: &mut Cx<'_>) {
        let (mut offset, mut bytes) = (offset, bytes);
        if let Some(next) = self.next {
            if offset > next {
                self.gap_at(next, offset - next, cx);
            } else if offset < next {
                // Already seen: the caller promised this does not happen; ignore the overlap.
                let seen = usize::try_from(next - offset).unwrap_or(usize::MAX);
                bytes = bytes.get(seen..).unwrap_or_default();
                offset = next;
            }
        }
        if bytes.is_empty() {
            self.next.get_or_insert(offset);
            return;
        }
        self.next = Some(offset + bytes.len() as u64);
        self.feed(offset, bytes, cx);
    }

    pub(crate) fn gap(&mut self, offset: u64, len: u64, cx: &mut Cx<'_>) {
        let end = offset.saturating_add(len);
        let start = match self.next {
            Some(next) if end <= next => return,
            Some(next) => next,
            None => offset,
        };
        if end > start {
            self.next = Some(end);
            self.gap_at(start, end - start, cx);
        }
    }

    fn feed(&mut self, off: u64, bytes: &[u8], cx: &mut Cx<'_>) {
        let mut pos = 0;
        while pos < bytes.len() {
            match &mut self.state {
                State::Stopped => return,
                State::Idle => {
                    pos += bytes[pos..]
                        .iter()
                        .take_while(|&&b| b == b'\r' || b == b'\n')
                        .count();
                    if pos < bytes.len() {
                        self.begin_head(off + pos as u64, false);
                    }
                }
                State::Resync => match next_candidate(self.side, &bytes[pos..]) {
                    Some(i) => {
                        pos += i;
                        self.begin_head(off + pos as u64, true);
                    }
                    None => pos = bytes.len(),
                },
                State::Held => pos = bytes.len(),
                State::Head(_) => match self.head_bytes(bytes, pos, cx) {
                    Step::At(next) => pos = next,
                    Step::Replay {
                        offset,
                        bytes: replay,
                        then,
                    } => {
                        // The replayed bytes hold no complete head that failed before, so this
                        // recursion ends at once: at most one more buffered tentative head.
                        self.feed(offset, &replay, cx);
                        pos = then;
                    }
                },
                State::Body { .. } => pos = self.body_bytes(off, bytes, pos, cx),
            }
        }
    }

    fn begin_head(&mut self, first: u64, tentative: bool) {
        self.state = State::Head(HeadState {
            first,
            scanner: HeadScanner::new(self.side, tentative),
            tentative,
            started: false,
        });
    }

    /// Feeds head bytes from `bytes[pos..]`.
    fn head_bytes(&mut self, bytes: &[u8], pos: usize, cx: &mut Cx<'_>) -> Step {
        let Self {
            side, state, buf, ..
        } = self;
        let State::Head(h) = state else {
            return Step::At(bytes.len());
        };
        let rest = &bytes[pos..];
        let base = buf.len();
        // Zero-copy when the head starts in this call; else append what fits and scan the buffer.
        let result = if base == 0 {
            h.scanner
                .scan(rest, cx.limits.max_headers, cx.limits.max_head_bytes)
        } else {
            let room = cx.limits.max_head_bytes.saturating_sub(base);
            buf.extend_from_slice(&rest[..rest.len().min(room)]);
            h.scanner
                .scan(buf, cx.limits.max_headers, cx.limits.max_head_bytes)
        };
        let (side, first) = (*side, h.first);
        // A tentative head is a message once its start line is complete; any other head once
        // its first bytes look like one.
        let confirmed = !h.tentative || h.scanner.start_line_done();
        if !h.started && h.scanner.plausible() && confirmed {
            h.started = true;
            h.tentative = false;
            cx.pair.start(side, first, cx.out);
        }
        let (started, tentative) = (h.started, h.tentative);
        match result {
            Ok(Scan::NeedMore) => {
                if base == 0 {
                    buf.extend_from_slice(rest);
                }
                Step::At(pos + (buf.len() - base))
            }
            Ok(Scan::Complete(n)) => {
                let head_bytes = if base == 0 {
                    rest.get(..n)
                } else {
                    buf.get(..n)
                };
                let parsed = head_bytes.and_then(|b| head::parse(side, b));
                if !started {
                    cx.pair.start(side, first, cx.out);
                }
                self.release_buf();
                let last = first + n as u64 - 1;
                match parsed {
                    Some(parsed) => {
                        let framing = cx.pair.head(side, parsed, first, last, cx.out);
                        self.after_head(framing, first, last, cx);
                    }
                    None => {
                        let kind = ErrorKind::MalformedHeader;
                        cx.pair.fail(
                            side,
                            Failure::Head {
                                kind,
                                offset: first,
                            },
                            cx.out,
                        );
                        self.state = State::Resync;
                    }
                }
                Step::At(pos + n.saturating_sub(base))
            }
            Err(e) if started || (!tentative && e.kind != ErrorKind::Desync) => {
                // A message that failed: report it, go on from where it went wrong.
                self.release_buf();
                self.state = State::Resync;
                if !started {
                    cx.pair.start(side, first, cx.out);
                }
                let failure = Failure::Head {
                    kind: e.kind,
                    offset: first,
                };
                cx.pair.fail(side, failure, cx.out);
                Step::At(pos + e.resume.saturating_sub(base).min(rest.len()))
            }
            Err(_) => {
                // Not a message: go on one byte after where it seemed to start.
                self.state = State::Resync;
                if !tentative && cx.pair.desync(side, first, cx.out) {
                    self.state = State::Held;
                }
                if base == 0 {
                    self.release_buf();
                    return Step::At(pos + 1);
                }
                let replay = buf.get(1..base).map(<[u8]>::to_vec).unwrap_or_default();
                self.release_buf();
                Step::Replay {
                    offset: first + 1,
                    bytes: replay,
                    then: pos,
                }
            }
        }
    }

    fn after_head(&mut self, framing: Framing, first: u64, last: u64, cx: &mut Cx<'_>) {
        self.state = match framing {
            Framing::Stop => State::Stopped,
            Framing::Invalid => State::Resync,
            framing => match Body::new(framing) {
                Some(body) => State::Body { body, first, last },
                None => {
                    let extent = extent(None, first, last, true);
                    cx.pair.done(self.side, extent, cx.out);
                    State::Idle
                }
            },
        };
    }

    /// Feeds body bytes from `bytes[pos..]`; returns the new position.
    fn body_bytes(&mut self, off: u64, bytes: &[u8], pos: usize, cx: &mut Cx<'_>) -> usize {
        let State::Body { body, first, last } = &mut self.state else {
            return bytes.len();
        };
        let at = |i: usize| off + (pos + i) as u64;
        match body.feed(&bytes[pos..], cx.limits) {
            Ok(Feed::More) => {
                *last = off + bytes.len() as u64 - 1;
                bytes.len()
            }
            Ok(Feed::Done(n)) => {
                let extent = extent(Some(body), *first, at(n) - 1, true);
                cx.pair.done(self.side, extent, cx.out);
                self.state = State::Idle;
                pos + n
            }
            Err(e) => {
                if e.at > 0 {
                    *last = at(e.at) - 1;
                }
                let extent = extent(Some(body), *first, *last, false);
                let failure = Failure::Body {
                    kind: Some(e.kind),
                    offset: at(e.at),
                    extent,
                };
                cx.pair.fail(self.side, failure, cx.out);
                self.state = State::Resync;
                pos + e.at
            }
        }
    }

    /// `len > 0` bytes at `off` were not captured.
    fn gap_at(&mut self, off: u64, len: u64, cx: &mut Cx<'_>) {
        let side = self.side;
        match &mut self.state {
            State::Stopped => {}
            State::Idle => {
                cx.pair.lost(side, off, cx.out);
                self.state = State::Resync;
            }
            State::Head(h) => {
                if !h.tentative {
                    if !h.started {
                        cx.pair.start(side, h.first, cx.out);
                    }
                    let kind = ErrorKind::GapInHead;
                    cx.pair
                        .fail(side, Failure::Head { kind, offset: off }, cx.out);
                }
                self.release_buf();
                self.state = State::Resync;
            }
            State::Body { body, first, last } => match body.gap(len) {
                GapOutcome::Inside => *last = off + len - 1,
                GapOutcome::Ended { used } => {
                    let extent = extent(Some(body), *first, off + used - 1, true);
                    cx.pair.done(side, extent, cx.out);
                    self.state = State::Idle;
                    if used < len {
                        self.gap_at(off + used, len - used, cx);
                    }
                }
                GapOutcome::Broken => {
                    let extent = extent(Some(body), *first, *last, false);
                    let kind = Some(ErrorKind::GapInChunkFraming);
                    let failure = Failure::Body {
                        kind,
                        offset: off,
                        extent,
                    };
                    cx.pair.fail(side, failure, cx.out);
                    self.state = State::Resync;
                }
            },
            State::Resync | State::Held => {}
        }
    }

    /// The connection ended: settle the message in progress. Nothing is parsed afterwards.
    pub(crate) fn close(&mut self, reason: EndReason, cx: &mut Cx<'_>) {
        let side = self.side;
        match std::mem::replace(&mut self.state, State::Stopped) {
            State::Head(h) if !h.tentative => {
                if !h.started {
                    cx.pair.start(side, h.first, cx.out);
                }
                let kind = ErrorKind::TruncatedHead;
                let offset = h.first;
                cx.pair.fail(side, Failure::Head { kind, offset }, cx.out);
            }
            State::Body { body, first, last } => {
                let clean = matches!(reason, EndReason::Closed | EndReason::ProcessExited);
                if body.until_close() && clean {
                    cx.pair
                        .done(side, extent(Some(&body), first, last, true), cx.out);
                } else {
                    let extent = extent(Some(&body), first, last, false);
                    let failure = Failure::Body {
                        kind: None,
                        offset: last,
                        extent,
                    };
                    cx.pair.fail(side, failure, cx.out);
                }
            }
            _ => {}
        }
        self.stop();
    }

    /// The connection switched protocol: drop everything, parse nothing more.
    pub(crate) fn stop(&mut self) {
        self.state = State::Stopped;
        self.buf = Vec::new();
    }

    /// The response declined a protocol switch: stop holding, look for the next request (the
    /// held bytes were already reported by the pairing).
    pub(crate) fn release(&mut self) {
        if let State::Held = self.state {
            self.state = State::Resync;
        }
    }

    fn release_buf(&mut self) {
        if self.buf.capacity() > KEEP_CAPACITY {
            self.buf = Vec::new();
        } else {
            self.buf.clear();
        }
    }
}

/// Index of the first byte of `bytes` that could start a message on `side`: an `H` for a
/// status line, the initial of a known method for a request line.
fn next_candidate(side: Side, bytes: &[u8]) -> Option<usize> {
    match side {
        Side::Response => bytes.iter().position(|&b| b == b'H'),
        Side::Request => bytes.iter().position(|&b| detect::is_method_initial(b)),
    }
}

fn extent(body: Option<&Body>, first: u64, last: u64, complete: bool) -> Extent {
    Extent {
        first,
        last,
        body_len: body.map_or(0, Body::len),
        uncaptured: body.map_or(0, Body::uncaptured),
        chunked: body.is_some_and(Body::is_chunked),
        complete,
    }
}
