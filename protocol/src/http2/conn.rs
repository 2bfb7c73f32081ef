//! The public face of the parser: one [`H2Conn`] per TCP connection.

use super::reader::{Cx, PeerSettings, Reader};
use super::stream::Streams;
use super::upgrade::H2cUpgrade;
use super::{EndReason, H2Event, Limits, RequestHead, Side, Stats, frame};

/// The HTTP/2 state of one TCP connection, both directions.
///
/// Feed each direction's bytes in stream order with [`H2Conn::data`] (one call per syscall:
/// call boundaries are where a lost direction looks for frames again), report what was not
/// captured with [`H2Conn::gap`], and end with [`H2Conn::close`]. Events are appended to
/// `out`. While a direction is in sync, feeding the same bytes split differently yields the
/// same events. Nothing panics, whatever the bytes, and memory stays within [`Limits`].
///
/// ```
/// use sonde_protocol::http2::{EndReason, H2Conn, H2Event, Limits, Side};
///
/// let mut conn = H2Conn::new(Limits::default());
/// let mut out = Vec::new();
/// let mut req = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
/// // HEADERS, stream 1, END_STREAM | END_HEADERS: :method GET, :scheme http, :path /.
/// req.extend_from_slice(&[0, 0, 3, 1, 5, 0, 0, 0, 1, 0x82, 0x86, 0x84]);
/// conn.data(Side::Request, 0, &req, &mut out);
/// // HEADERS, stream 1, END_STREAM | END_HEADERS: :status 204.
/// conn.data(Side::Response, 0, &[0, 0, 1, 1, 5, 0, 0, 0, 1, 0x89], &mut out);
/// let [H2Event::Exchange(x)] = &out[..] else { panic!("{out:?}") };
/// assert_eq!((x.method(), x.path(), x.status()), (Some("GET"), Some("/"), Some(204)));
/// assert_eq!(x.request_extent.map(|e| (e.first, e.last)), Some((24, 35)));
/// assert_eq!(x.response_extent.map(|e| (e.first, e.last)), Some((0, 9)));
/// conn.close(EndReason::Closed, &mut out);
/// assert_eq!(out.len(), 1);
/// ```
#[derive(Debug)]
pub struct H2Conn {
    req: Reader,
    resp: Reader,
    streams: Streams,
    /// What each side advertised in SETTINGS (indexed by `Side as usize`).
    settings: [PeerSettings; 2],
    ended: bool,
}

impl H2Conn {
    /// A connection seen from its start with prior knowledge (`detect` found the client
    /// preface): the request side starts with the preface, both HPACK tables are empty.
    pub fn new(limits: Limits) -> Self {
        Self {
            req: Reader::at_start(Side::Request, &limits, true),
            resp: Reader::at_start(Side::Response, &limits, false),
            streams: Streams::new(limits),
            settings: [PeerSettings::default(); 2],
            ended: false,
        }
    }

    /// A connection joined in the middle: each direction finds frames at the first call that
    /// starts with a plausible frame header, and both HPACK tables start unknown (fields that
    /// refer to older entries are reported unrecovered).
    pub fn attach(limits: Limits) -> Self {
        Self {
            req: Reader::attached(Side::Request, &limits),
            resp: Reader::attached(Side::Response, &limits),
            streams: Streams::new(limits),
            settings: [PeerSettings::default(); 2],
            ended: false,
        }
    }

    /// A connection that switched to h2c after an HTTP/1.1 `Upgrade` (see [`H2cUpgrade`]):
    /// stream 1 carries the upgrade request; bytes before the offsets are ignored.
    pub fn upgraded(limits: Limits, upgrade: &H2cUpgrade) -> Self {
        let mut req = match upgrade.request_offset {
            Some(_) => Reader::at_start(Side::Request, &limits, true),
            None => Reader::attached(Side::Request, &limits),
        };
        if let Some(offset) = upgrade.request_offset {
            req.start_at(offset);
        }
        let mut resp = Reader::at_start(Side::Response, &limits, false);
        resp.start_at(upgrade.response_offset);
        let mut streams = Streams::new(limits);
        if let Some(r) = &upgrade.request {
            streams.upgraded(r.head.clone(), r.extent);
        }
        let mut settings = [PeerSettings::default(); 2];
        if let Some(payload) = &upgrade.client_settings {
            let mine = &mut settings[Side::Request as usize];
            for (id, value) in frame::settings(payload) {
                match id {
                    frame::setting::HEADER_TABLE_SIZE => mine.header_table_size = Some(value),
                    frame::setting::MAX_FRAME_SIZE
                        if (frame::DEFAULT_MAX_FRAME_SIZE..=frame::MAX_FRAME_LEN)
                            .contains(&value) =>
                    {
                        mine.max_frame_size = Some(value)
                    }
                    _ => {}
                }
            }
        }
        Self {
            req,
            resp,
            streams,
            settings,
            ended: false,
        }
    }

    /// Bytes of `side` starting at stream offset `offset` (offsets of one side increase by the
    /// bytes fed plus gap lengths). A jump forward is taken as a gap; bytes already seen are
    /// ignored.
    pub fn data(&mut self, side: Side, offset: u64, bytes: &[u8], out: &mut Vec<H2Event>) {
        let fits = offset.checked_add(bytes.len() as u64).is_some();
        if !self.ended && fits {
            let (reader, mut cx) = self.split(side, out);
            reader.data(offset, bytes, &mut cx);
        }
    }

    /// `len` bytes of `side` at `offset` were not captured. Inside a DATA payload they are
    /// skipped; inside a header block they cost its fields; anywhere else they cost frame
    /// sync. Any loss but the first costs that direction's HPACK dynamic table.
    pub fn gap(&mut self, side: Side, offset: u64, len: u64, out: &mut Vec<H2Event>) {
        let len = len.min(u64::MAX - offset);
        if !self.ended && len > 0 {
            let (reader, mut cx) = self.split(side, out);
            reader.gap(offset, len, &mut cx);
        }
    }

    /// The connection ended: every stream still open is reported, with
    /// [`super::H2Exchange::incomplete`] saying what is missing. Later calls are ignored.
    pub fn close(&mut self, reason: EndReason, out: &mut Vec<H2Event>) {
        if self.ended {
            return;
        }
        self.ended = true;
        for side in [Side::Request, Side::Response] {
            let (reader, mut cx) = self.split(side, out);
            reader.close(&mut cx);
        }
        self.streams.close(reason, out);
    }

    /// Streams whose request head arrived since the last call, oldest first, each with the
    /// request-side offset of the head's first byte: for callers that act when a request
    /// starts (trace context), before its exchange is reported. Their heads are available
    /// from [`H2Conn::request`] until the exchange is reported. At most `max_streams` are
    /// remembered between calls.
    pub fn take_started(&mut self) -> impl Iterator<Item = (u32, u64)> + '_ {
        self.streams.started.drain(..)
    }

    /// The request head of a stream not yet reported.
    pub fn request(&self, stream_id: u32) -> Option<&RequestHead> {
        self.streams.request(stream_id)
    }

    /// Counters of what was parsed, skipped and lost.
    pub fn stats(&self) -> &Stats {
        &self.streams.stats
    }

    /// Bytes buffered on `side` (a header block in progress, a control frame's payload; never
    /// more than `max_header_block_bytes` plus 1 KiB).
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
    /// Here: both directions' header block and control frame buffers and HPACK dynamic tables,
    /// and every tracked stream's record, heads and trailers (O(streams), at most
    /// `max_streams`). `size_of::<H2Conn>()` itself is not included.
    pub fn heap_bytes(&self) -> usize {
        self.req.heap_bytes() + self.resp.heap_bytes() + self.streams.heap_bytes()
    }

    /// Streams tracked (never more than `max_streams`).
    pub fn streams(&self) -> usize {
        self.streams.len()
    }

    /// Whether `side` knows where its frames are.
    pub fn in_sync(&self, side: Side) -> bool {
        match side {
            Side::Request => self.req.in_sync(),
            Side::Response => self.resp.in_sync(),
        }
    }

    /// The limits this connection was created with.
    pub fn limits(&self) -> &Limits {
        &self.streams.limits
    }

    fn split<'a>(&'a mut self, side: Side, out: &'a mut Vec<H2Event>) -> (&'a mut Reader, Cx<'a>) {
        let reader = match side {
            Side::Request => &mut self.req,
            Side::Response => &mut self.resp,
        };
        let cx = Cx {
            streams: &mut self.streams,
            settings: &mut self.settings,
            out,
        };
        (reader, cx)
    }
}
