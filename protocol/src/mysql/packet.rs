//! Cuts one direction into logical messages: packets joined across the 16 MiB split.
//!
//! ```text
//! packet   len:u24le  seq:u8  payload: len bytes
//! split    a payload of exactly 0xFFFFFF bytes continues in the next packet (seq + 1);
//!          the message ends with the first shorter packet (possibly empty)
//! ```

use super::error::ErrorKind;
use crate::db::{Body, Limits};

const MAX_PACKET: u64 = 0xFF_FFFF;

/// A logical message, its payload kept up to the limit given to [`Reader::next`].
#[derive(Debug)]
pub(crate) struct Msg {
    /// Sequence id of its first packet.
    pub seq: u8,
    /// Sequence id of its last packet.
    pub last_seq: u8,
    pub payload: Vec<u8>,
    /// Payload bytes in all.
    pub len: u64,
    pub first: u64,
    pub last: u64,
}

#[derive(Debug)]
enum State {
    Head { hdr: [u8; 4], n: usize },
    Body { body: Body, seq: u8 },
    Lost,
}

/// A message in progress across split packets.
#[derive(Debug)]
struct Partial {
    seq: u8,
    payload: Vec<u8>,
    len: u64,
    first: u64,
}

#[derive(Debug)]
pub(crate) struct Reader {
    state: State,
    partial: Option<Partial>,
    /// Offset of the current packet's first byte.
    first: u64,
    pub pos: u64,
}

#[derive(Debug)]
pub(crate) enum Item {
    Msg(Msg),
    Error { kind: ErrorKind, offset: u64 },
}

impl Reader {
    pub(crate) fn new() -> Self {
        Self {
            state: State::Head { hdr: [0; 4], n: 0 },
            partial: None,
            first: 0,
            pos: 0,
        }
    }

    pub(crate) fn start_at(&mut self, pos: u64) {
        self.pos = pos;
        self.first = pos;
    }

    pub(crate) fn lose(&mut self) {
        self.state = State::Lost;
        self.partial = None;
    }

    pub(crate) fn is_lost(&self) -> bool {
        matches!(self.state, State::Lost)
    }

    pub(crate) fn resume(&mut self) {
        self.state = State::Head { hdr: [0; 4], n: 0 };
        self.partial = None;
        self.first = self.pos;
    }

    pub(crate) fn buffered(&self) -> usize {
        let p = self.partial.as_ref().map_or(0, |p| p.payload.len());
        match &self.state {
            State::Head { n, .. } => p + n,
            State::Body { body, .. } => p + body.kept.len(),
            State::Lost => 0,
        }
    }

    /// Heap bytes held: the kept payload of the packet being read and of the message it
    /// continues (split at 16 MiB).
    pub(crate) fn heap_bytes(&self) -> usize {
        let partial = self.partial.as_ref().map_or(0, |p| p.payload.capacity());
        match &self.state {
            State::Body { body, .. } => partial + body.heap_bytes(),
            State::Head { .. } | State::Lost => partial,
        }
    }

    pub(crate) fn mid_message(&self) -> bool {
        match &self.state {
            State::Head { n, .. } => *n > 0 || self.partial.is_some(),
            State::Body { .. } => true,
            State::Lost => false,
        }
    }

    pub(crate) fn gap(&mut self, len: u64) -> bool {
        self.pos = self.pos.saturating_add(len);
        match &mut self.state {
            State::Body { body, .. } => body.skip_gap(len),
            State::Lost => true,
            State::Head { .. } => false,
        }
    }

    /// The next message; `keep` bytes of its payload are kept.
    pub(crate) fn next(&mut self, input: &mut &[u8], limits: &Limits, keep: usize) -> Option<Item> {
        loop {
            match &mut self.state {
                State::Lost => {
                    self.pos += input.len() as u64;
                    *input = &[];
                    return None;
                }
                State::Head { hdr, n } => {
                    if input.is_empty() {
                        return None;
                    }
                    if *n == 0 {
                        self.first = self.pos;
                    }
                    let k = (4 - *n).min(input.len());
                    hdr[*n..*n + k].copy_from_slice(&input[..k]);
                    *n += k;
                    *input = &input[k..];
                    self.pos += k as u64;
                    if *n < 4 {
                        return None;
                    }
                    let len = u64::from(u32::from_le_bytes([hdr[0], hdr[1], hdr[2], 0]));
                    let seq = hdr[3];
                    let so_far = self.partial.as_ref().map_or(0, |p| p.len);
                    if so_far + len > limits.max_declared_len {
                        let offset = self.partial.as_ref().map_or(self.first, |p| p.first);
                        self.lose();
                        return Some(Item::Error {
                            kind: ErrorKind::TooLarge { len: so_far + len },
                            offset,
                        });
                    }
                    let room =
                        keep.saturating_sub(self.partial.as_ref().map_or(0, |p| p.payload.len()));
                    self.state = State::Body {
                        body: Body::new(self.first, len, room),
                        seq,
                    };
                }
                State::Body { body, seq } => {
                    let used = body.take(input);
                    *input = &input[used..];
                    self.pos += used as u64;
                    if !body.done() {
                        return None;
                    }
                    let seq = *seq;
                    let len = body.len;
                    let kept = std::mem::take(&mut body.kept);
                    self.state = State::Head { hdr: [0; 4], n: 0 };
                    let mut p = self.partial.take().unwrap_or(Partial {
                        seq,
                        payload: Vec::new(),
                        len: 0,
                        first: self.first,
                    });
                    p.payload.extend_from_slice(&kept);
                    p.len += len;
                    if len == MAX_PACKET {
                        self.partial = Some(p);
                        continue;
                    }
                    return Some(Item::Msg(Msg {
                        seq: p.seq,
                        last_seq: seq,
                        payload: p.payload,
                        len: p.len,
                        first: p.first,
                        last: self.pos - 1,
                    }));
                }
            }
        }
    }
}
