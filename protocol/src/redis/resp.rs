//! Reads RESP2/RESP3 values one top-level value at a time, without keeping them: only what the
//! pairing needs (the type, the first elements of a command or push, an error's text) is kept,
//! bulk strings are otherwise counted and skipped.
//!
//! ```text
//! simple   + - : _ , # (   <type><text>\r\n                  "+OK\r\n" ":42\r\n" "_\r\n"
//! bulk     $ ! =           <type><len>\r\n<len bytes>\r\n    "$3\r\nfoo\r\n"  "$-1\r\n" (null)
//! aggregate * ~ >          <type><count>\r\n<count values>   "*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"
//!          % |             <type><pairs>\r\n<2*pairs values>  | = attribute, precedes a value
//! inline command           words separated by spaces, \r\n    "PING\r\n" (requests only)
//! ```

use super::error::ErrorKind;
use crate::db::{Limits, Side};
use crate::mem;

/// Elements of an aggregate kept (command name, subcommand or channel, count).
const KEEP_ITEMS: usize = 3;
/// Bytes kept of each of those.
const KEEP_ITEM_BYTES: usize = 64;
/// Bytes kept of an error's text.
const KEEP_ERROR_BYTES: usize = 512;

/// One top-level value, summarised.
#[derive(Debug, Default)]
pub(crate) struct Value {
    /// The type byte of the top-level value (after any attribute); `b'i'` for an inline command.
    pub kind: u8,
    /// Elements (or pairs for a map); `-1` for a null; bulk length for a bulk string.
    pub len: i64,
    /// The first elements of an aggregate (or words of an inline command), when scalar;
    /// at most 64 bytes each.
    pub items: Vec<Vec<u8>>,
    /// Elements or words in all (may exceed `items.len()`).
    pub count: u64,
    /// The text of a simple string, error, or integer at top level (errors: up to 512 bytes).
    pub text: Vec<u8>,
    pub first: u64,
    pub last: u64,
}

#[derive(Debug)]
enum State {
    Line {
        buf: Vec<u8>,
        first: u64,
    },
    Bulk {
        left: u64,
        keep: usize,
        leaf: Vec<u8>,
    },
    Lost {
        prev_cr: bool,
    },
}

#[derive(Debug)]
struct Agg {
    left: u64,
    attr: bool,
}

#[derive(Debug)]
pub(crate) enum Item {
    Value(Value),
    Error { kind: ErrorKind, offset: u64 },
}

#[derive(Debug)]
pub(crate) struct Reader {
    side: Side,
    state: State,
    stack: Vec<Agg>,
    cur: Option<Value>,
    pub pos: u64,
    /// While lost: the bytes so far end with CRLF.
    pub at_line_end: bool,
}

impl Reader {
    pub(crate) fn new(side: Side) -> Self {
        Self {
            side,
            state: State::Line {
                buf: Vec::new(),
                first: 0,
            },
            stack: Vec::new(),
            cur: None,
            pos: 0,
            at_line_end: false,
        }
    }

    pub(crate) fn lose(&mut self) {
        self.state = State::Lost { prev_cr: false };
        self.stack.clear();
        self.cur = None;
        self.at_line_end = false;
    }

    pub(crate) fn is_lost(&self) -> bool {
        matches!(self.state, State::Lost { .. })
    }

    pub(crate) fn resume(&mut self) {
        self.state = State::Line {
            buf: Vec::new(),
            first: self.pos,
        };
        self.stack.clear();
        self.cur = None;
    }

    pub(crate) fn start_at(&mut self, pos: u64) {
        self.pos = pos;
        if let State::Line { first, .. } = &mut self.state {
            *first = pos;
        }
    }

    pub(crate) fn buffered(&self) -> usize {
        let held = match &self.state {
            State::Line { buf, .. } => buf.len(),
            State::Bulk { leaf, .. } => leaf.len(),
            State::Lost { .. } => 0,
        };
        let cur = self.cur.as_ref().map_or(0, |v| {
            v.text.len() + v.items.iter().map(Vec::len).sum::<usize>()
        });
        held + cur
    }

    /// Heap bytes held: the line or bulk string being read, the open aggregates, and what is
    /// kept of the value in progress (its first elements, its text).
    pub(crate) fn heap_bytes(&self) -> usize {
        let state = match &self.state {
            State::Line { buf, .. } => buf.capacity(),
            State::Bulk { leaf, .. } => leaf.capacity(),
            State::Lost { .. } => 0,
        };
        let cur = self.cur.as_ref().map_or(0, |v| {
            mem::vec(&v.items)
                + v.items.iter().map(Vec::capacity).sum::<usize>()
                + v.text.capacity()
        });
        state + mem::vec(&self.stack) + cur
    }

    pub(crate) fn mid_value(&self) -> bool {
        match &self.state {
            State::Line { buf, .. } => !buf.is_empty() || self.cur.is_some(),
            State::Bulk { .. } => true,
            State::Lost { .. } => false,
        }
    }

    /// `len` bytes not captured: true if they fell inside the skipped part of a bulk string.
    pub(crate) fn gap(&mut self, len: u64) -> bool {
        self.pos = self.pos.saturating_add(len);
        match &mut self.state {
            State::Bulk { left, keep, .. } if *keep == 0 && len + 2 <= *left => {
                *left -= len;
                true
            }
            State::Lost { prev_cr } => {
                *prev_cr = false;
                self.at_line_end = false;
                true
            }
            _ => false,
        }
    }

    pub(crate) fn next(&mut self, input: &mut &[u8], limits: &Limits) -> Option<Item> {
        while !input.is_empty() {
            match &mut self.state {
                State::Lost { prev_cr } => {
                    for &b in *input {
                        self.at_line_end = *prev_cr && b == b'\n';
                        *prev_cr = b == b'\r';
                    }
                    self.pos += input.len() as u64;
                    *input = &[];
                    return None;
                }
                State::Bulk { left, keep, leaf } => {
                    let n = usize::try_from(*left)
                        .unwrap_or(usize::MAX)
                        .min(input.len());
                    // The last two bytes must be CRLF.
                    let body_left = left.saturating_sub(2);
                    let in_body = usize::try_from(body_left).unwrap_or(usize::MAX).min(n);
                    let k = in_body.min(*keep);
                    leaf.extend_from_slice(&input[..k]);
                    *keep -= k;
                    for (i, &b) in input[in_body..n].iter().enumerate() {
                        let want = if *left - in_body as u64 - i as u64 == 2 {
                            b'\r'
                        } else {
                            b'\n'
                        };
                        if b != want {
                            let offset = self.pos + (in_body + i) as u64;
                            self.lose();
                            return Some(Item::Error {
                                kind: ErrorKind::MissingCrlf,
                                offset,
                            });
                        }
                    }
                    *left -= n as u64;
                    self.pos += n as u64;
                    *input = &input[n..];
                    if *left == 0 {
                        let leaf = std::mem::take(leaf);
                        self.resume_line();
                        if let Some(v) = self.leaf(leaf) {
                            return Some(Item::Value(v));
                        }
                    }
                }
                State::Line { buf, first } => {
                    let nl = input.iter().position(|&b| b == b'\n');
                    let n = nl.map_or(input.len(), |i| i + 1);
                    if buf.len() + n > limits.max_message_bytes {
                        let offset = *first;
                        let len = (buf.len() + n) as u64;
                        self.lose();
                        return Some(Item::Error {
                            kind: ErrorKind::TooLarge { len },
                            offset,
                        });
                    }
                    buf.extend_from_slice(&input[..n]);
                    self.pos += n as u64;
                    *input = &input[n..];
                    nl?;
                    let mut line = std::mem::take(buf);
                    let first = *first;
                    line.pop();
                    if line.last() == Some(&b'\r') {
                        line.pop();
                    }
                    self.resume_line();
                    match self.line(line, first, limits) {
                        Ok(Some(v)) => return Some(Item::Value(v)),
                        Ok(None) => {}
                        Err(kind) => {
                            self.lose();
                            return Some(Item::Error {
                                kind,
                                offset: first,
                            });
                        }
                    }
                }
            }
        }
        None
    }

    fn resume_line(&mut self) {
        self.state = State::Line {
            buf: Vec::new(),
            first: self.pos,
        };
    }

    /// One complete line (without CRLF) that started at `first`.
    fn line(
        &mut self,
        line: Vec<u8>,
        first: u64,
        limits: &Limits,
    ) -> Result<Option<Value>, ErrorKind> {
        if self.cur.is_none() {
            if line.is_empty() && self.side == Side::Request {
                // Empty inline lines are ignored by servers.
                return Ok(None);
            }
            self.cur = Some(Value {
                first,
                ..Value::default()
            });
            if self.side == Side::Request && line.first() != Some(&b'*') {
                let v = self.cur.as_mut().expect("just set");
                v.kind = b'i';
                for w in line
                    .split(|&b| b == b' ' || b == b'\t')
                    .filter(|w| !w.is_empty())
                {
                    if v.items.len() < KEEP_ITEMS {
                        v.items.push(w[..w.len().min(KEEP_ITEM_BYTES)].to_vec());
                    }
                    v.count += 1;
                }
                v.len = v.count as i64;
                return Ok(self.cur.take().map(|mut v| {
                    v.last = self.pos - 1;
                    v
                }));
            }
        }
        let Some((&t, rest)) = line.split_first() else {
            return Err(ErrorKind::UnknownType { byte: b'\r' });
        };
        let depth = self.stack.len();
        if depth == 0
            && let Some(v) = self.cur.as_mut()
        {
            v.kind = t;
        }
        match t {
            b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' => {
                let keep = if depth == 0 {
                    if t == b'-' {
                        KEEP_ERROR_BYTES
                    } else {
                        KEEP_ITEM_BYTES
                    }
                } else {
                    KEEP_ITEM_BYTES
                };
                Ok(self.leaf(rest[..rest.len().min(keep)].to_vec()))
            }
            b'$' | b'!' | b'=' => {
                let len = number(rest)?;
                if len < 0 {
                    if depth == 0
                        && let Some(v) = self.cur.as_mut()
                    {
                        v.len = -1;
                    }
                    return Ok(self.leaf(Vec::new()));
                }
                let len = len as u64;
                if len > limits.max_declared_len {
                    return Err(ErrorKind::TooLarge { len });
                }
                let keep = match (depth, t) {
                    (0, b'!') => KEEP_ERROR_BYTES,
                    (0, _) => 0,
                    (1, _)
                        if self
                            .cur
                            .as_ref()
                            .is_some_and(|v| v.items.len() < KEEP_ITEMS) =>
                    {
                        KEEP_ITEM_BYTES
                    }
                    _ => 0,
                };
                if depth == 0
                    && let Some(v) = self.cur.as_mut()
                {
                    v.len = len as i64;
                }
                self.state = State::Bulk {
                    left: len + 2,
                    keep: keep.min(len as usize),
                    leaf: Vec::new(),
                };
                Ok(None)
            }
            b'*' | b'~' | b'>' | b'%' | b'|' => {
                let n = number(rest)?;
                if depth == 0
                    && let Some(v) = self.cur.as_mut()
                {
                    v.len = n;
                }
                if n <= 0 {
                    return Ok(self.leaf(Vec::new()));
                }
                if depth >= limits.max_depth {
                    return Err(ErrorKind::TooDeep);
                }
                let pairs = matches!(t, b'%' | b'|');
                let left = (n as u64).saturating_mul(if pairs { 2 } else { 1 });
                self.stack.push(Agg {
                    left,
                    attr: t == b'|',
                });
                Ok(None)
            }
            byte => Err(ErrorKind::UnknownType { byte }),
        }
    }

    /// A scalar (or empty aggregate) ended; returns the top-level value if it is complete.
    fn leaf(&mut self, content: Vec<u8>) -> Option<Value> {
        let depth = self.stack.len();
        let in_attr = self.stack.iter().any(|a| a.attr);
        if let Some(v) = self.cur.as_mut() {
            if depth == 0 {
                v.text = content;
            } else if depth == 1 && !in_attr && v.items.len() < KEEP_ITEMS {
                v.items.push(content);
            }
        }
        loop {
            let Some(top) = self.stack.last_mut() else {
                return self.cur.take().map(|mut v| {
                    v.last = self.pos - 1;
                    v
                });
            };
            top.left -= 1;
            if top.left > 0 {
                return None;
            }
            let attr = top.attr;
            self.stack.pop();
            if attr {
                // The attribute's value follows at the same level.
                return None;
            }
            if self.stack.is_empty()
                && let Some(v) = self.cur.as_mut()
            {
                v.count = u64::try_from(v.len).unwrap_or(0);
            }
        }
    }
}

/// A RESP length: `-1` or a non-negative decimal.
fn number(b: &[u8]) -> Result<i64, ErrorKind> {
    if b == b"-1" {
        return Ok(-1);
    }
    if b.is_empty() || b.len() > 18 || !b.iter().all(u8::is_ascii_digit) {
        return Err(ErrorKind::MalformedLength);
    }
    std::str::from_utf8(b)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(ErrorKind::MalformedLength)
}
