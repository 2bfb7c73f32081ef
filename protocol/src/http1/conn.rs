//! The public face of the parser: one [`Http1Conn`] per TCP connection.

use super::pairing::Pairing;
use super::stream::{Cx, Stream};
use super::{EndReason, Http1Event, Limits, Side};

/// The HTTP/1 state of one TCP connection, both directions.
///
/// Feed each direction's bytes in stream order with [`Http1Conn::data`], report what was not
/// captured with [`Http1Conn::gap`], and end with [`Http1Conn::close`]. Events are appended to
/// `out`; feeding the same bytes split differently yields the same events. Nothing panics,
/// whatever the bytes, and memory stays within [`Limits`].
///
/// ```
/// use sonde_protocol::http1::{EndReason, Http1Conn, Http1Event, Limits, Side};
///
/// let mut conn = Http1Conn::new(Limits::default());
/// let mut out = Vec::new();
/// conn.data(Side::Request, 0, b"GET /hello HTTP/1.1\r\nHost: a\r\n\r\n", &mut out);
/// conn.data(Side::Response, 0, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi", &mut out);
/// conn.close(EndReason::Closed, &mut out);
/// let [Http1Event::Exchange(x)] = &out[..] else { panic!("{out:?}") };
/// assert_eq!((x.request.method.as_str(), x.status()), ("GET", Some(200)));
/// assert_eq!((x.request_extent.last, x.response_extent.unwrap().last), (31, 39));
/// ```
#[derive(Debug)]
pub struct Http1Conn {
    limits: Limits,
    req: Stream,
    resp: Stream,
    pair: Pairing,
    ended: bool,
}

impl Http1Conn {
    /// A connection with nothing seen yet.
    pub fn new(limits: Limits) -> Self {
        Self {
            pair: Pairing::new(&limits),
            limits,
            req: Stream::new(Side::Request),
            resp: Stream::new(Side::Response),
            ended: false,
        }
    }

    /// Bytes of `side` starting at stream offset `offset` (offsets of one side increase by the
    /// bytes fed plus gap lengths; the caller guarantees that). The first call for a side sets
    /// where its stream starts. A jump forward is taken as a gap; bytes already seen are
    /// ignored.
    pub fn data(&mut self, side: Side, offset: u64, bytes: &[u8], out: &mut Vec<Http1Event>) {
        // A stream never reaches 2^64 bytes; such a call is ignored rather than overflow.
        let fits = offset.checked_add(bytes.len() as u64).is_some();
        if self.parsing() && fits {
            let (stream, mut cx) = self.split(side, out);
            stream.data(offset, bytes, &mut cx);
            self.settle();
        }
    }

    /// `len` bytes of `side` at `offset` were not captured (capture size limit or lost
    /// records). Inside a body of known length they are skipped; anywhere else the message
    /// they cut is lost and the side resynchronises at the next message start.
    pub fn gap(&mut self, side: Side, offset: u64, len: u64, out: &mut Vec<Http1Event>) {
        let len = len.min(u64::MAX - offset);
        if self.parsing() && len > 0 {
            let (stream, mut cx) = self.split(side, out);
            stream.gap(offset, len, &mut cx);
            self.settle();
        }
    }

    /// The connection ended (close, reset, idle eviction, process exit): settles the messages in
    /// progress and reports every request still pending, with [`super::Exchange::incomplete`]
    /// saying why it has no response. Later calls are ignored.
    pub fn close(&mut self, reason: EndReason, out: &mut Vec<Http1Event>) {
        if self.ended {
            return;
        }
        self.ended = true;
        if self.pair.stopped() {
            return;
        }
        for side in [Side::Request, Side::Response] {
            let (stream, mut cx) = self.split(side, out);
            stream.close(reason, &mut cx);
        }
        self.pair.close(reason, out);
    }

    /// Bytes buffered for incomplete heads on `side` (never more than `max_head_bytes`).
    pub fn buffered(&self, side: Side) -> usize {
        match side {
            Side::Request => self.req.buffered(),
            Side::Response => self.resp.buffered(),
        }
    }

    /// Heap bytes this connection's parser holds now (buffers, tables, remembered statements,
    /// queued requests): what dropping it would free, for the agent's memory budget. An
    /// estimate from capacities and sizes, cheap to compute (no allocation).
    ///
    /// Here: both directions' buffers of incomplete heads, and the pending requests with their
    /// parsed heads and responses (O(pending), at most `max_pending`). `size_of::<Http1Conn>()`
    /// itself is not included.
    pub fn heap_bytes(&self) -> usize {
        self.req.heap_bytes() + self.resp.heap_bytes() + self.pair.heap_bytes()
    }

    /// Requests waiting for their response or their own end (never more than `max_pending`).
    pub fn pending(&self) -> usize {
        self.pair.pending()
    }

    /// Parsing stopped for good (protocol switch or [`Http1Conn::close`]).
    pub fn is_stopped(&self) -> bool {
        !self.parsing()
    }

    /// The limits this connection was created with.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    fn parsing(&self) -> bool {
        !self.ended && !self.pair.stopped()
    }

    fn split<'a>(
        &'a mut self,
        side: Side,
        out: &'a mut Vec<Http1Event>,
    ) -> (&'a mut Stream, Cx<'a>) {
        let stream = match side {
            Side::Request => &mut self.req,
            Side::Response => &mut self.resp,
        };
        let cx = Cx {
            pair: &mut self.pair,
            limits: &self.limits,
            out,
        };
        (stream, cx)
    }

    /// Applies what one side's bytes decided for the other side.
    fn settle(&mut self) {
        if self.pair.stopped() {
            self.req.stop();
            self.resp.stop();
        } else if self.pair.take_declined() {
            self.req.release();
        }
    }
}
