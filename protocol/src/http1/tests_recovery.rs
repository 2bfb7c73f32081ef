//! Connection-level tests of what goes wrong: capture gaps, garbage, limits, invalid framing.
//! Same rendering as `tests.rs`.

use super::tests::{GET_A, OK_2, Run};
use super::*;

#[test]
fn a_gap_in_a_known_length_body_is_skipped() {
    let mut r = Run::new();
    r.req(b"POST /u HTTP/1.1\r\nContent-Length: 100\r\n\r\n0123456789"); // head 41
    r.gap(Side::Request, 80).req(b"0123456789").req(GET_A);
    r.resp(b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n"); // 41
    r.gap(Side::Response, 5000).resp(OK_2);
    assert_eq!(
        r.close(EndReason::Closed),
        [
            "X POST /u 200 req[0-140 b100u80] resp[0-5040 b5000u5000] 1xx[] -",
            "X GET /a 200 req[141-168 b0] resp[5041-5080 b2] 1xx[] -",
        ]
    );
}

#[test]
fn a_gap_past_the_end_of_a_body_loses_what_follows() {
    let mut r = Run::new();
    r.req(b"POST /u HTTP/1.1\r\nContent-Length: 10\r\n\r\n"); // 40
    // The gap holds the body and the start of the next request.
    r.gap(Side::Request, 20).req(b"ost: h\r\n\r\n").req(GET_A);
    r.resp(OK_2).resp(OK_2).resp(OK_2);
    assert_eq!(
        r.close(EndReason::Closed),
        [
            "E request gap_between_messages @50",
            "X POST /u 200 req[0-49 b10u10] resp[0-39 b2] 1xx[] -",
            "E response response_to_lost_request @40",
            "X GET /a 200 req[70-97 b0] resp[80-119 b2] 1xx[] -",
        ]
    );
}

#[test]
fn a_gap_in_a_request_head_keeps_its_slot() {
    let mut r = Run::new();
    r.req(b"GET /lost HTTP/1.1\r\nHo")
        .gap(Side::Request, 10)
        .req(b"\r\n\r\n")
        .req(GET_A);
    r.resp(OK_2)
        .resp(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(
        r.close(EndReason::Closed),
        [
            "E request gap_in_head @22",
            "E response response_to_lost_request @0",
            "X GET /a 201 req[36-63 b0] resp[40-82 b0] 1xx[] -",
        ]
    );
}

#[test]
fn a_gap_in_a_response_head_loses_that_response_only() {
    let mut r = Run::new();
    r.req(&[GET_A, GET_A].concat());
    // The rest of the cut head and its body follow the gap; the next response follows that.
    r.resp(b"HTTP/1.1 200 OK\r\nCont")
        .gap(Side::Response, 30)
        .resp(b"ength: 2\r\n\r\nhi");
    r.resp(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(
        r.close(EndReason::Closed),
        [
            "E response gap_in_head @21",
            "X GET /a - req[0-27 b0] resp- 1xx[] response_not_captured",
            "X GET /a 202 req[28-55 b0] resp[65-108 b0] 1xx[] -",
        ]
    );
}

#[test]
fn a_gap_between_responses_counts_as_one_lost_response() {
    let mut r = Run::new();
    r.req(&[GET_A, GET_A, GET_A].concat());
    r.resp(OK_2).gap(Side::Response, 40);
    r.resp(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(
        r.close(EndReason::Closed),
        [
            "X GET /a 200 req[0-27 b0] resp[0-39 b2] 1xx[] -",
            "E response gap_between_messages @40",
            "X GET /a - req[28-55 b0] resp- 1xx[] response_not_captured",
            "X GET /a 202 req[56-83 b0] resp[80-123 b0] 1xx[] -",
        ]
    );
}

#[test]
fn a_gap_in_chunk_framing_truncates_and_resyncs() {
    let mut r = Run::new();
    r.req(&[GET_A, GET_A].concat());
    r.resp(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nab"); // head 45
    r.gap(Side::Response, 12).resp(b"\r\n").resp(OK_2);
    assert_eq!(
        r.close(EndReason::Closed),
        [
            "E response gap_in_chunk_framing @52",
            "X GET /a 200 req[0-27 b0] resp[0-51 b2c!] 1xx[] response_truncated",
            "X GET /a 200 req[28-55 b0] resp[66-105 b2] 1xx[] -",
        ]
    );
}

#[test]
fn garbage_desyncs_once_and_recovers_at_the_next_message() {
    let mut r = Run::new();
    r.req(b"\x00\x01binary GET /x\r\n\xff\xfe\nGET /b HTTP/1.1\r\n\r\n"); // GET /b at 20
    r.resp(b"\x16\x03garbage HTTP/1.1 2\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"); // at 22
    assert_eq!(
        r.close(EndReason::Closed),
        [
            "E request desync @0",
            "E response desync @0",
            "X GET /b 200 req[20-38 b0] resp[22-59 b0] 1xx[] -",
        ]
    );
}

#[test]
fn resync_finds_a_message_that_does_not_follow_a_line_break() {
    let mut r = Run::new();
    r.req(&[GET_A, GET_A].concat());
    // A length that disagrees with the body: the next response starts inside "what follows".
    r.resp(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nhi"); // 59
    r.resp(b"HTTP/1.1 2")
        .resp(b"01 Created\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(
        r.close(EndReason::Closed),
        [
            "E response invalid_content_length @0",
            "X GET /a 200 req[0-27 b0] resp[0-56 b0!] 1xx[] response_malformed",
            "X GET /a 201 req[28-55 b0] resp[59-101 b0] 1xx[] -",
        ]
    );
}

#[test]
fn malformed_requests_keep_their_slot() {
    let mut r = Run::new();
    r.req(b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n").req(GET_A);
    r.resp(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        .resp(OK_2);
    assert_eq!(
        r.close(EndReason::Closed),
        [
            "E request malformed_request_line @0",
            "E response response_to_lost_request @0",
            "X GET /a 200 req[30-57 b0] resp[47-86 b2] 1xx[] -",
        ]
    );
}

#[test]
fn header_limits_lose_the_message_and_recover() {
    let limits = Limits {
        max_headers: 3,
        max_head_bytes: 128,
        ..Limits::default()
    };
    let mut many = b"GET /many HTTP/1.1\r\n".to_vec(); // 20
    for i in 0..5 {
        many.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n"); // 62 bytes
    let mut big = b"GET /big HTTP/1.1\r\nX: ".to_vec();
    big.resize(300, b'a');
    big.extend_from_slice(b"\r\n\r\n"); // 304 bytes
    let mut r = Run::with(limits.clone());
    r.req(&many);
    for chunk in big.chunks(7) {
        r.req(chunk);
        assert!(r.conn.buffered(Side::Request) <= limits.max_head_bytes);
    }
    r.req(GET_A);
    r.resp(OK_2).resp(OK_2).resp(OK_2);
    assert_eq!(
        r.close(EndReason::Closed),
        [
            "E request too_many_headers @0",
            "E request head_too_large @62",
            "E response response_to_lost_request @0",
            "E response response_to_lost_request @40",
            "X GET /a 200 req[366-393 b0] resp[80-119 b2] 1xx[] -",
        ]
    );
}

#[test]
fn invalid_lengths_are_errors_but_keep_the_head() {
    let mut r = Run::new();
    r.req(b"POST /x HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!");
    r.req(b"POST /y HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n");
    r.req(GET_A);
    r.resp(b"HTTP/1.1 400 Bad\r\nContent-Length: x\r\n\r\n")
        .resp(OK_2)
        .resp(OK_2);
    assert_eq!(
        r.close(EndReason::Closed),
        [
            "E request invalid_content_length @0",
            "E request invalid_transfer_encoding @64",
            "E response invalid_content_length @0",
            "X POST /x 400 req[0-57 b0!] resp[0-38 b0!] 1xx[] response_malformed",
            "X POST /y 200 req[64-108 b0!] resp[39-78 b2] 1xx[] -",
            "X GET /a 200 req[109-136 b0] resp[79-118 b2] 1xx[] -",
        ]
    );
}

#[test]
fn pending_requests_are_bounded() {
    let limits = Limits {
        max_pending: 2,
        ..Limits::default()
    };
    let mut r = Run::with(limits);
    r.req(&[GET_A, GET_A, GET_A].concat());
    assert_eq!(r.conn.pending(), 2);
    r.resp(OK_2);
    assert_eq!(
        r.close(EndReason::Closed),
        [
            "E request too_many_pending @56",
            "X GET /a 200 req[28-55 b0] resp[0-39 b2] 1xx[] -",
            "X GET /a - req[56-83 b0] resp- 1xx[] connection_closed",
        ]
    );
}

#[test]
fn interim_responses_are_bounded() {
    let limits = Limits {
        max_interim: 1,
        ..Limits::default()
    };
    let mut r = Run::with(limits);
    r.req(GET_A);
    r.resp(b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n"); // 44
    r.resp(b"HTTP/1.1 103 Early Hints\r\n\r\n"); // 28
    r.resp(OK_2);
    assert_eq!(
        r.close(EndReason::Closed),
        [
            "E response too_many_interim @44",
            "X GET /a 200 req[0-27 b0] resp[72-111 b2] 1xx[103@0-43] -",
        ]
    );
}

#[test]
fn an_early_response_pairs_with_a_request_still_in_its_head() {
    let mut r = Run::new();
    r.req(b"GET /slow HTTP/1.1\r\nX-Long: ");
    r.resp(b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    assert_eq!(
        r.close(EndReason::Closed),
        [
            "E request truncated_head @0",
            "E response response_to_lost_request @0"
        ]
    );
}
