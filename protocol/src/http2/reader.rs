//! One direction of a connection: bytes and gaps in, frames, header blocks and losses out to
//! [`Streams`].
//!
//! ```text
//!                 ┌──────────── frame complete ◄────────────┐
//!                 ▼                                          │
//! Preface ──► Header ── 9 octets, valid in sync ──► Payload ─┘    DATA content streamed (and
//!   │           │                                     │           counted, never kept);
//!   │     invalid header, gap               gap past the frame's  header block fragments
//!   │           │                           end (inside: skipped) buffered up to a limit;
//!   └─ no ──►  Resync ◄───────────────────────────────┘           control payloads kept
//!    preface    │  ▲                                              up to CONTROL_CAP
//!               │  └─ not plausible
//!               └─ a call that starts with a plausible frame header (and whose next frame
//!                  header, if the call holds it, is plausible too) ──► Header
//! ```
//!
//! Only the start of a call is tried while in Resync: the caller feeds one syscall's bytes per
//! call, and a syscall's bytes usually start at a frame boundary, while a frame start found
//! in the middle of captured payload would usually be wrong. A call shorter than a frame
//! header is held as a [`State::Candidate`] and completed by the next call. So unlike the rest
//! of the parser, where a call boundary never matters, what a resync finds depends on how the
//! bytes were cut: that is the information it works from.
//!
//! Losing frame sync (or a header block) also costs the direction's HPACK state
//! (`Decoder::forget`): the missed bytes may have held a header block and its inserts.

use super::error::ErrorKind;
use super::frame::{
    self, DEFAULT_MAX_FRAME_SIZE, FrameHeader, FrameType, HEADER_LEN, MAX_FRAME_LEN, flags,
};
use super::headers::Headers;
use super::hpack::{Decoder, DecoderLimits};
use super::stream::{Block, BlockKind, Streams};
use super::{H2Event, Limits, Side};
use crate::detect::HTTP2_PREFACE;

/// Bytes of a control frame's payload kept (SETTINGS entries past it are ignored, GOAWAY debug
/// data is never needed).
const CONTROL_CAP: usize = 1024;

/// Buffers larger than this are released once their block is done.
const KEEP_CAPACITY: usize = 4096;

/// What the connection shares with the reader of one side while it works.
pub(crate) struct Cx<'a> {
    pub streams: &'a mut Streams,
    pub settings: &'a mut [PeerSettings; 2],
    pub out: &'a mut Vec<H2Event>,
}

/// The SETTINGS one side sent, as far as seen. Both values only grow: a receiver may apply a
/// lower value only once acknowledged, and the two directions are not read in lock step, so
/// the largest value ever advertised is the bound that never rejects a valid frame.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct PeerSettings {
    /// The largest SETTINGS_MAX_FRAME_SIZE this side advertised (the frames it receives).
    pub max_frame_size: Option<u32>,
    /// The largest SETTINGS_HEADER_TABLE_SIZE this side advertised (for its peer's encoder).
    pub header_table_size: Option<u32>,
}

#[derive(Clone, Copy, Debug)]
enum State {
    /// Request side of a connection seen from its start: the client preface comes first.
    Preface {
        matched: usize,
    },
    /// Reading a frame header; `first` is the offset of its first byte.
    Header {
        buf: [u8; HEADER_LEN],
        have: usize,
        first: u64,
    },
    Payload(Payload),
    /// Lost: waiting for a call that starts with a plausible frame header.
    Resync,
    /// A call that started with fewer bytes than a frame header, all plausible so far.
    Candidate {
        buf: [u8; HEADER_LEN],
        have: usize,
        first: u64,
    },
}

#[derive(Clone, Copy, Debug)]
struct Payload {
    hdr: FrameHeader,
    /// Offset of the frame header's first byte.
    first: u64,
    /// Payload bytes consumed.
    pos: u32,
    /// The optional fields before the content (Pad Length, priority, promised stream).
    pre: [u8; 6],
    /// Padding length, once known (0 when not padded or when a gap hid the Pad Length).
    pad: Option<u32>,
    /// A gap cut the frame's content.
    cut: bool,
    /// A gap cut the optional fields before the content.
    pre_cut: bool,
}

impl Payload {
    fn prefix_len(&self) -> u32 {
        self.hdr.prefix_len()
    }

    /// Where the content ends (padding starts), once the padding is known.
    fn content_end(&self) -> u32 {
        self.hdr.len - self.pad.unwrap_or(0)
    }

    fn last(&self) -> u64 {
        self.first + HEADER_LEN as u64 + u64::from(self.hdr.len) - 1
    }

    /// Reads the prefix once complete: padding length, promised stream.
    fn parse_prefix(&mut self) -> Result<(), ()> {
        let pre_len = self.prefix_len();
        let pad = if self.hdr.padded() {
            u32::from(self.pre[0])
        } else {
            0
        };
        if pad > self.hdr.len - pre_len {
            self.pad = Some(self.hdr.len - pre_len);
            return Err(());
        }
        self.pad = Some(pad);
        Ok(())
    }

    fn promised(&self) -> Option<u32> {
        if self.hdr.frame_type() != Some(FrameType::PushPromise) || self.pre_cut {
            return None;
        }
        let at = usize::from(self.hdr.padded());
        let id: [u8; 4] = self.pre.get(at..at + 4)?.try_into().ok()?;
        Some(frame::promised_stream(id))
    }
}

/// A header block whose frames are still arriving.
#[derive(Debug)]
struct OpenBlock {
    stream_id: u32,
    kind: BlockKind,
    first: u64,
    /// Bytes of fragments so far.
    bytes: usize,
    /// Cut by a gap, over the limit, or interrupted: its fields are lost.
    lost: bool,
    /// Decoded straight from the caller's bytes (the whole block was in one call).
    decoded: Option<Headers>,
}

#[derive(Debug)]
pub(crate) struct Reader {
    side: Side,
    state: State,
    /// Offset of the next byte expected; `None` before the first call.
    next: Option<u64>,
    hpack: Decoder,
    /// This side was seen from the connection's start (default SETTINGS apply).
    from_start: bool,
    block: Option<OpenBlock>,
    block_buf: Vec<u8>,
    control: Vec<u8>,
}

impl Reader {
    /// A side seen from the connection's start; the request side expects the client preface.
    pub(crate) fn at_start(side: Side, limits: &Limits, preface: bool) -> Self {
        let state = if preface {
            State::Preface { matched: 0 }
        } else {
            State::Header {
                buf: [0; HEADER_LEN],
                have: 0,
                first: 0,
            }
        };
        Self {
            side,
            state,
            next: None,
            hpack: Decoder::new(decoder_limits(limits)),
            from_start: true,
            block: None,
            block_buf: Vec::new(),
            control: Vec::new(),
        }
    }

    /// A side joined in the middle: frame boundaries and HPACK state unknown.
    pub(crate) fn attached(side: Side, limits: &Limits) -> Self {
        Self {
            state: State::Resync,
            hpack: Decoder::unsynced(decoder_limits(limits)),
            from_start: false,
            ..Self::at_start(side, limits, false)
        }
    }

    /// Bytes before `offset` belong to another protocol (h2c upgrade): ignore them.
    pub(crate) fn start_at(&mut self, offset: u64) {
        self.next = Some(offset);
        if let State::Header { first, .. } = &mut self.state {
            *first = offset;
        }
    }

    /// Bytes buffered (header block fragments, a control frame's payload).
    pub(crate) fn buffered(&self) -> usize {
        self.block_buf.len() + self.control.len()
    }

    /// Heap bytes held: the header block and control payload buffers, a block decoded while
    /// its padding is still to come, and the HPACK decoder (dynamic table, scratch).
    pub(crate) fn heap_bytes(&self) -> usize {
        let decoded = self
            .block
            .as_ref()
            .and_then(|b| b.decoded.as_ref())
            .map_or(0, Headers::allocated_bytes);
        self.block_buf.capacity() + self.control.capacity() + decoded + self.hpack.heap_bytes()
    }

    /// Whether frame boundaries are known.
    pub(crate) fn in_sync(&self) -> bool {
        !matches!(self.state, State::Resync | State::Candidate { .. })
    }

    pub(crate) fn data(&mut self, offset: u64, bytes: &[u8], cx: &mut Cx<'_>) {
        let (mut offset, mut bytes) = (offset, bytes);
        if let Some(next) = self.next {
            if offset > next {
                self.gap_at(next, offset - next, cx);
            } else if offset < next {
                // Already seen (or before this side's start): ignore the overlap.
                let seen = usize::try_from(next - offset).unwrap_or(usize::MAX);
                bytes = bytes.get(seen..).unwrap_or_default();
                offset = next;
            }
        } else if let State::Header { first, have: 0, .. } = &mut self.state {
            *first = offset;
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
        // Bytes between the last call and this gap were not reported either: part of it.
        let start = match self.next {
            Some(next) if end <= next => return,
            Some(next) => next,
            None => offset,
        };
        if let (None, State::Header { first, have: 0, .. }) = (self.next, &mut self.state) {
            *first = start;
        }
        self.next = Some(end);
        if end > start {
            self.gap_at(start, end - start, cx);
        }
    }

    /// The connection ended: an open header block is reported lost so its stream is known.
    pub(crate) fn close(&mut self, cx: &mut Cx<'_>) {
        let last = self.next.unwrap_or(0).saturating_sub(1);
        self.drop_block(last, cx);
    }

    fn feed(&mut self, off: u64, bytes: &[u8], cx: &mut Cx<'_>) {
        let mut pos = 0;
        while pos < bytes.len() {
            let at = off + pos as u64;
            let rest = &bytes[pos..];
            let call_start = pos == 0;
            pos += match self.state {
                State::Preface { matched } => self.preface(matched, at, rest, cx),
                State::Header { .. } => self.header_bytes(rest, cx),
                State::Payload(p) => self.payload_bytes(p, at, rest, cx),
                State::Resync if call_start => self.try_candidate(at, rest, cx),
                State::Resync => {
                    cx.streams.stats.resync_skipped_bytes += rest.len() as u64;
                    rest.len()
                }
                State::Candidate { .. } => self.candidate_bytes(rest, call_start, cx),
            };
        }
    }

    fn preface(&mut self, matched: usize, at: u64, rest: &[u8], cx: &mut Cx<'_>) -> usize {
        let want = &HTTP2_PREFACE[matched..];
        let n = want.len().min(rest.len());
        if rest[..n] == want[..n] {
            self.state = if matched + n == HTTP2_PREFACE.len() {
                State::Header {
                    buf: [0; HEADER_LEN],
                    have: 0,
                    first: at + n as u64,
                }
            } else {
                State::Preface {
                    matched: matched + n,
                }
            };
            return n;
        }
        // Not a connection start after all: read it as one joined in the middle (this call's
        // start is tried as a frame start if it is one).
        let start = at - matched as u64;
        cx.streams
            .error(self.side, ErrorKind::InvalidPreface, start, None, cx.out);
        self.from_start = false;
        self.lose(at, None, cx);
        0
    }

    fn header_bytes(&mut self, rest: &[u8], cx: &mut Cx<'_>) -> usize {
        let State::Header {
            mut buf,
            have,
            first,
        } = self.state
        else {
            return rest.len();
        };
        let n = (HEADER_LEN - have).min(rest.len());
        buf[have..have + n].copy_from_slice(&rest[..n]);
        if have + n < HEADER_LEN {
            self.state = State::Header {
                buf,
                have: have + n,
                first,
            };
            return n;
        }
        self.header_complete(&buf, first, cx);
        n
    }

    fn header_complete(&mut self, buf: &[u8; HEADER_LEN], first: u64, cx: &mut Cx<'_>) {
        let hdr = FrameHeader::parse(buf);
        match frame::check(&hdr, self.side, self.max_len(cx), false) {
            Ok(()) => self.begin_frame(hdr, first, cx),
            Err(frame::FrameError::TooLarge { .. }) => {
                self.lose(first, Some(ErrorKind::FrameTooLarge), cx)
            }
            Err(_) => self.lose(first, Some(ErrorKind::Desync), cx),
        }
    }

    /// The largest frame this side may send, in sync.
    fn max_len(&self, cx: &Cx<'_>) -> u32 {
        match cx.settings[other(self.side) as usize].max_frame_size {
            Some(m) => m.max(DEFAULT_MAX_FRAME_SIZE),
            None if self.from_start => DEFAULT_MAX_FRAME_SIZE,
            None => MAX_FRAME_LEN,
        }
    }

    /// The largest frame a resync candidate may have: what the receiver advertised, or the
    /// default, which fits nearly every frame but large DATA.
    fn candidate_max_len(&self, cx: &Cx<'_>) -> u32 {
        cx.settings[other(self.side) as usize]
            .max_frame_size
            .map_or(DEFAULT_MAX_FRAME_SIZE, |m| m.max(DEFAULT_MAX_FRAME_SIZE))
    }

    fn begin_frame(&mut self, hdr: FrameHeader, first: u64, cx: &mut Cx<'_>) {
        cx.streams.stats.frames += 1;
        let kind = hdr.frame_type();
        if let Some(b) = &self.block
            && (kind != Some(FrameType::Continuation) || hdr.stream_id != b.stream_id)
        {
            let id = b.stream_id;
            cx.streams.error(
                self.side,
                ErrorKind::MissingContinuation,
                first,
                Some(id),
                cx.out,
            );
            self.drop_block(first.saturating_sub(1), cx);
        }
        match kind {
            Some(FrameType::Headers) => {
                self.block = Some(OpenBlock {
                    stream_id: hdr.stream_id,
                    kind: BlockKind::Headers {
                        end_stream: hdr.has(flags::END_STREAM),
                    },
                    first,
                    bytes: 0,
                    lost: false,
                    decoded: None,
                });
            }
            Some(FrameType::PushPromise) => {
                self.block = Some(OpenBlock {
                    stream_id: hdr.stream_id,
                    kind: BlockKind::PushPromise { promised: None },
                    first,
                    bytes: 0,
                    lost: false,
                    decoded: None,
                });
            }
            Some(FrameType::Continuation) if self.block.is_none() => {
                cx.streams.error(
                    self.side,
                    ErrorKind::UnexpectedContinuation,
                    first,
                    Some(hdr.stream_id),
                    cx.out,
                );
            }
            _ => {}
        }
        let p = Payload {
            hdr,
            first,
            pos: 0,
            pre: [0; 6],
            pad: (!hdr.padded()).then_some(0),
            cut: false,
            pre_cut: false,
        };
        if hdr.len == 0 {
            self.finish_frame(p, cx);
        } else {
            self.state = State::Payload(p);
        }
    }

    /// Whether the frame's content belongs to the open header block.
    fn carries_block(&self, p: &Payload) -> bool {
        matches!(
            p.hdr.frame_type(),
            Some(FrameType::Headers | FrameType::PushPromise | FrameType::Continuation)
        ) && self
            .block
            .as_ref()
            .is_some_and(|b| b.stream_id == p.hdr.stream_id)
    }

    fn payload_bytes(&mut self, mut p: Payload, at: u64, rest: &[u8], cx: &mut Cx<'_>) -> usize {
        let mut used = 0;
        let pre_len = p.prefix_len();
        if p.pos < pre_len {
            let n = ((pre_len - p.pos) as usize).min(rest.len());
            p.pre[p.pos as usize..][..n].copy_from_slice(&rest[..n]);
            p.pos += n as u32;
            used = n;
            if p.pos == pre_len {
                self.prefix_done(&mut p, cx);
            }
        }
        let end = p.content_end();
        if p.pos >= pre_len && p.pos < end && used < rest.len() {
            let n = ((end - p.pos) as usize).min(rest.len() - used);
            let whole = p.pos == pre_len && n as u32 == end - pre_len;
            let last = at + (used + n) as u64 - 1;
            self.content(&p, &rest[used..used + n], whole, last, cx);
            p.pos += n as u32;
            used += n;
        }
        if p.pos >= pre_len && p.pos >= end {
            self.content_done(&p, cx);
        }
        if p.pos >= end && used < rest.len() {
            let n = ((p.hdr.len - p.pos) as usize).min(rest.len() - used);
            p.pos += n as u32;
            used += n;
        }
        if p.pos == p.hdr.len {
            self.finish_frame(p, cx);
        } else {
            self.state = State::Payload(p);
        }
        used
    }

    fn prefix_done(&mut self, p: &mut Payload, cx: &mut Cx<'_>) {
        if p.parse_prefix().is_err() {
            // Padding longer than the payload: the content is unknown.
            let id = p.hdr.stream_id;
            if self.carries_block(p) {
                self.lose_block(id, ErrorKind::InvalidFrame, cx);
            } else {
                cx.streams.error(
                    self.side,
                    ErrorKind::InvalidFrame,
                    p.first,
                    Some(id),
                    cx.out,
                );
            }
        }
        if let Some(promised) = p.promised()
            && let Some(b) = &mut self.block
        {
            b.kind = BlockKind::PushPromise {
                promised: Some(promised),
            };
        }
    }

    /// Content bytes of the current frame; `whole` says they are all of its content.
    fn content(&mut self, p: &Payload, data: &[u8], whole: bool, last: u64, cx: &mut Cx<'_>) {
        let id = p.hdr.stream_id;
        match p.hdr.frame_type() {
            Some(FrameType::Data) => cx.streams.data(self.side, id, data, last),
            Some(
                FrameType::Settings
                | FrameType::RstStream
                | FrameType::GoAway
                | FrameType::Ping
                | FrameType::WindowUpdate
                | FrameType::Priority,
            ) => {
                let room = CONTROL_CAP.saturating_sub(self.control.len());
                self.control
                    .extend_from_slice(&data[..data.len().min(room)]);
            }
            _ if self.carries_block(p) => self.fragment(p, data, whole, cx),
            _ => {}
        }
    }

    fn fragment(&mut self, p: &Payload, data: &[u8], whole: bool, cx: &mut Cx<'_>) {
        let max = cx.streams.limits.max_header_block_bytes;
        let Some(b) = &mut self.block else { return };
        if b.lost {
            return;
        }
        if b.bytes + data.len() > max {
            let id = b.stream_id;
            self.lose_block(id, ErrorKind::HeaderBlockTooLarge, cx);
            return;
        }
        let first_fragment = b.bytes == 0;
        b.bytes += data.len();
        if whole && first_fragment && p.hdr.has(flags::END_HEADERS) {
            // The whole block is here: decode it in place.
            let (id, first) = (b.stream_id, b.first);
            let headers = self.decode(data, id, first, cx);
            if let Some(b) = &mut self.block {
                b.decoded = Some(headers);
            }
        } else {
            self.block_buf.extend_from_slice(data);
        }
    }

    /// The frame's content is complete: a header block that ends here is decoded now, not at
    /// the end of the padding, so that where calls are cut never changes what is reported.
    fn content_done(&mut self, p: &Payload, cx: &mut Cx<'_>) {
        if !(self.carries_block(p) && p.hdr.has(flags::END_HEADERS)) {
            return;
        }
        let Some(b) = &self.block else { return };
        if b.lost || b.decoded.is_some() {
            return;
        }
        let (id, first) = (b.stream_id, b.first);
        let buf = std::mem::take(&mut self.block_buf);
        let headers = self.decode(&buf, id, first, cx);
        self.block_buf = buf;
        self.release_block_buf();
        if let Some(b) = &mut self.block {
            b.decoded = Some(headers);
        }
    }

    fn decode(&mut self, block: &[u8], id: u32, first: u64, cx: &mut Cx<'_>) -> Headers {
        let limit = match cx.settings[other(self.side) as usize].header_table_size {
            Some(s) => Some(s as usize),
            None if self.from_start => Some(super::hpack::DEFAULT_TABLE_SIZE),
            None => None,
        };
        self.hpack.set_size_limit(limit);
        let mut h = Headers::default();
        let mut errors = Vec::new();
        match self.hpack.decode(block, &mut h) {
            Ok(o) => {
                if o.too_long > 0 {
                    errors.push(ErrorKind::HpackStringTooLong);
                }
                if o.over_list_limit > 0 {
                    errors.push(ErrorKind::HeaderListTooLarge);
                }
            }
            Err(e) => {
                // The fields before the error are not trusted either; the decoder has
                // forgotten its table.
                errors.push(match e {
                    super::hpack::DecoderError::SizeUpdateOverLimit { .. } => {
                        ErrorKind::HpackSizeUpdateOverLimit
                    }
                    _ => ErrorKind::HpackInvalid,
                });
                cx.streams.stats.hpack_resets += 1;
                h = Headers::lost();
            }
        }
        for kind in errors {
            cx.streams.error(self.side, kind, first, Some(id), cx.out);
        }
        h
    }

    fn finish_frame(&mut self, p: Payload, cx: &mut Cx<'_>) {
        let last = p.last();
        self.state = State::Header {
            buf: [0; HEADER_LEN],
            have: 0,
            first: last + 1,
        };
        let (side, id) = (self.side, p.hdr.stream_id);
        match p.hdr.frame_type() {
            Some(FrameType::Data) => {
                let end = p.hdr.has(flags::END_STREAM);
                cx.streams.data_end(side, id, p.first, end, last, cx.out);
            }
            Some(FrameType::Headers | FrameType::PushPromise | FrameType::Continuation)
                if self.carries_block(&p) && p.hdr.has(flags::END_HEADERS) =>
            {
                self.complete_block(last, cx);
            }
            Some(kind @ (FrameType::Settings | FrameType::RstStream | FrameType::GoAway)) => {
                if p.cut {
                    cx.streams.error(
                        side,
                        ErrorKind::GapInControlFrame,
                        p.first,
                        Some(id),
                        cx.out,
                    );
                } else {
                    self.control_frame(kind, &p, cx);
                }
            }
            _ => {}
        }
        self.control.clear();
    }

    fn control_frame(&mut self, kind: FrameType, p: &Payload, cx: &mut Cx<'_>) {
        let (side, id) = (self.side, p.hdr.stream_id);
        match kind {
            FrameType::Settings if !p.hdr.has(flags::ACK) => {
                let mine = &mut cx.settings[side as usize];
                let mut invalid = false;
                for (param, value) in frame::settings(&self.control) {
                    match param {
                        frame::setting::HEADER_TABLE_SIZE => {
                            mine.header_table_size =
                                Some(mine.header_table_size.map_or(value, |v| v.max(value)));
                        }
                        frame::setting::MAX_FRAME_SIZE
                            if (DEFAULT_MAX_FRAME_SIZE..=MAX_FRAME_LEN).contains(&value) =>
                        {
                            mine.max_frame_size =
                                Some(mine.max_frame_size.map_or(value, |v| v.max(value)));
                        }
                        frame::setting::MAX_FRAME_SIZE => invalid = true,
                        frame::setting::ENABLE_PUSH if value > 1 => invalid = true,
                        _ => {}
                    }
                }
                if invalid {
                    cx.streams
                        .error(side, ErrorKind::InvalidFrame, p.first, None, cx.out);
                }
            }
            FrameType::RstStream => {
                if let Some(code) = frame::rst_stream(&self.control) {
                    cx.streams.rst(side, id, code, p.first, cx.out);
                }
            }
            FrameType::GoAway => {
                if let Some((last_id, code)) = frame::goaway(&self.control) {
                    cx.streams.goaway(side, last_id, code, cx.out);
                }
            }
            _ => {}
        }
    }

    fn complete_block(&mut self, last: u64, cx: &mut Cx<'_>) {
        let Some(b) = self.block.take() else { return };
        let headers = if b.lost {
            Headers::lost()
        } else if let Some(h) = b.decoded {
            h
        } else {
            let buf = std::mem::take(&mut self.block_buf);
            let h = self.decode(&buf, b.stream_id, b.first, cx);
            self.block_buf = buf;
            h
        };
        self.release_block_buf();
        let block = Block {
            stream_id: b.stream_id,
            kind: b.kind,
            headers,
            first: b.first,
            last,
        };
        cx.streams.header_block(self.side, block, cx.out);
    }

    /// The open header block will not complete: report it lost (its stream exists even if its
    /// fields are gone), and forget the HPACK state its inserts changed.
    fn drop_block(&mut self, last: u64, cx: &mut Cx<'_>) {
        let Some(b) = &mut self.block else { return };
        let first = b.first;
        // Its frames did not end, so neither did its stream.
        if let BlockKind::Headers { end_stream } = &mut b.kind {
            *end_stream = false;
        }
        // A block already decoded (only padding was missing) keeps its fields.
        if b.decoded.is_none() && !b.lost {
            b.lost = true;
            self.forget_hpack(cx);
        }
        self.complete_block(last.max(first), cx);
    }

    /// The open block's fields are lost (reported once, as `kind`); it still completes.
    fn lose_block(&mut self, id: u32, kind: ErrorKind, cx: &mut Cx<'_>) {
        if let Some(b) = &mut self.block
            && !b.lost
        {
            b.lost = true;
            let first = b.first;
            cx.streams.error(self.side, kind, first, Some(id), cx.out);
            self.forget_hpack(cx);
            self.release_block_buf();
        }
    }

    fn forget_hpack(&mut self, cx: &mut Cx<'_>) {
        let table = self.hpack.table();
        if table.is_complete() || !table.is_empty() {
            cx.streams.stats.hpack_resets += 1;
        }
        self.hpack.forget();
    }

    /// Frame sync is lost at `offset`.
    fn lose(&mut self, offset: u64, kind: Option<ErrorKind>, cx: &mut Cx<'_>) {
        if let Some(kind) = kind {
            cx.streams.error(self.side, kind, offset, None, cx.out);
        }
        cx.streams.stats.sync_losses += 1;
        self.drop_block(offset.saturating_sub(1), cx);
        self.forget_hpack(cx);
        self.release_block_buf();
        self.control.clear();
        self.state = State::Resync;
        cx.streams.lost(self.side, cx.out);
    }

    /// `len > 0` bytes at `off` were not captured.
    fn gap_at(&mut self, off: u64, len: u64, cx: &mut Cx<'_>) {
        match self.state {
            State::Preface { matched } => {
                let rest = (HTTP2_PREFACE.len() - matched) as u64;
                if len < rest {
                    self.state = State::Preface {
                        matched: matched + len as usize,
                    };
                } else {
                    self.state = State::Header {
                        buf: [0; HEADER_LEN],
                        have: 0,
                        first: off + rest,
                    };
                    if len > rest {
                        self.gap_at(off + rest, len - rest, cx);
                    }
                }
            }
            State::Header { have, first, .. } => {
                let at = if have == 0 { off } else { first };
                self.lose(at, Some(ErrorKind::GapBetweenFrames), cx);
            }
            State::Payload(p) => {
                let used = self.payload_gap(p, off, len, cx);
                if used < len {
                    self.gap_at(off + used, len - used, cx);
                }
            }
            State::Resync => cx.streams.stats.resync_skipped_bytes += len,
            State::Candidate { .. } => {
                cx.streams.stats.resync_skipped_bytes += len;
                self.state = State::Resync;
            }
        }
    }

    /// A gap of `len` bytes at `off` inside the current frame's payload; returns how many of
    /// them the frame held.
    fn payload_gap(&mut self, mut p: Payload, off: u64, len: u64, cx: &mut Cx<'_>) -> u64 {
        let remaining = u64::from(p.hdr.len - p.pos);
        let n = len.min(remaining) as u32;
        let (from, to) = (p.pos, p.pos + n);
        let pre_len = p.prefix_len();
        if from < pre_len {
            // The optional fields are lost: no promised stream is known, and without the Pad
            // Length no padding is assumed. DATA may then count up to 255 padding bytes as
            // content; a header block cannot be delimited, so it is lost.
            p.pre_cut = true;
            if p.pad.is_none() {
                p.pad = Some(0);
                if self.carries_block(&p) {
                    self.lose_block(p.hdr.stream_id, ErrorKind::GapInHeaderBlock, cx);
                }
            }
        }
        let end = p.content_end();
        let (c_from, c_to) = (from.max(pre_len), to.min(end));
        if c_from < c_to {
            let skipped = u64::from(c_to - c_from);
            let last = off + u64::from(c_to - from) - 1;
            let id = p.hdr.stream_id;
            match p.hdr.frame_type() {
                Some(FrameType::Data) => cx.streams.data_skipped(self.side, id, skipped, last),
                _ if self.carries_block(&p) => {
                    self.lose_block(id, ErrorKind::GapInHeaderBlock, cx);
                }
                _ => p.cut = true,
            }
        }
        p.pos = to;
        if p.pos >= pre_len && p.pos >= p.content_end() {
            self.content_done(&p, cx);
        }
        if p.pos == p.hdr.len {
            self.finish_frame(p, cx);
        } else {
            self.state = State::Payload(p);
        }
        u64::from(n)
    }

    fn try_candidate(&mut self, at: u64, rest: &[u8], cx: &mut Cx<'_>) -> usize {
        if rest.len() < HEADER_LEN {
            let mut buf = [0; HEADER_LEN];
            buf[..rest.len()].copy_from_slice(rest);
            self.state = State::Candidate {
                buf,
                have: rest.len(),
                first: at,
            };
            return rest.len();
        }
        let mut buf = [0; HEADER_LEN];
        buf.copy_from_slice(&rest[..HEADER_LEN]);
        if self.plausible(&buf, &rest[HEADER_LEN..], cx) {
            cx.streams.stats.resyncs += 1;
            self.header_complete(&buf, at, cx);
            HEADER_LEN
        } else {
            cx.streams.stats.resync_skipped_bytes += rest.len() as u64;
            rest.len()
        }
    }

    fn candidate_bytes(&mut self, rest: &[u8], call_start: bool, cx: &mut Cx<'_>) -> usize {
        let State::Candidate {
            mut buf,
            have,
            first,
        } = self.state
        else {
            return rest.len();
        };
        let n = (HEADER_LEN - have).min(rest.len());
        buf[have..have + n].copy_from_slice(&rest[..n]);
        if have + n < HEADER_LEN {
            self.state = State::Candidate {
                buf,
                have: have + n,
                first,
            };
            return n;
        }
        if self.plausible(&buf, &rest[n..], cx) {
            cx.streams.stats.resyncs += 1;
            self.header_complete(&buf, first, cx);
            return n;
        }
        cx.streams.stats.resync_skipped_bytes += have as u64;
        self.state = State::Resync;
        // This call's start is a candidate of its own.
        if call_start { 0 } else { n }
    }

    /// Whether a resync may start at this frame header, `after` being the bytes that follow it
    /// in the same call.
    fn plausible(&self, buf: &[u8; HEADER_LEN], after: &[u8], cx: &Cx<'_>) -> bool {
        plausible_at(self.side, buf, after, self.candidate_max_len(cx), true)
    }

    fn release_block_buf(&mut self) {
        if self.block_buf.capacity() > KEEP_CAPACITY {
            self.block_buf = Vec::new();
        } else {
            self.block_buf.clear();
        }
    }
}

/// Judges a resync candidate: the header itself (strict rules, never a CONTINUATION since no
/// block is open), its padding, and the next frame header when `after` holds it (`chain`).
fn plausible_at(side: Side, buf: &[u8; HEADER_LEN], after: &[u8], max: u32, chain: bool) -> bool {
    let hdr = FrameHeader::parse(buf);
    if frame::check(&hdr, side, max, true).is_err() {
        return false;
    }
    let opens_block = match hdr.frame_type() {
        Some(FrameType::Continuation) => return false,
        Some(FrameType::Headers | FrameType::PushPromise) => !hdr.has(flags::END_HEADERS),
        _ => false,
    };
    if hdr.padded()
        && let Some(&pad) = after.first()
        && u32::from(pad) > hdr.len - hdr.prefix_len()
    {
        return false;
    }
    let end = hdr.len as usize;
    if !chain || after.len() < end + HEADER_LEN {
        return true;
    }
    let mut next = [0; HEADER_LEN];
    next.copy_from_slice(&after[end..end + HEADER_LEN]);
    let next_hdr = FrameHeader::parse(&next);
    if opens_block {
        // Only a CONTINUATION of the same stream may follow.
        next_hdr.frame_type() == Some(FrameType::Continuation)
            && next_hdr.stream_id == hdr.stream_id
            && frame::check(&next_hdr, side, max, true).is_ok()
    } else {
        plausible_at(side, &next, &after[end + HEADER_LEN..], max, false)
    }
}

/// Whether `bytes`, one direction's bytes from `side` at a syscall boundary, start with a
/// plausible HTTP/2 frame (the strict rules used to resynchronise, with the default maximum
/// frame size). For deciding whether a connection whose start was not seen speaks HTTP/2.
pub fn plausible_frame_start(side: Side, bytes: &[u8]) -> bool {
    let Some(head) = bytes.get(..HEADER_LEN) else {
        return false;
    };
    let mut buf = [0; HEADER_LEN];
    buf.copy_from_slice(head);
    plausible_at(
        side,
        &buf,
        &bytes[HEADER_LEN..],
        DEFAULT_MAX_FRAME_SIZE,
        true,
    )
}

fn other(side: Side) -> Side {
    match side {
        Side::Request => Side::Response,
        Side::Response => Side::Request,
    }
}

fn decoder_limits(limits: &Limits) -> DecoderLimits {
    DecoderLimits {
        max_string_bytes: limits.max_string_bytes,
        max_list_bytes: limits.max_header_list_bytes,
        max_table_bytes: limits.max_table_bytes,
    }
}
