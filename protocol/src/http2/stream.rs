//! Streams: frames of both directions in, one [`H2Exchange`] per stream out.
//!
//! Each stream has two halves, the request (client to server) and the response:
//!
//! ```text
//!            HEADERS (head)            DATA*, HEADERS (trailers)          END_STREAM
//!   Idle ────────────────────► Open ───────────────────────────► Open ─────────────► Ended
//!    │ ▲                                                            (on any of them)
//!    └─┘ response only: HEADERS with a 1xx :status (interim), stays Idle
//! ```
//!
//! The exchange is emitted when the response half has ended and the request half has ended too
//! (or cannot be waited for: never seen, or a capture loss on the request side may have hidden
//! its end); when a RST_STREAM arrives; when a server's GOAWAY refuses the stream; or at
//! [`Streams::close`]. A stream exists once a header block opens it; frames on streams that do
//! not exist (closed, dropped, or opened before the observer joined) are counted, not reported.
//! A header block on an unknown stream opens it only if it is a head: it has pseudo-header
//! fields, or it may have (fields unrecovered) and its id is above the side's highest so far.

use std::collections::{BTreeMap, VecDeque};

/// Streams remembered as done, so that their late frames (a response after the client's
/// RST_STREAM, trailers after an early emission) do not open them again.
const RECENT: usize = 256;

use super::error::{ErrorKind, ParseError};
use super::headers::{self, Headers, RequestHead, ResponseHead};
use super::{
    EndReason, ErrorCode, Extent, H2Event, H2Exchange, Incomplete, Interim, Limits, Reset, Side,
    Stats,
};
use crate::grpc::{self, MessageCounter};
use crate::mem;

/// A decoded (or lost) header block, with where its frames lie.
#[derive(Debug)]
pub(crate) struct Block {
    pub stream_id: u32,
    pub kind: BlockKind,
    pub headers: Headers,
    /// Offset of the first byte of the HEADERS or PUSH_PROMISE frame.
    pub first: u64,
    /// Offset of the last byte of the frame that ended the block.
    pub last: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BlockKind {
    Headers {
        end_stream: bool,
    },
    /// `promised` is `None` when a capture gap hid it.
    PushPromise {
        promised: Option<u32>,
    },
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Phase {
    #[default]
    Idle,
    Open,
    Ended,
}

#[derive(Debug, Default)]
struct Half {
    phase: Phase,
    first: Option<u64>,
    last: u64,
    body_len: u64,
    uncaptured: u64,
    messages: Option<MessageCounter>,
    /// A capture loss on this side while the half had not ended: some of its frames, its end
    /// included, may be missing.
    lost: bool,
}

impl Half {
    fn extent(&self) -> Option<Extent> {
        let ended = self.phase == Phase::Ended;
        self.first.map(|first| Extent {
            first,
            last: self.last.max(first),
            body_len: self.body_len,
            uncaptured: self.uncaptured,
            complete: ended,
            lost: self.lost,
            messages: self.messages.as_ref().map(|m| {
                let mut counted = m.messages(ended);
                counted.exact &= !self.lost;
                counted
            }),
        })
    }

    fn touch(&mut self, first: u64, last: u64) {
        self.first.get_or_insert(first);
        self.last = self.last.max(last);
    }
}

#[derive(Debug)]
struct Stream {
    seq: u64,
    pushed: bool,
    req: Half,
    resp: Half,
    request: Option<RequestHead>,
    response: Option<ResponseHead>,
    request_trailers: Option<Headers>,
    response_trailers: Option<Headers>,
    interim: Vec<Interim>,
    reset: Option<Reset>,
    grpc: bool,
    header_bytes: usize,
}

impl Stream {
    fn new(seq: u64) -> Self {
        Self {
            seq,
            pushed: false,
            req: Half::default(),
            resp: Half::default(),
            request: None,
            response: None,
            request_trailers: None,
            response_trailers: None,
            interim: Vec::new(),
            reset: None,
            grpc: false,
            header_bytes: 0,
        }
    }

    /// Heap bytes its heads, trailers and interim responses hold (the record itself is the
    /// map's).
    fn heap_bytes(&self) -> usize {
        let blocks = [
            self.response.as_ref().map(|r| &r.headers),
            self.request_trailers.as_ref(),
            self.response_trailers.as_ref(),
        ];
        self.request
            .as_ref()
            .map_or(0, RequestHead::allocated_bytes)
            + blocks
                .into_iter()
                .flatten()
                .map(Headers::allocated_bytes)
                .sum::<usize>()
            + mem::vec(&self.interim)
    }

    fn half(&mut self, side: Side) -> &mut Half {
        match side {
            Side::Request => &mut self.req,
            Side::Response => &mut self.resp,
        }
    }

    /// The request half is done or cannot be waited for.
    fn request_settled(&self) -> bool {
        self.pushed || self.req.first.is_none() || self.req.phase == Phase::Ended || self.req.lost
    }

    /// Starts counting gRPC messages in both halves.
    fn set_grpc(&mut self) {
        if !self.grpc {
            self.grpc = true;
            for half in [&mut self.req, &mut self.resp] {
                if half.phase != Phase::Ended && half.body_len == 0 {
                    half.messages = Some(MessageCounter::new());
                }
            }
        }
    }

    fn into_exchange(self, id: u32, incomplete: Option<Incomplete>) -> H2Exchange {
        H2Exchange {
            stream_id: id,
            pushed: self.pushed,
            request_extent: if self.pushed { None } else { self.req.extent() },
            request: self.request,
            request_trailers: self.request_trailers,
            interim: self.interim,
            response: self.response,
            response_extent: self.resp.extent(),
            response_trailers: self.response_trailers,
            reset: self.reset,
            incomplete,
        }
    }
}

/// Every stream of one connection.
#[derive(Debug)]
pub(crate) struct Streams {
    pub limits: Limits,
    pub stats: Stats,
    map: BTreeMap<u32, Stream>,
    seq: u64,
    /// Header field bytes kept by all streams.
    header_bytes: usize,
    /// Highest stream id that opened a stream, per side (client ids on the request side).
    highest: [u32; 2],
    /// The last [`RECENT`] streams emitted or dropped.
    recent: VecDeque<u32>,
    /// Streams whose request head arrived, with the offset of its first byte, until the
    /// caller takes them (at most `max_streams`; older ones are dropped first).
    pub started: VecDeque<(u32, u64)>,
}

impl Streams {
    pub(crate) fn new(limits: Limits) -> Self {
        Self {
            limits,
            stats: Stats::default(),
            map: BTreeMap::new(),
            seq: 0,
            header_bytes: 0,
            highest: [0; 2],
            recent: VecDeque::new(),
            started: VecDeque::new(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Heap bytes held: the stream records and what each holds, and the queues of recent and
    /// started streams. O(streams).
    pub(crate) fn heap_bytes(&self) -> usize {
        mem::btree_map(&self.map)
            + self.map.values().map(Stream::heap_bytes).sum::<usize>()
            + mem::deque(&self.recent)
            + mem::deque(&self.started)
    }

    pub(crate) fn error(
        &self,
        side: Side,
        kind: ErrorKind,
        offset: u64,
        stream_id: Option<u32>,
        out: &mut Vec<H2Event>,
    ) {
        out.push(H2Event::Error(ParseError {
            side,
            offset,
            stream_id,
            kind,
        }));
    }

    /// The stream opened by an HTTP/1.1 `Upgrade: h2c` request: its request is complete.
    pub(crate) fn upgraded(&mut self, request: RequestHead, extent: Extent) {
        let mut s = Stream::new(self.next_seq());
        s.req = Half {
            phase: Phase::Ended,
            first: Some(extent.first),
            last: extent.last,
            body_len: extent.body_len,
            uncaptured: extent.uncaptured,
            messages: None,
            lost: false,
        };
        s.header_bytes = request.headers.heap_bytes();
        self.header_bytes += s.header_bytes;
        s.request = Some(request);
        self.map.insert(1, s);
        self.highest[0] = 1;
        self.started(1, extent.first);
    }

    pub(crate) fn header_block(&mut self, side: Side, block: Block, out: &mut Vec<H2Event>) {
        self.stats.header_blocks += 1;
        self.stats.unrecovered_fields += u64::from(block.headers.unrecovered_count());
        match block.kind {
            BlockKind::PushPromise { promised } => self.push_promise(block, promised, out),
            BlockKind::Headers { end_stream } => self.headers(side, block, end_stream, out),
        }
    }

    fn push_promise(&mut self, block: Block, promised: Option<u32>, out: &mut Vec<H2Event>) {
        self.stats.pushed_streams += 1;
        let Some(id) = promised.filter(|&id| id != 0 && !self.map.contains_key(&id)) else {
            return;
        };
        let (head, malformed) = RequestHead::from_block(block.headers);
        if malformed {
            let first = block.first;
            self.error(
                Side::Response,
                ErrorKind::MalformedHeaders,
                first,
                Some(id),
                out,
            );
        }
        self.make_room(block.first, out);
        let mut s = Stream::new(self.next_seq());
        s.pushed = true;
        s.req.phase = Phase::Ended;
        s.header_bytes = head.headers.heap_bytes();
        self.header_bytes += s.header_bytes;
        s.request = Some(head);
        self.map.insert(id, s);
    }

    fn headers(&mut self, side: Side, block: Block, end_stream: bool, out: &mut Vec<H2Event>) {
        let id = block.stream_id;
        if !self.map.contains_key(&id) {
            let may_be_head = !block.headers.is_exact() && id > self.highest[side as usize];
            let head = headers::has_pseudo(&block.headers) || may_be_head;
            if !head || self.recent.contains(&id) {
                self.stats.orphan_frames += 1;
                return;
            }
            self.make_room(block.first, out);
            let mut s = Stream::new(self.next_seq());
            if side == Side::Response {
                // Its request started before the observer joined (or was hidden): its frames
                // may still come, and are not waited for.
                s.req.lost = true;
            }
            self.map.insert(id, s);
            let h = &mut self.highest[side as usize];
            *h = (*h).max(id);
        }
        let Self {
            map,
            limits,
            header_bytes,
            ..
        } = self;
        let Some(s) = map.get_mut(&id) else { return };
        let mut errors: Vec<ErrorKind> = Vec::new();
        if block.headers.malformed_count() > 0 {
            errors.push(ErrorKind::MalformedHeaders);
        }
        let phase = s.half(side).phase;
        let head_lost = s.half(side).lost && phase == Phase::Idle;
        let is_trailers = match phase {
            Phase::Open => true,
            // The head was hidden by a capture loss; this block has no pseudo-header field
            // and ends the stream: it is the trailers.
            Phase::Idle => head_lost && end_stream && !headers::has_pseudo(&block.headers),
            Phase::Ended => {
                errors.push(ErrorKind::UnexpectedFrame);
                report(side, block.first, id, &errors, out);
                return;
            }
        };
        let mut cost = block.headers.heap_bytes();
        let over = |s: &Stream, cost: usize| {
            s.header_bytes + cost > limits.max_stream_header_bytes
                || *header_bytes + cost > limits.max_header_bytes
        };
        let mut fields = block.headers;
        if is_trailers {
            let (trailers, malformed) = headers::trailers_from_block(fields);
            fields = trailers;
            if malformed || !end_stream {
                errors.push(ErrorKind::MalformedHeaders);
            }
            if over(s, cost) {
                errors.push(ErrorKind::StreamHeadersTooLarge);
                fields = Headers::lost();
                cost = 0;
            }
            let slot = match side {
                Side::Request => &mut s.request_trailers,
                Side::Response => &mut s.response_trailers,
            };
            if slot.is_some() {
                errors.push(ErrorKind::UnexpectedFrame);
            } else {
                *slot = Some(fields);
                s.header_bytes += cost;
                *header_bytes += cost;
            }
            s.half(side).touch(block.first, block.last);
            s.half(side).phase = Phase::Open;
        } else {
            match side {
                Side::Request => {
                    let (mut head, malformed) = RequestHead::from_block(fields);
                    if malformed {
                        errors.push(ErrorKind::MalformedHeaders);
                    }
                    cost = head.headers.heap_bytes();
                    if over(s, cost) {
                        errors.push(ErrorKind::StreamHeadersTooLarge);
                        head.headers = lost_like(&head.headers);
                        cost = 0;
                    }
                    let grpc = head
                        .headers
                        .get("content-type")
                        .is_some_and(grpc::is_grpc_content_type);
                    s.request = Some(head);
                    s.req.first = Some(block.first);
                    s.req.last = block.last;
                    s.req.phase = Phase::Open;
                    if grpc {
                        s.set_grpc();
                    }
                    if self.started.len() >= limits.max_streams.max(1) {
                        self.started.pop_front();
                    }
                    self.started.push_back((id, block.first));
                }
                Side::Response => {
                    let (mut head, malformed) = ResponseHead::from_block(fields);
                    if malformed {
                        errors.push(ErrorKind::MalformedHeaders);
                    }
                    if let Some(status @ 100..=199) = head.status.filter(|_| !end_stream) {
                        if s.interim.len() < limits.max_interim {
                            s.interim.push(Interim {
                                status,
                                first: block.first,
                                last: block.last,
                            });
                        } else {
                            errors.push(ErrorKind::TooManyInterim);
                        }
                        report(side, block.first, id, &errors, out);
                        return;
                    }
                    cost = head.headers.heap_bytes();
                    if over(s, cost) {
                        errors.push(ErrorKind::StreamHeadersTooLarge);
                        head.headers = lost_like(&head.headers);
                        cost = 0;
                    }
                    let grpc = head
                        .headers
                        .get("content-type")
                        .is_some_and(grpc::is_grpc_content_type);
                    s.response = Some(head);
                    s.resp.first = Some(block.first);
                    s.resp.last = block.last;
                    s.resp.phase = Phase::Open;
                    if grpc {
                        s.set_grpc();
                    }
                }
            }
            s.header_bytes += cost;
            *header_bytes += cost;
        }
        if end_stream {
            s.half(side).phase = Phase::Ended;
        }
        report(side, block.first, id, &errors, out);
        self.settle(id, out);
    }

    /// DATA content of stream `id` on `side`, the last byte at `last`.
    pub(crate) fn data(&mut self, side: Side, id: u32, bytes: &[u8], last: u64) {
        if let Some(half) = self.open_half(side, id) {
            half.body_len += bytes.len() as u64;
            half.last = half.last.max(last);
            if let Some(m) = &mut half.messages {
                m.feed(bytes);
            }
        }
    }

    /// `n` DATA content bytes of stream `id` on `side` were not captured.
    pub(crate) fn data_skipped(&mut self, side: Side, id: u32, n: u64, last: u64) {
        if let Some(half) = self.open_half(side, id) {
            half.body_len += n;
            half.uncaptured += n;
            half.last = half.last.max(last);
            if let Some(m) = &mut half.messages {
                m.skip(n);
            }
        }
    }

    /// A half that takes DATA: open, or idle after a loss hid its head.
    fn open_half(&mut self, side: Side, id: u32) -> Option<&mut Half> {
        let half = self.map.get_mut(&id)?.half(side);
        match half.phase {
            Phase::Open => Some(half),
            Phase::Idle if half.lost => Some(half),
            _ => None,
        }
    }

    /// The DATA frame at `first..=last` on stream `id` ended.
    pub(crate) fn data_end(
        &mut self,
        side: Side,
        id: u32,
        first: u64,
        end_stream: bool,
        last: u64,
        out: &mut Vec<H2Event>,
    ) {
        let Some(s) = self.map.get_mut(&id) else {
            self.stats.orphan_frames += 1;
            return;
        };
        let half = s.half(side);
        match half.phase {
            Phase::Open => {}
            Phase::Idle if half.lost => half.phase = Phase::Open,
            _ => {
                self.error(side, ErrorKind::UnexpectedFrame, first, Some(id), out);
                return;
            }
        }
        half.touch(first, last);
        if end_stream {
            half.phase = Phase::Ended;
            self.settle(id, out);
        }
    }

    pub(crate) fn rst(
        &mut self,
        side: Side,
        id: u32,
        code: ErrorCode,
        offset: u64,
        out: &mut Vec<H2Event>,
    ) {
        let Some(s) = self.map.get_mut(&id) else {
            self.stats.orphan_frames += 1;
            return;
        };
        s.reset = Some(Reset {
            by: side,
            code,
            offset,
        });
        let incomplete =
            (s.resp.phase != Phase::Ended).then_some(Incomplete::StreamReset { by: side, code });
        self.emit(id, incomplete, out);
    }

    /// A GOAWAY sent by `side`: the streams its peer opened above `last_id` were refused.
    pub(crate) fn goaway(
        &mut self,
        side: Side,
        last_id: u32,
        code: ErrorCode,
        out: &mut Vec<H2Event>,
    ) {
        // A server's GOAWAY refuses client streams (odd), a client's refuses pushes (even).
        let parity = match side {
            Side::Response => 1,
            Side::Request => 0,
        };
        let refused: Vec<u32> = self
            .map
            .range(last_id.saturating_add(1)..)
            .filter(|(id, s)| *id % 2 == parity && s.resp.phase == Phase::Idle)
            .map(|(id, _)| *id)
            .collect();
        for id in refused {
            self.emit(id, Some(Incomplete::Refused { code }), out);
        }
    }

    /// A capture loss on `side`: any half there that has not ended may have lost frames.
    pub(crate) fn lost(&mut self, side: Side, out: &mut Vec<H2Event>) {
        for s in self.map.values_mut() {
            let half = s.half(side);
            if half.phase != Phase::Ended {
                half.lost = true;
            }
        }
        let ids: Vec<u32> = self.map.keys().copied().collect();
        for id in ids {
            self.settle(id, out);
        }
    }

    /// The connection ended: every stream left is reported, in id order.
    pub(crate) fn close(&mut self, reason: EndReason, out: &mut Vec<H2Event>) {
        let ids: Vec<u32> = self.map.keys().copied().collect();
        for id in ids {
            let Some(s) = self.map.get(&id) else { continue };
            let incomplete = match s.resp.phase {
                Phase::Ended => None,
                Phase::Open => Some(Incomplete::ResponseTruncated),
                Phase::Idle if s.resp.lost => Some(Incomplete::ResponseNotCaptured),
                Phase::Idle => Some(Incomplete::from(reason)),
            };
            self.emit(id, incomplete, out);
        }
    }

    /// Emits stream `id` if it is done.
    fn settle(&mut self, id: u32, out: &mut Vec<H2Event>) {
        if let Some(s) = self.map.get(&id)
            && s.resp.phase == Phase::Ended
            && s.request_settled()
        {
            self.emit(id, None, out);
        }
    }

    fn emit(&mut self, id: u32, incomplete: Option<Incomplete>, out: &mut Vec<H2Event>) {
        let Some(s) = self.map.remove(&id) else {
            return;
        };
        self.forget(id, &s);
        if s.pushed && !self.limits.report_pushed {
            return;
        }
        self.stats.exchanges += 1;
        out.push(H2Event::Exchange(Box::new(s.into_exchange(id, incomplete))));
    }

    /// Drops the oldest stream if the table is full.
    fn make_room(&mut self, offset: u64, out: &mut Vec<H2Event>) {
        if self.map.len() < self.limits.max_streams.max(1) {
            return;
        }
        let oldest = self
            .map
            .iter()
            .min_by_key(|(_, s)| s.seq)
            .map(|(id, _)| *id);
        if let Some(id) = oldest
            && let Some(s) = self.map.remove(&id)
        {
            self.forget(id, &s);
            let side = if s.req.first.is_some() {
                Side::Request
            } else {
                Side::Response
            };
            self.error(side, ErrorKind::TooManyStreams, offset, Some(id), out);
        }
    }

    /// Stream `id` left the table.
    fn forget(&mut self, id: u32, s: &Stream) {
        self.header_bytes = self.header_bytes.saturating_sub(s.header_bytes);
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(id);
    }

    fn started(&mut self, id: u32, first: u64) {
        if self.started.len() >= self.limits.max_streams.max(1) {
            self.started.pop_front();
        }
        self.started.push_back((id, first));
    }

    /// The request head of a stream still tracked.
    pub(crate) fn request(&self, id: u32) -> Option<&RequestHead> {
        self.map.get(&id).and_then(|s| s.request.as_ref())
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }
}

/// An empty block that keeps `h`'s unrecovered count, standing for fields not kept.
fn lost_like(h: &Headers) -> Headers {
    let mut l = Headers::lost();
    for u in h.unrecovered() {
        l.push_unrecovered(u.clone());
    }
    l
}

fn report(side: Side, offset: u64, id: u32, kinds: &[ErrorKind], out: &mut Vec<H2Event>) {
    for &kind in kinds {
        out.push(H2Event::Error(ParseError {
            side,
            offset,
            stream_id: Some(id),
            kind,
        }));
    }
}
