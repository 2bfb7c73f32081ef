//! Connection-level tests: pairing, framing choices, gaps, recovery. Events are rendered to
//! one compact line each so a test reads as the exchange it expects:
//!
//! ```text
//! X GET /a 200 req[0-31 b0] resp[0-39 b2] 1xx[] -      exchange; extents: first-last, body
//!   flags after the body length: c chunked, u<n> uncaptured bytes, ! not complete
//! E request desync @12                                  error: side, label, offset
//! S upgrade(websocket) req@77 resp@129                  stopped
//! ```

use super::*;

pub(super) use super::render::render;

/// Drives one connection, keeping each side's offset.
pub(super) struct Run {
    pub(super) conn: Http1Conn,
    pub(super) out: Vec<Http1Event>,
    off: [u64; 2],
}

impl Run {
    pub(super) fn new() -> Self {
        Self::with(Limits::default())
    }

    pub(super) fn with(limits: Limits) -> Self {
        Self {
            conn: Http1Conn::new(limits),
            out: Vec::new(),
            off: [0, 0],
        }
    }

    pub(super) fn data(&mut self, side: Side, bytes: &[u8]) -> &mut Self {
        let i = side as usize;
        self.conn.data(side, self.off[i], bytes, &mut self.out);
        self.off[i] += bytes.len() as u64;
        self
    }

    pub(super) fn req(&mut self, bytes: &[u8]) -> &mut Self {
        self.data(Side::Request, bytes)
    }

    pub(super) fn resp(&mut self, bytes: &[u8]) -> &mut Self {
        self.data(Side::Response, bytes)
    }

    pub(super) fn gap(&mut self, side: Side, len: u64) -> &mut Self {
        let i = side as usize;
        self.conn.gap(side, self.off[i], len, &mut self.out);
        self.off[i] += len;
        self
    }

    pub(super) fn close(&mut self, reason: EndReason) -> Vec<String> {
        self.conn.close(reason, &mut self.out);
        self.events()
    }

    pub(super) fn events(&mut self) -> Vec<String> {
        self.out.drain(..).map(|e| render(&e)).collect()
    }
}

pub(super) const GET_A: &[u8] = b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n"; // 28 bytes
pub(super) const OK_2: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"; // 40 bytes

#[test]
fn keep_alive_exchanges_pair_in_order_with_offsets() {
    let mut r = Run::new();
    r.req(GET_A).resp(OK_2).req(GET_A).resp(OK_2);
    r.req(b"GET /c HTTP/1.1\r\n\r\n")
        .resp(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(
        r.close(EndReason::Closed),
        [
            "X GET /a 200 req[0-27 b0] resp[0-39 b2] 1xx[] -",
            "X GET /a 200 req[28-55 b0] resp[40-79 b2] 1xx[] -",
            "X GET /c 404 req[56-74 b0] resp[80-124 b0] 1xx[] -",
        ]
    );
}

#[test]
fn exchange_values_are_exposed() {
    let mut r = Run::new();
    r.req(b"POST /p?x=1 HTTP/1.0\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nabc");
    r.resp(OK_2);
    let [Http1Event::Exchange(x)] = &r.out[..] else {
        panic!("{:?}", r.out)
    };
    assert_eq!(x.request.method, "POST");
    assert_eq!(x.request.target, "/p?x=1");
    assert_eq!(x.request.minor_version, 0);
    assert_eq!(
        x.request.headers.get_str("content-type"),
        Some("text/plain")
    );
    let resp = x.response.as_ref().expect("response head");
    assert_eq!(
        (resp.status, resp.reason.as_str(), resp.minor_version),
        (200, "OK", 1)
    );
    assert_eq!(x.request_extent.body_len, 3);
    assert_eq!(x.request_extent.last, 71);
    assert_eq!(x.first_response_byte(), Some(0));
    assert_eq!(x.incomplete, None);
}

#[test]
fn pipelined_requests_take_responses_in_order() {
    let mut r = Run::new();
    let three = [
        GET_A,
        b"HEAD /b HTTP/1.1\r\n\r\n",
        b"DELETE /c HTTP/1.1\r\n\r\n",
    ]
    .concat();
    r.req(&three);
    assert_eq!(r.conn.pending(), 3);
    r.resp(OK_2);
    r.resp(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n");
    r.resp(b"HTTP/1.1 204 No Content\r\n\r\n");
    assert_eq!(
        r.close(EndReason::Closed),
        [
            "X GET /a 200 req[0-27 b0] resp[0-39 b2] 1xx[] -",
            "X HEAD /b 200 req[28-47 b0] resp[40-80 b0] 1xx[] -",
            "X DELETE /c 204 req[48-69 b0] resp[81-107 b0] 1xx[] -",
        ]
    );
    assert_eq!(r.conn.pending(), 0);
}

#[test]
fn bodiless_statuses_do_not_consume_the_next_response() {
    let mut r = Run::new();
    r.req(&[GET_A, GET_A, GET_A].concat());
    r.resp(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\n\r\n"); // 49
    r.resp(b"HTTP/1.1 204 No Content\r\nContent-Length: 50\r\n\r\n"); // 47
    r.resp(OK_2);
    assert_eq!(
        r.events(),
        [
            "X GET /a 304 req[0-27 b0] resp[0-48 b0] 1xx[] -",
            "X GET /a 204 req[28-55 b0] resp[49-95 b0] 1xx[] -",
            "X GET /a 200 req[56-83 b0] resp[96-135 b2] 1xx[] -",
        ]
    );
}

#[test]
fn continue_then_body_then_final_response() {
    let mut r = Run::new();
    r.req(b"PUT /up HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"); // 61
    r.resp(b"HTTP/1.1 100 Continue\r\n\r\n"); // 25
    assert_eq!(
        r.events(),
        Vec::<String>::new(),
        "the interim does not end the exchange"
    );
    r.req(b"hello");
    r.resp(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n");
    let events = r.events();
    assert_eq!(
        events,
        ["X PUT /up 201 req[0-65 b5] resp[25-67 b0] 1xx[100@0-24] -"]
    );
}

#[test]
fn final_response_before_the_request_body_ends_waits_for_it() {
    let mut r = Run::new();
    r.req(b"POST /big HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc"); // head 42
    r.resp(b"HTTP/1.1 413 Too Large\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(r.events(), Vec::<String>::new());
    r.req(b"defghij");
    assert_eq!(
        r.events(),
        ["X POST /big 413 req[0-51 b10] resp[0-44 b0] 1xx[] -"]
    );
}

#[test]
fn chunked_bodies_both_ways() {
    let mut r = Run::new();
    r.req(
        b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4;x=y\r\nwiki\r\n0\r\nT: 1\r\n\r\n",
    );
    r.resp(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
    r.resp(b"5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\n\r\n");
    assert_eq!(
        r.events(),
        ["X POST /c 200 req[0-71 b4c] resp[0-86 b19c] 1xx[] -"]
    );
}

#[test]
fn close_delimited_response_ends_with_the_connection() {
    let mut r = Run::new();
    r.req(b"GET /old HTTP/1.0\r\n\r\n");
    r.resp(b"HTTP/1.0 200 OK\r\nContent-Type: text/html\r\n\r\n<html>");
    r.resp(b"</html>");
    assert_eq!(r.events(), Vec::<String>::new());
    assert_eq!(
        r.close(EndReason::Closed),
        ["X GET /old 200 req[0-20 b0] resp[0-56 b13] 1xx[] -"]
    );

    let mut r = Run::new();
    r.req(b"GET /old HTTP/1.0\r\n\r\n");
    r.resp(b"HTTP/1.0 200 OK\r\n\r\npartial");
    assert_eq!(
        r.close(EndReason::Reset),
        ["X GET /old 200 req[0-20 b0] resp[0-25 b7!] 1xx[] response_truncated"]
    );
}

#[test]
fn close_reports_what_is_pending() {
    let mut r = Run::new();
    r.req(GET_A)
        .req(b"POST /x HTTP/1.1\r\nContent-Length: 9\r\n\r\nabc");
    r.resp(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc");
    assert_eq!(
        r.close(EndReason::Evicted),
        [
            "X GET /a 200 req[0-27 b0] resp[0-40 b3!] 1xx[] response_truncated",
            "X POST /x - req[28-69 b3!] resp- 1xx[] evicted",
        ]
    );
    let mut r = Run::new();
    r.req(GET_A);
    assert_eq!(
        r.close(EndReason::Reset),
        ["X GET /a - req[0-27 b0] resp- 1xx[] reset"]
    );
    let mut r = Run::new();
    r.req(GET_A).resp(b"HTTP/1.1 200 OK\r\nContent-");
    assert_eq!(
        r.close(EndReason::Closed),
        [
            "E response truncated_head @0",
            "X GET /a - req[0-27 b0] resp- 1xx[] response_truncated"
        ]
    );
    // After close nothing more happens.
    r.req(GET_A).resp(OK_2);
    assert_eq!(r.close(EndReason::Closed), Vec::<String>::new());
    assert!(r.conn.is_stopped());
}

#[test]
fn upgrade_stops_parsing_and_says_where() {
    let mut r = Run::new();
    r.req(b"GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"); // 61
    r.resp(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x05hello"); // head 77
    r.req(b"\x81\x85abcdxxxxx").resp(b"HTTP/1.1 200 OK\r\n\r\n");
    assert_eq!(
        r.close(EndReason::Closed),
        [
            "X GET /ws 101 req[0-60 b0] resp[0-76 b0] 1xx[] -",
            "S upgrade(websocket) req@61 resp@77",
        ]
    );
    assert!(r.conn.is_stopped());
    assert_eq!(
        r.conn.buffered(Side::Request) + r.conn.buffered(Side::Response),
        0
    );
}

#[test]
fn connect_tunnels_stop_and_held_bytes_are_not_errors() {
    let connect = b"CONNECT db:5432 HTTP/1.1\r\nHost: db:5432\r\n\r\n"; // 43
    let mut r = Run::new();
    r.req(connect).req(b"\x16\x03\x01\x00\xa5\x01"); // TLS sent before the answer
    r.resp(b"HTTP/1.1 200 Connection established\r\n\r\n\x16\x03\x03");
    assert_eq!(
        r.close(EndReason::Closed),
        [
            "X CONNECT db:5432 200 req[0-42 b0] resp[0-38 b0] 1xx[] -",
            "S connect req@43 resp@39",
        ]
    );

    // Refused: the held bytes were noise after all, and parsing goes on.
    let mut r = Run::new();
    r.req(connect).req(b"\x16\x03\x01\x00\xa5\x01\n");
    r.resp(b"HTTP/1.1 407 Proxy Auth\r\nContent-Length: 0\r\n\r\n");
    r.req(GET_A).resp(OK_2);
    assert_eq!(
        r.close(EndReason::Closed),
        [
            "E request desync @43",
            "X CONNECT db:5432 407 req[0-42 b0] resp[0-45 b0] 1xx[] -",
            "X GET /a 200 req[50-77 b0] resp[46-85 b2] 1xx[] -",
        ]
    );
}

/// Found by the fuzzer: the held bytes were reported after the whole response call when fed at
/// once, but right after the refusing head when fed byte by byte.
#[test]
fn a_refused_switch_reports_held_bytes_where_the_refusal_is() {
    let upgrade = b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n";
    let responses = [&b"HTTP/1.1 204 No Content\r\n\r\n"[..], b"\x01junk", OK_2].concat();
    let feed = |step: usize| {
        let mut r = Run::new();
        r.req(upgrade).req(b"\x81\x05hello");
        for chunk in responses.chunks(step) {
            r.resp(chunk);
        }
        r.close(EndReason::Closed)
    };
    let whole = feed(responses.len());
    assert_eq!(
        whole,
        [
            "E request desync @40",
            "X GET /ws 204 req[0-39 b0] resp[0-26 b0] 1xx[] -",
            "E response desync @27",
            "E response unexpected_response @32",
        ]
    );
    assert_eq!(feed(1), whole);
}

#[test]
fn declined_upgrade_keeps_parsing() {
    let mut r = Run::new();
    r.req(b"GET / HTTP/1.1\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\n\r\n"); // 69
    r.resp(OK_2).req(GET_A).resp(OK_2);
    assert_eq!(
        r.close(EndReason::Closed),
        [
            "X GET / 200 req[0-68 b0] resp[0-39 b2] 1xx[] -",
            "X GET /a 200 req[69-96 b0] resp[40-79 b2] 1xx[] -",
        ]
    );
}

#[test]
fn responses_without_requests_are_counted_not_invented() {
    let mut r = Run::new();
    r.resp(OK_2).req(GET_A).resp(OK_2);
    assert_eq!(
        r.close(EndReason::Closed),
        [
            "E response unexpected_response @0",
            "X GET /a 200 req[0-27 b0] resp[40-79 b2] 1xx[] -",
        ]
    );
}

#[test]
fn leniencies_stray_crlf_bare_lf_and_offsets_not_from_zero() {
    let mut conn = Http1Conn::new(Limits::default());
    let mut out = Vec::new();
    conn.data(
        Side::Request,
        1000,
        b"\r\nGET / HTTP/1.1\nHost: x\n\n",
        &mut out,
    );
    conn.data(
        Side::Response,
        7,
        b"HTTP/1.1 200\nContent-Length: 0\n\n",
        &mut out,
    );
    conn.data(
        Side::Request,
        1026,
        b"\r\nGET /2 HTTP/1.1\r\n\r\n",
        &mut out,
    );
    // Already seen: ignored. A jump forward: a gap between messages.
    conn.data(
        Side::Response,
        7,
        b"HTTP/1.1 200\nContent-Length: 0\n\n",
        &mut out,
    );
    conn.data(
        Side::Response,
        40,
        b"HTTP/1.1 200\nContent-Length: 0\n\n",
        &mut out,
    );
    conn.close(EndReason::Closed, &mut out);
    let rendered: Vec<String> = out.iter().map(render).collect();
    assert_eq!(
        rendered,
        [
            "X GET / 200 req[1002-1025 b0] resp[7-38 b0] 1xx[] -",
            "E response gap_between_messages @39",
            "X GET /2 - req[1028-1046 b0] resp- 1xx[] response_not_captured",
            "E response unexpected_response @40",
        ]
    );
}

#[test]
fn offsets_near_the_end_of_u64_do_not_overflow() {
    let mut conn = Http1Conn::new(Limits::default());
    let mut out = Vec::new();
    let start = u64::MAX - 100;
    conn.data(Side::Request, start, GET_A, &mut out);
    conn.data(Side::Request, u64::MAX - 3, b"GET / HTTP/1.1", &mut out);
    conn.gap(Side::Response, u64::MAX - 10, u64::MAX, &mut out);
    conn.data(Side::Response, u64::MAX, b"x", &mut out);
    conn.close(EndReason::Closed, &mut out);
    let rendered: Vec<String> = out.iter().map(render).collect();
    assert_eq!(
        rendered,
        [
            "E response gap_between_messages @18446744073709551605",
            "X GET /a - req[18446744073709551515-18446744073709551542 b0] resp- 1xx[] response_not_captured",
        ]
    );
}

#[test]
fn heap_bytes_sees_a_partial_head_and_the_pending_request() {
    use super::stream::KEEP_CAPACITY;
    let mut r = Run::new();
    let fresh = r.conn.heap_bytes();
    assert!(fresh < 1024, "{fresh}");
    // A 6 KB head without its blank line yet: buffered.
    let head = format!(
        "GET /a HTTP/1.1\r\nHost: h\r\nX-Pad: {}\r\n",
        "p".repeat(6000)
    );
    r.req(head.as_bytes());
    assert_eq!(r.conn.buffered(Side::Request), head.len());
    let partial = r.conn.heap_bytes();
    assert!(
        (6000..2 * head.len() + 1024).contains(&partial),
        "{partial}"
    );
    // The head completes: its buffer, over KEEP_CAPACITY, is released; the parsed head waits
    // for its response in the pairing queue.
    r.req(b"\r\n");
    assert_eq!(r.conn.buffered(Side::Request), 0);
    let waiting = r.conn.heap_bytes();
    assert!((6000..head.len() + 2048).contains(&waiting), "{waiting}");
    r.resp(OK_2);
    assert_eq!(
        r.events(),
        ["X GET /a 200 req[0-6036 b0] resp[0-39 b2] 1xx[] -"]
    );
    let done = r.conn.heap_bytes();
    assert!(done < KEEP_CAPACITY, "{done}");
}
