//! The queue that pairs requests with responses, in order.
//!
//! Every request that *starts* takes a slot, even one that is then lost (cut by a gap, over a
//! limit, malformed): its response still arrives, and must be consumed by that slot rather
//! than paired with the next request. A response takes the oldest slot still waiting for a
//! final response; interim (1xx) responses attach to it without taking it. A slot leaves the
//! queue, as an [`Exchange`] unless its request was lost, once both its request and its final
//! response have ended, so exchanges come out in request order.

use std::collections::VecDeque;

use crate::mem;

use super::body::{Framing, request_framing, response_framing};
use super::error::{ErrorKind, ParseError};
use super::head::Head;
use super::headers::{RequestHead, ResponseHead, trim_ows};
use super::{
    EndReason, Exchange, Extent, Http1Event, Incomplete, Interim, Limits, Side, StopReason,
};

/// A message that started and will not end normally.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Failure {
    /// Its head could not be parsed (or was cut): `kind` is reported at `offset`.
    Head { kind: ErrorKind, offset: u64 },
    /// Its body could not be delimited (`kind`, reported) or the connection ended inside it
    /// (`None`). `extent` is how far it got.
    Body {
        kind: Option<ErrorKind>,
        offset: u64,
        extent: Extent,
    },
}

#[derive(Debug)]
pub(crate) struct Pairing {
    max_pending: usize,
    max_interim: usize,
    queue: VecDeque<Slot>,
    next_id: u64,
    /// The slot of the request being parsed.
    req_cur: Option<u64>,
    /// The response being parsed: its slot (`None`: unexpected) and whether it is interim.
    resp_cur: Option<RespCur>,
    /// A request that asked to switch protocols (CONNECT, Upgrade) and is not yet answered.
    switch: Option<u64>,
    /// Where the request side started holding bytes after that request, if it does.
    held: Option<u64>,
    /// Set when that request was answered without switching: the request side must stop
    /// holding (its bytes were reported as a desync at once).
    declined: bool,
    stopped: bool,
}

#[derive(Clone, Copy, Debug)]
struct RespCur {
    id: Option<u64>,
    /// The head was an interim response, stored in the slot (`false` if over the limit).
    interim: Option<bool>,
}

#[derive(Debug)]
struct Slot {
    id: u64,
    req: Req,
    resp: Resp,
}

impl Slot {
    fn heap_bytes(&self) -> usize {
        let req = match &self.req {
            Req::Known { head, .. } => head.heap_bytes(),
            Req::InHead | Req::Lost => 0,
        };
        let resp = self.resp.head.as_ref().map_or(0, ResponseHead::heap_bytes);
        req + resp + mem::vec(&self.resp.interim)
    }
}

#[derive(Debug)]
enum Req {
    /// Started; the head is not complete yet.
    InHead,
    /// Started but lost: no exchange will be reported for it.
    Lost,
    Known {
        head: RequestHead,
        extent: Extent,
        ended: bool,
    },
}

#[derive(Debug, Default)]
struct Resp {
    state: RespState,
    /// Offset of the final response's first byte, once it started.
    first: Option<u64>,
    head: Option<ResponseHead>,
    extent: Option<Extent>,
    interim: Vec<Interim>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum RespState {
    /// No final response yet (there may have been interim ones).
    #[default]
    Waiting,
    /// The final response's head is parsed, its body is in progress.
    Body,
    Done,
    Failed(Incomplete),
}

impl Pairing {
    pub(crate) fn new(limits: &Limits) -> Self {
        Self {
            max_pending: limits.max_pending.max(1),
            max_interim: limits.max_interim,
            queue: VecDeque::new(),
            next_id: 0,
            req_cur: None,
            resp_cur: None,
            switch: None,
            held: None,
            declined: false,
            stopped: false,
        }
    }

    /// Requests in the queue (awaiting a response, or their own end).
    pub(crate) fn pending(&self) -> usize {
        self.queue.len()
    }

    /// Heap bytes held: the queue's slots and, in each, the parsed heads and interim
    /// responses. O(pending).
    pub(crate) fn heap_bytes(&self) -> usize {
        mem::deque(&self.queue) + self.queue.iter().map(Slot::heap_bytes).sum::<usize>()
    }

    pub(crate) fn stopped(&self) -> bool {
        self.stopped
    }

    /// Whether the request side must stop holding bytes (see [`Pairing::desync`]).
    pub(crate) fn take_declined(&mut self) -> bool {
        std::mem::take(&mut self.declined)
    }

    pub(crate) fn error(
        &self,
        side: Side,
        kind: ErrorKind,
        offset: u64,
        out: &mut Vec<Http1Event>,
    ) {
        out.push(Http1Event::Error(ParseError { side, offset, kind }));
    }

    /// A message started at `first` (its first bytes look like one).
    pub(crate) fn start(&mut self, side: Side, first: u64, out: &mut Vec<Http1Event>) {
        match side {
            Side::Request => {
                let id = self.push(Req::InHead, first, out);
                self.req_cur = Some(id);
            }
            Side::Response => {
                let id = self.waiting_slot().map(|slot| {
                    slot.resp.first = Some(first);
                    slot.id
                });
                if id.is_none() {
                    self.error(side, ErrorKind::UnexpectedResponse, first, out);
                }
                self.resp_cur = Some(RespCur { id, interim: None });
            }
        }
    }

    /// A head was parsed; returns how its body is delimited.
    pub(crate) fn head(
        &mut self,
        side: Side,
        head: Head,
        first: u64,
        last: u64,
        out: &mut Vec<Http1Event>,
    ) -> Framing {
        let mut extent = Extent {
            first,
            last,
            complete: true,
            ..Extent::default()
        };
        match head {
            Head::Request(head) => {
                let framing = request_framing(&head.headers);
                let id = self.req_cur;
                let switches = head.method == "CONNECT" || head.headers.get("upgrade").is_some();
                if switches {
                    self.switch = id;
                }
                let ended = framing.is_err();
                if let Err(kind) = framing {
                    self.error(side, kind, first, out);
                    extent.complete = false;
                }
                if let Some(slot) = self.slot(id) {
                    slot.req = Req::Known {
                        head,
                        extent,
                        ended,
                    };
                }
                if ended {
                    self.req_cur = None;
                    self.flush(out);
                }
                framing.unwrap_or(Framing::Invalid)
            }
            Head::Response(head) => self.response_head(head, extent, out),
        }
    }

    fn response_head(
        &mut self,
        head: ResponseHead,
        mut extent: Extent,
        out: &mut Vec<Http1Event>,
    ) -> Framing {
        let side = Side::Response;
        let Some(cur) = self.resp_cur.as_mut() else {
            return Framing::Invalid;
        };
        let id = cur.id;
        let status = head.status;
        if (100..200).contains(&status) && status != 101 {
            let mut stored = None;
            let max = self.max_interim;
            if let Some(slot) = self.slot(id) {
                // The slot waits for its final response again.
                slot.resp.first = None;
                let fits = slot.resp.interim.len() < max;
                if fits {
                    let (first, last) = (extent.first, extent.last);
                    slot.resp.interim.push(Interim {
                        status,
                        first,
                        last,
                    });
                }
                stored = Some(fits);
            }
            if stored == Some(false) {
                self.error(side, ErrorKind::TooManyInterim, extent.first, out);
            }
            if let Some(cur) = self.resp_cur.as_mut() {
                cur.interim = Some(stored.unwrap_or(false));
            }
            return Framing::Empty;
        }
        let method = |m: &str| {
            self.queue.iter().any(|s| {
                Some(s.id) == id && matches!(&s.req, Req::Known { head, .. } if head.method == m)
            })
        };
        let (connect, head_request) = (method("CONNECT"), method("HEAD"));
        if status == 101 || (connect && (200..300).contains(&status)) {
            let reason = if status == 101 {
                let protocol = head.headers.get("upgrade").map(trim_ows);
                StopReason::Upgrade {
                    protocol: protocol.map(|p| String::from_utf8_lossy(p).into_owned()),
                }
            } else {
                StopReason::Connect
            };
            let response_offset = extent.last + 1;
            self.set_response(id, head, extent, RespState::Done);
            self.stop(id, reason, response_offset, out);
            return Framing::Stop;
        }
        if self.switch.is_some() && self.switch == id {
            self.decline(out);
        }
        match response_framing(head_request, &head) {
            Ok(framing) => {
                self.set_response(id, head, extent, RespState::Body);
                framing
            }
            Err(kind) => {
                self.error(side, kind, extent.first, out);
                extent.complete = false;
                self.set_response(
                    id,
                    head,
                    extent,
                    RespState::Failed(Incomplete::ResponseMalformed),
                );
                self.resp_cur = None;
                self.flush(out);
                Framing::Invalid
            }
        }
    }

    fn set_response(
        &mut self,
        id: Option<u64>,
        head: ResponseHead,
        extent: Extent,
        state: RespState,
    ) {
        if let Some(slot) = self.slot(id) {
            slot.resp.head = Some(head);
            slot.resp.extent = Some(extent);
            slot.resp.state = state;
        }
    }

    /// The message in progress ended as its framing says.
    pub(crate) fn done(&mut self, side: Side, extent: Extent, out: &mut Vec<Http1Event>) {
        match side {
            Side::Request => {
                let id = self.req_cur.take();
                if let Some(Slot {
                    req:
                        Req::Known {
                            extent: e, ended, ..
                        },
                    ..
                }) = self.slot(id)
                {
                    *e = extent;
                    *ended = true;
                }
            }
            Side::Response => {
                let Some(cur) = self.resp_cur.take() else {
                    return;
                };
                let Some(slot) = self.slot(cur.id) else {
                    return;
                };
                match cur.interim {
                    Some(true) => {
                        if let Some(i) = slot.resp.interim.last_mut() {
                            i.last = extent.last;
                        }
                    }
                    Some(false) => {}
                    None => {
                        slot.resp.extent = Some(extent);
                        slot.resp.state = RespState::Done;
                    }
                }
            }
        }
        self.flush(out);
    }

    /// The message in progress failed (reported here when `failure` has a kind).
    pub(crate) fn fail(&mut self, side: Side, failure: Failure, out: &mut Vec<Http1Event>) {
        let kind = match failure {
            Failure::Head { kind, offset } => {
                self.error(side, kind, offset, out);
                Some(kind)
            }
            Failure::Body { kind, offset, .. } => {
                if let Some(kind) = kind {
                    self.error(side, kind, offset, out);
                }
                None
            }
        };
        match side {
            Side::Request => {
                let id = self.req_cur.take();
                if let Some(slot) = self.slot(id) {
                    match (&mut slot.req, failure) {
                        (Req::Known { extent, ended, .. }, Failure::Body { extent: e, .. }) => {
                            *extent = e;
                            *ended = true;
                        }
                        (req, _) => *req = Req::Lost,
                    }
                }
            }
            Side::Response => {
                let id = self.resp_cur.take().and_then(|c| c.id);
                if let Some(slot) = self.slot(id) {
                    slot.resp.state = RespState::Failed(match (kind, failure) {
                        (_, Failure::Body { extent, .. }) => {
                            slot.resp.extent = Some(extent);
                            Incomplete::ResponseTruncated
                        }
                        (Some(ErrorKind::GapInHead), _) => Incomplete::ResponseNotCaptured,
                        (Some(ErrorKind::TruncatedHead), _) => Incomplete::ResponseTruncated,
                        _ => Incomplete::ResponseMalformed,
                    });
                }
            }
        }
        self.flush(out);
    }

    /// A gap at a message boundary: count it as one lost message.
    pub(crate) fn lost(&mut self, side: Side, offset: u64, out: &mut Vec<Http1Event>) {
        self.error(side, ErrorKind::GapBetweenMessages, offset, out);
        match side {
            Side::Request => {
                self.push(Req::Lost, offset, out);
            }
            Side::Response => {
                if let Some(slot) = self.waiting_slot() {
                    slot.resp.state = RespState::Failed(Incomplete::ResponseNotCaptured);
                }
                self.flush(out);
            }
        }
    }

    /// Bytes at a message boundary that are not a message. Returns true when they should be
    /// held silently: the request side after a request that may switch protocols.
    pub(crate) fn desync(&mut self, side: Side, offset: u64, out: &mut Vec<Http1Event>) -> bool {
        if side == Side::Request && self.switch.is_some() {
            self.held = Some(offset);
            return true;
        }
        self.error(side, ErrorKind::Desync, offset, out);
        false
    }

    /// The request that may switch protocols will not: held bytes were noise after all. They
    /// are reported now, so the error's place among the events does not depend on how the
    /// bytes were cut into calls.
    fn decline(&mut self, out: &mut Vec<Http1Event>) {
        self.switch = None;
        if let Some(from) = self.held.take() {
            self.error(Side::Request, ErrorKind::Desync, from, out);
            self.declined = true;
        }
    }

    /// The connection ended: report every slot left, in order.
    pub(crate) fn close(&mut self, reason: EndReason, out: &mut Vec<Http1Event>) {
        if let Some(from) = self.held.take() {
            self.error(Side::Request, ErrorKind::Desync, from, out);
        }
        while let Some(slot) = self.queue.pop_front() {
            emit(slot, Some(reason), out);
        }
        self.req_cur = None;
        self.resp_cur = None;
    }

    fn stop(
        &mut self,
        id: Option<u64>,
        reason: StopReason,
        response_offset: u64,
        out: &mut Vec<Http1Event>,
    ) {
        let mut request_offset = None;
        if let Some(pos) = self.queue.iter().position(|s| Some(s.id) == id) {
            for slot in self.queue.drain(..=pos) {
                if Some(slot.id) == id
                    && let Req::Known { extent, .. } = &slot.req
                {
                    request_offset = Some(extent.last + 1);
                }
                emit(slot, None, out);
            }
        }
        self.queue.clear();
        self.stopped = true;
        out.push(Http1Event::Stopped {
            reason,
            request_offset,
            response_offset,
        });
    }

    /// Emits the slots at the front whose request and final response have both ended.
    fn flush(&mut self, out: &mut Vec<Http1Event>) {
        while let Some(front) = self.queue.front() {
            let req_ended = match &front.req {
                Req::InHead => false,
                Req::Lost => true,
                Req::Known { ended, .. } => *ended,
            };
            let resp_ended = matches!(front.resp.state, RespState::Done | RespState::Failed(_));
            if !(req_ended && resp_ended) {
                break;
            }
            if let Some(slot) = self.queue.pop_front() {
                emit(slot, None, out);
            }
        }
    }

    fn push(&mut self, req: Req, offset: u64, out: &mut Vec<Http1Event>) -> u64 {
        if self.queue.len() >= self.max_pending {
            self.error(Side::Request, ErrorKind::TooManyPending, offset, out);
            if let Some(dropped) = self.queue.pop_front()
                && self.switch == Some(dropped.id)
            {
                self.decline(out);
            }
        }
        let id = self.next_id;
        self.next_id += 1;
        self.queue.push_back(Slot {
            id,
            req,
            resp: Resp::default(),
        });
        id
    }

    fn slot(&mut self, id: Option<u64>) -> Option<&mut Slot> {
        let id = id?;
        let front = self.queue.front()?.id;
        // Ids are consecutive in the queue: index directly, check to be sure.
        let slot = self
            .queue
            .get_mut(usize::try_from(id.checked_sub(front)?).ok()?)?;
        (slot.id == id).then_some(slot)
    }

    /// The oldest slot without a final response.
    fn waiting_slot(&mut self) -> Option<&mut Slot> {
        self.queue
            .iter_mut()
            .find(|s| s.resp.state == RespState::Waiting && s.resp.first.is_none())
    }
}

/// Turns a slot into events: an exchange, or for a lost request whose response came, an error.
fn emit(slot: Slot, end: Option<EndReason>, out: &mut Vec<Http1Event>) {
    let (head, extent) = match slot.req {
        Req::Known {
            head,
            extent,
            ended,
        } => (
            head,
            Extent {
                complete: extent.complete && ended,
                ..extent
            },
        ),
        Req::InHead | Req::Lost => {
            if let Some(offset) = slot.resp.extent.map(|e| e.first).or(slot.resp.first) {
                out.push(Http1Event::Error(ParseError {
                    side: Side::Response,
                    offset,
                    kind: ErrorKind::ResponseToLostRequest,
                }));
            }
            return;
        }
    };
    let incomplete = match slot.resp.state {
        RespState::Done => None,
        RespState::Failed(why) => Some(why),
        RespState::Body => Some(Incomplete::ResponseTruncated),
        RespState::Waiting => match (slot.resp.first, end) {
            (Some(_), _) => Some(Incomplete::ResponseTruncated),
            (None, Some(reason)) => Some(reason.into()),
            (None, None) => Some(Incomplete::ConnectionClosed),
        },
    };
    out.push(Http1Event::Exchange(Box::new(Exchange {
        request: head,
        request_extent: extent,
        response: slot.resp.head,
        response_extent: slot.resp.extent,
        interim: slot.resp.interim,
        incomplete,
    })));
}
