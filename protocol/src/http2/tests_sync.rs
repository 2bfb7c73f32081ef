//! Capture gaps, joining mid-connection, resynchronising, and what HPACK state survives them.
//! The rule under test (see `hpack/table.rs`): a header value is reported only if it can be
//! known; a dynamic index the observer did not see inserted, or that a missed block may have
//! shifted, is reported unrecovered. Lines as in `tests.rs`.

use super::tests::Run;
use super::tests::build::*;
use super::*;

/// A GET whose `:authority` is inserted into the dynamic table (so later requests may refer
/// to index 62).
fn get_indexing(id: u32, path: &str, authority: &str) -> Vec<u8> {
    headers(
        id,
        ES,
        &block(&[
            idx(2),
            idx(6),
            lit(":path", path),
            lit_idx(":authority", authority),
        ]),
    )
}

/// A GET that takes `:authority` from dynamic index `i`.
fn get_ref(id: u32, path: &str, i: u8) -> Vec<u8> {
    headers(
        id,
        ES,
        &block(&[idx(2), idx(6), lit(":path", path), idx(i)]),
    )
}

fn authority(x: &H2Exchange) -> Option<&str> {
    x.request.as_ref().and_then(|r| r.authority.as_deref())
}

#[test]
fn a_gap_inside_data_is_skipped_by_length() {
    let mut r = Run::new();
    r.req(&get(1, "/"));
    r.resp(&headers(1, 0, &status(200)));
    let body = data(1, ES, &[b'x'; 100]);
    r.resp(&body[..30])
        .gap(Side::Response, 70)
        .resp(&body[100..]);
    r.req(&get(3, "/next"));
    r.resp(&headers(3, ES, &status(200)));
    assert_eq!(
        r.lines(),
        [
            "X 1 GET / 200 req[24-57 b0] resp[0-118 b100 u70] - u0",
            "X 3 GET /next 200 req[58-95 b0] resp[119-128 b0] - u0"
        ]
    );
    assert_eq!(r.conn.stats().sync_losses, 0);
}

#[test]
fn a_gap_inside_a_grpc_message_keeps_the_count_exact() {
    let mut r = Run::new();
    r.req(&post(
        1,
        "/s.S/M",
        &[lit("content-type", "application/grpc")],
    ));
    let mut body = grpc_msg(&[7; 200]);
    body.extend(grpc_msg(b"tail"));
    let frame = data(1, ES, &body);
    // Capture the frame header, the prefix and 20 body bytes; the rest of the first message is
    // a gap; the second message is captured.
    r.req(&frame[..9 + 25])
        .gap(Side::Request, 180)
        .req(&frame[9 + 205..]);
    r.resp(&headers(
        1,
        ES,
        &block(&[status(200), lit("grpc-status", "0")]),
    ));
    assert_eq!(
        r.lines(),
        ["X 1 POST /s.S/M 200 req[24-302 b214 u180 m2] resp[0-24 b0 m0] - u0"]
    );
    // A gap over a prefix: the count is only a lower bound.
    let mut r = Run::new();
    r.req(&post(
        1,
        "/s.S/M",
        &[lit("content-type", "application/grpc")],
    ));
    r.req(&frame[..9 + 205])
        .gap(Side::Request, 3)
        .req(&frame[9 + 208..]);
    r.resp(&headers(
        1,
        ES,
        &block(&[status(200), lit("grpc-status", "0")]),
    ));
    assert_eq!(
        r.lines(),
        ["X 1 POST /s.S/M 200 req[24-302 b214 u3 m1~] resp[0-24 b0 m0] - u0"]
    );
}

#[test]
fn a_gap_over_a_frame_header_loses_sync_and_the_table() {
    let mut r = Run::new();
    r.req(&get_indexing(1, "/a", "svc.local")); // :authority now at 62
    r.req(&get_ref(3, "/b", 62));
    r.resp(&headers(1, ES, &status(200)))
        .resp(&headers(3, ES, &status(200)));
    // A gap that swallows whole frames (they could have been header blocks).
    r.gap(Side::Request, 40);
    r.req(&get_ref(5, "/c", 62));
    r.resp(&headers(5, ES, &status(200)));
    assert_eq!(
        r.lines(),
        [
            "X 1 GET /a 200 req[24-66 b0] resp[0-9 b0] - u0",
            "X 3 GET /b 200 req[67-88 b0] resp[10-19 b0] - u0",
            "E request gap_between_frames @89",
            "X 5 GET /c 200 req[129-150 b0] resp[20-29 b0] - u1"
        ]
    );
    let xs = r.exchanges();
    assert_eq!(authority(xs[1]), Some("svc.local"));
    // Index 62 may no longer be svc.local: never reported as such.
    assert_eq!(authority(xs[2]), None);
    assert_eq!(
        xs[2].request.as_ref().unwrap().headers.unrecovered(),
        [Unrecovered::Index(62)]
    );
    let s = r.conn.stats();
    assert_eq!((s.sync_losses, s.resyncs, s.hpack_resets), (1, 1, 1));
}

#[test]
fn inserts_after_a_loss_are_trusted_at_their_new_positions() {
    let mut r = Run::new();
    r.req(&get_indexing(1, "/a", "old.example")); // 62 = old
    r.resp(&headers(1, ES, &status(200)));
    r.gap(Side::Request, 30); // unknown inserts may have happened
    // After the loss: insert new.example (62), then refer to 62 (new) and 63 (old? unknown).
    r.req(&get_indexing(3, "/b", "new.example"));
    r.req(&headers(
        5,
        ES,
        &block(&[
            idx(2),
            idx(6),
            lit(":path", "/c"),
            idx(62),
            lit_idx("x-k", "v"),
            idx(64),
        ]),
    ));
    r.resp(&headers(3, ES, &status(200)))
        .resp(&headers(5, ES, &status(200)));
    let xs = r.exchanges();
    assert_eq!(authority(xs[1]), Some("new.example"));
    let x5 = &xs[2].request.as_ref().unwrap();
    assert_eq!(x5.authority.as_deref(), Some("new.example"));
    assert_eq!(x5.headers.get_str("x-k"), Some("v"));
    // 64 after inserting x-k is what 63 was before: the entry older than our first insert.
    assert_eq!(x5.headers.unrecovered(), [Unrecovered::Index(64)]);
    assert_eq!(xs[2].unrecovered(), 1);
}

#[test]
fn a_table_size_update_to_zero_makes_the_table_complete_again() {
    let mut r = Run::attach();
    // Joined mid-connection at a frame boundary: the first block clears the table.
    let b = block(&[
        vec![0x20],
        vec![0x3f, 0xe1, 0x1f],
        idx(2),
        idx(6),
        idx(4),
        lit_idx(":authority", "z"),
    ]);
    r.req(&headers(1, ES, &b));
    r.req(&get_ref(3, "/x", 62));
    r.req(&get_ref(5, "/y", 63)); // past the end of a complete table: an error, not unknown
    r.resp(&headers(1, ES, &status(200)))
        .resp(&headers(3, ES, &status(200)))
        .resp(&headers(5, ES, &status(200)));
    assert_eq!(
        r.lines(),
        [
            "E request hpack_invalid @52 s5",
            "X 1 GET / 200 req[0-29 b0] resp[0-9 b0] - u0",
            "X 3 GET /x 200 req[30-51 b0] resp[10-19 b0] - u0",
            "X 5 - - 200 req[52-73 b0] resp[20-29 b0] - u0?"
        ]
    );
    assert_eq!(authority(r.exchanges()[1]), Some("z"));
}

#[test]
fn joining_mid_connection_reports_unknown_fields_never_wrong_ones() {
    let mut r = Run::attach();
    // The request refers to entries inserted before we joined: :path (62), :authority (63).
    r.req(&headers(
        1,
        ES,
        &block(&[idx(3), idx(7), idx(62), idx(63), lit("x-a", "1")]),
    ));
    r.resp(&headers(1, 0, &block(&[status(200), idx(70)])))
        .resp(&data(1, 0, b"body"))
        .resp(&headers(1, ES, &lit("grpc-status", "0")));
    assert_eq!(
        r.lines(),
        ["X 1 POST - 200 req[0-19 b0] resp[0-47 b4] - u3?"]
    );
    let x = r.exchanges()[0];
    let req = x.request.as_ref().unwrap();
    assert_eq!(
        (req.path.as_deref(), req.authority.as_deref()),
        (None, None)
    );
    assert!(req.pseudo_unknown());
    assert_eq!(
        req.headers.unrecovered(),
        [Unrecovered::Index(62), Unrecovered::Index(63)]
    );
    assert_eq!(req.headers.get_str("x-a"), Some("1"));
    assert!(
        !x.response.as_ref().unwrap().pseudo_unknown(),
        ":status is known"
    );
    assert_eq!(r.conn.stats().unrecovered_fields, 3);
}

#[test]
fn a_gap_inside_a_header_block_keeps_frame_sync() {
    let mut r = Run::new();
    let h = get(1, "/lost");
    r.req(&h[..12]).gap(Side::Request, (h.len() - 12) as u64);
    r.req(&get(3, "/kept"));
    r.resp(&headers(1, ES, &status(200)))
        .resp(&headers(3, ES, &status(204)));
    assert_eq!(
        r.lines(),
        [
            "E request gap_in_header_block @24 s1",
            "X 1 - - 200 req[24-61 b0] resp[0-9 b0] - u0?",
            "X 3 GET /kept 204 req[62-99 b0] resp[10-19 b0] - u0"
        ]
    );
    assert!(r.conn.in_sync(Side::Request));
    assert!(r.exchanges()[0].headers_incomplete());
}

#[test]
fn resync_takes_only_a_call_start_that_is_a_plausible_frame() {
    let mut r = Run::attach();
    // Mid-frame bytes: zeros (DATA on stream 0), text, a plausible header followed by junk.
    r.req(&[0u8; 20]);
    r.req(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut junk = data(1, 0, b"abc");
    junk.extend([0xff; 12]);
    r.req(&junk);
    assert!(!r.conn.in_sync(Side::Request));
    r.req(&get(1, "/ok"));
    assert!(r.conn.in_sync(Side::Request));
    r.resp(&headers(1, ES, &status(200)));
    assert_eq!(
        r.lines(),
        ["X 1 GET /ok 200 req[71-106 b0] resp[0-9 b0] - u0"]
    );
    let s = r.conn.stats();
    assert_eq!(
        (s.resyncs, s.resync_skipped_bytes),
        (2, 71),
        "one resync per side"
    );
}

#[test]
fn a_short_call_start_is_completed_by_the_next_call() {
    let mut r = Run::attach();
    let g = get(1, "/split");
    r.req(&g[..4]).req(&g[4..]);
    r.resp(&headers(1, ES, &status(200))[..2])
        .resp(&headers(1, ES, &status(200))[2..]);
    assert_eq!(
        r.lines(),
        ["X 1 GET /split 200 req[0-38 b0] resp[0-9 b0] - u0"]
    );
    // A short start that turns out wrong: the next call is tried on its own.
    let mut r = Run::attach();
    r.req(&[0, 0, 0, 0])
        .req(&[9, 9, 9, 9, 9])
        .req(&get(1, "/x"));
    r.resp(&headers(1, ES, &status(200)));
    assert_eq!(r.lines(), ["X 1 GET /x 200 req[9-43 b0] resp[0-9 b0] - u0"]);
}

#[test]
fn a_gap_over_the_preface_alone_keeps_sync() {
    let mut r = Run::raw(H2Conn::new(Limits::default()));
    r.req(&PREFACE[..5])
        .gap(Side::Request, 19)
        .req(&get(1, "/"));
    r.resp(&headers(1, ES, &status(200)));
    assert_eq!(r.lines(), ["X 1 GET / 200 req[24-57 b0] resp[0-9 b0] - u0"]);
    assert_eq!(r.conn.stats().sync_losses, 0);
}

#[test]
fn losses_on_the_response_side_explain_missing_responses() {
    let mut r = Run::new();
    r.req(&get(1, "/a")).req(&get(3, "/b"));
    r.resp(&headers(1, 0, &status(200)));
    r.gap(Side::Response, 500); // whatever followed is lost
    r.close();
    assert_eq!(
        r.lines(),
        [
            "E response gap_between_frames @10",
            "X 1 GET /a 200 req[24-58 b0] resp[0-9 b0 L!] response_truncated u0",
            "X 3 GET /b - req[59-93 b0] resp- response_not_captured u0"
        ]
    );
}

#[test]
fn losses_on_the_request_side_do_not_hold_exchanges_back() {
    let mut r = Run::new();
    r.req(&post(1, "/up", &[])).req(&data(1, 0, b"part"));
    r.gap(Side::Request, 1000); // the rest of the body, END_STREAM included, maybe
    r.resp(&headers(1, 0, &status(200)))
        .resp(&data(1, ES, b"ok"));
    assert_eq!(
        r.lines(),
        [
            "E request gap_between_frames @59",
            "X 1 POST /up 200 req[24-58 b4 L!] resp[0-20 b2] - u0"
        ]
    );
}

#[test]
fn trailers_after_a_lost_head_are_still_trailers() {
    let mut r = Run::new();
    r.req(&post(1, "/g", &[lit("content-type", "application/grpc")]))
        .req(&data(1, ES, &grpc_msg(b"q")));
    r.gap(Side::Response, 50); // the response head was in there
    r.resp(&data(1, 0, &grpc_msg(b"r")))
        .resp(&headers(1, ES, &lit("grpc-status", "7")));
    assert_eq!(
        r.lines(),
        [
            "E response gap_between_frames @0",
            "X 1 POST /g - req[24-90 b6 m1] resp[50-88 b6 m1~ L] - u0"
        ]
    );
    // No head, but the trailers (and so the gRPC status) are known; frames before the first
    // one seen may be missing, so the message count is a lower bound.
    let x = r.exchanges()[0];
    assert!(x.response.is_none());
    let call = crate::grpc::GrpcCall::from_exchange(x).expect("gRPC from the request");
    assert_eq!(call.status, Some(7));
}

#[test]
fn trailers_of_a_stream_opened_before_joining_are_orphans() {
    let mut r = Run::attach();
    r.resp(&data(7, 0, b"x"))
        .resp(&headers(7, ES, &lit("grpc-status", "0")));
    r.close();
    assert!(r.lines().is_empty());
    assert_eq!(r.conn.stats().orphan_frames, 2);
}

#[test]
fn plausible_frame_start_for_callers() {
    assert!(plausible_frame_start(Side::Request, &get(1, "/")));
    assert!(plausible_frame_start(
        Side::Response,
        &settings(&[(3, 100)])
    ));
    assert!(!plausible_frame_start(Side::Request, b"GET / HTTP/1.1\r\n"));
    assert!(
        !plausible_frame_start(Side::Request, &get(2, "/")),
        "even client stream"
    );
    assert!(!plausible_frame_start(Side::Request, &[0; 9]));
    assert!(!plausible_frame_start(Side::Response, &[0, 0, 1]));
}

#[test]
fn request_frames_of_a_stream_opened_before_joining_are_counted() {
    let mut r = Run::attach();
    r.resp(&headers(1, 0, &status(200)));
    r.req(&data(1, 0, b"abc")).req(&data(1, ES, b"de"));
    r.resp(&data(1, ES, b"ok"));
    assert_eq!(r.lines(), ["X 1 - - 200 req[0-22 b5 L] resp[0-20 b2] - u0"]);
    assert!(r.exchanges()[0].request.is_none());
}
