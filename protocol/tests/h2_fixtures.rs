//! Real HTTP/2 traffic, recorded once from real clients and servers on 127.0.0.1 (see
//! `fixtures/README.md`, "HTTP/2 fixtures"): each fixture must parse into exactly these
//! exchanges. Offsets, body lengths and fields were cross-checked with `record/h2_frames.py`,
//! an independent reading built on python-hyper's hpack.

mod common;
mod h2common;

use h2common::{Step, exchanges, load, render_all, run};
use sonde_protocol::grpc::{Code, GrpcCall, Messages, Role, StatusSource};
use sonde_protocol::http1::{Http1Conn, Http1Event, StopReason};
use sonde_protocol::http2::{
    EndReason, ErrorCode, H2Conn, H2Event, H2Exchange, H2cUpgrade, Incomplete, Limits, Side,
};

fn check(name: &str, want: &[&str]) -> Vec<H2Event> {
    let events = run(&load(name));
    assert_eq!(render_all(&events), want, "{name}");
    events
}

fn grpc(x: &H2Exchange) -> GrpcCall {
    GrpcCall::from_exchange(x).expect("a gRPC call")
}

fn msgs(count: u32) -> Option<Messages> {
    Some(Messages {
        count,
        compressed: 0,
        exact: true,
    })
}

#[test]
fn grpc_python_every_call_shape_on_one_connection() {
    let events = check(
        "h2_grpc_python",
        &[
            "X 1 POST /sonde.fixture.Echo/Unary 200 req[91-369 b14 m1] resp[72-239 b17 m1] - u0",
            "X 3 POST /sonde.fixture.Echo/Unary 200 req[417-469 b14 m1] resp[270-352 b0 m0] - u0",
            "X 5 POST /sonde.fixture.Echo/ServerStream 200 req[483-557 b10 m1] resp[366-476 b34 m3] - u0",
            "X 7 POST /sonde.fixture.Echo/ClientStream 200 req[558-716 b32 m4] resp[477-534 b12 m1] - u0",
            "X 9 POST /sonde.fixture.Echo/Bidi 200 req[717-866 b27 m3] resp[591-711 b27 m3] - u0",
            "X 11 POST /sonde.fixture.Echo/Nope 200 req[927-1004 b8 m1] resp[712-770 b0 m0] - u0",
            // The client gave up (deadline 0.2 s) before the server answered: RST_STREAM CANCEL.
            // The server's late Trailers-Only answer is not a second exchange.
            "X 13 POST /sonde.fixture.Echo/Unary - req[1018-1086 b11 m1] resp- stream_reset u0 Rrequest:CANCEL",
            "X 15 POST /sonde.fixture.Echo/Unary 200 req[1117-1187 b12 m1] resp[927-1000 b12 m1] - u0",
        ],
    );
    let xs = exchanges(&events);
    let calls: Vec<GrpcCall> = xs.iter().map(|x| grpc(x)).collect();
    let summary: Vec<(Option<&str>, Option<u32>)> = calls
        .iter()
        .map(|c| (c.method.as_deref(), c.status))
        .collect();
    assert_eq!(
        summary,
        [
            (Some("Unary"), Some(0)),
            (Some("Unary"), Some(5)),
            (Some("ServerStream"), Some(0)),
            (Some("ClientStream"), Some(0)),
            (Some("Bidi"), Some(0)),
            (Some("Nope"), Some(12)),
            (Some("Unary"), None),
            (Some("Unary"), Some(0)),
        ]
    );
    assert!(
        calls
            .iter()
            .all(|c| c.service.as_deref() == Some("sonde.fixture.Echo"))
    );
    // Unary OK: status from the trailers, with the server's trailing metadata.
    assert_eq!(calls[0].status_source, Some(StatusSource::Trailers));
    assert_eq!(calls[0].message.as_deref(), Some(""));
    let t = xs[0].response_trailers.as_ref().expect("trailers");
    assert_eq!(t.get_str("x-served-by"), Some("py"));
    let req = xs[0].request.as_ref().expect("request");
    assert_eq!(req.authority.as_deref(), Some("127.0.0.1:19100"));
    assert_eq!(req.scheme.as_deref(), Some("http"));
    assert_eq!(req.headers.get_str("x-request-id"), Some("req-1"));
    assert_eq!(req.headers.get_str("te"), Some("trailers"));
    assert_eq!(
        req.headers.get_str("user-agent"),
        Some("grpc-python/1.85.1 grpc-c/58.0.0 (linux; chttp2)")
    );
    assert_eq!(req.headers.get(":path"), None, "pseudo-headers are apart");
    // NOT_FOUND as Trailers-Only, message percent-decoded.
    assert_eq!(calls[1].status_source, Some(StatusSource::TrailersOnly));
    assert_eq!(calls[1].code(), Some(Code::NotFound));
    assert_eq!(
        calls[1].message.as_deref(),
        Some("item \"missing\" not found: café 100%")
    );
    assert!(calls[1].is_error(Role::Client) && !calls[1].is_error(Role::Server));
    assert!(xs[1].response_trailers.is_none());
    // Streaming shapes: message counts each way.
    let counts: Vec<(Option<Messages>, Option<Messages>)> = calls[2..5]
        .iter()
        .map(|c| (c.request_messages, c.response_messages))
        .collect();
    assert_eq!(
        counts,
        [(msgs(1), msgs(3)), (msgs(4), msgs(1)), (msgs(3), msgs(3))]
    );
    // UNIMPLEMENTED is a server error.
    assert_eq!(calls[5].code(), Some(Code::Unimplemented));
    assert!(calls[5].is_error(Role::Server));
    assert_eq!(calls[5].message.as_deref(), Some("Method not found!"));
    // The deadline: grpc-timeout sent, no status, reset by the client.
    let slow = xs[6];
    assert_eq!(
        slow.request
            .as_ref()
            .unwrap()
            .headers
            .get_str("grpc-timeout"),
        Some("201m")
    );
    assert_eq!(
        slow.incomplete,
        Some(Incomplete::StreamReset {
            by: Side::Request,
            code: ErrorCode::CANCEL
        })
    );
    assert!(calls[6].is_error(Role::Client) && !calls[6].status_unknown);
    // Later calls reuse the dynamic table that earlier ones filled: still all recovered.
    assert_eq!(
        xs[7]
            .request
            .as_ref()
            .unwrap()
            .headers
            .get_str("x-request-id"),
        Some("req-1")
    );
    assert!(
        xs.iter()
            .all(|x| x.unrecovered() == 0 && !x.headers_incomplete())
    );
}

#[test]
fn grpc_python_large_messages_span_many_frames() {
    let events = check(
        "h2_grpc_python_large",
        &[
            "X 1 POST /sonde.fixture.Echo/Unary 200 req[91-40353 b40018 m1] resp[72-100236 b100014 m1] - u0",
        ],
    );
    let c = grpc(exchanges(&events)[0]);
    assert_eq!(
        (c.request_messages, c.response_messages),
        (msgs(1), msgs(1))
    );
    assert_eq!(c.code(), Some(Code::Ok));
}

#[test]
fn grpc_python_concurrent_calls_complete_out_of_order() {
    let events = check(
        "h2_grpc_python_concurrent",
        &[
            "X 1 POST /sonde.fixture.Echo/Unary 200 req[91-346 b11 m1] resp[72-235 b13 m1] - u0",
            "X 3 POST /sonde.fixture.Echo/Unary 200 req[347-394 b9 m1] resp[249-319 b9 m1] - u0",
            "X 9 POST /sonde.fixture.Echo/Unary 200 req[495-544 b11 m1] resp[337-412 b14 m1] - u0",
            "X 7 POST /sonde.fixture.Echo/Unary 200 req[445-494 b11 m1] resp[413-489 b15 m1] - u0",
            "X 5 POST /sonde.fixture.Echo/Unary 200 req[395-444 b11 m1] resp[490-563 b12 m1] - u0",
        ],
    );
    assert!(exchanges(&events).iter().all(|x| grpc(x).status == Some(0)));
}

#[test]
fn grpc_node_client_against_python_server() {
    let events = check(
        "h2_grpc_node_client",
        &[
            "X 1 POST /sonde.fixture.Echo/Unary 200 req[48-195 b13 m1] resp[72-237 b15 m1] - u0",
            "X 3 POST /sonde.fixture.Echo/Unary 200 req[213-273 b14 m1] resp[251-333 b0 m0] - u0",
            "X 5 POST /sonde.fixture.Echo/ServerStream 200 req[274-334 b10 m1] resp[347-436 b22 m2] - u0",
        ],
    );
    let xs = exchanges(&events);
    assert_eq!(
        xs[0]
            .request
            .as_ref()
            .unwrap()
            .headers
            .get_str("user-agent"),
        Some("grpc-node-js/1.14.7")
    );
    let c = grpc(xs[1]);
    assert_eq!(
        (c.code(), c.status_source),
        (Some(Code::NotFound), Some(StatusSource::TrailersOnly))
    );
    assert_eq!(
        c.message.as_deref(),
        Some("item \"missing\" not found: café 100%")
    );
    assert_eq!(grpc(xs[2]).response_messages, msgs(2));
}

#[test]
fn curl_post_against_nginx() {
    let events = check(
        "h2_curl_post_nginx",
        &["X 1 POST /echo 200 req[64-573 b424] resp[49-122 b7] - u0"],
    );
    let x = exchanges(&events)[0];
    assert_eq!(x.incomplete, None);
    let req = x.request.as_ref().unwrap();
    assert_eq!(req.headers.get_str("content-length"), Some("424"));
    assert_eq!(req.headers.get_str("user-agent"), Some("curl/7.88.1"));
    let resp = x.response.as_ref().unwrap();
    assert_eq!(resp.headers.get_str("server"), Some("nginx/1.22.1"));
    assert_eq!(resp.headers.get_str("content-type"), Some("text/plain"));
    assert!(GrpcCall::from_exchange(x).is_none(), "not gRPC");
}

#[test]
fn nghttp_concurrent_gets_against_nginx() {
    // nghttp sends PRIORITY frames for idle streams 3..11 first: they open nothing.
    let events = check(
        "h2_nghttp_nginx",
        &[
            "X 13 GET /index.html 200 req[115-162 b0] resp[49-236 b64] - u0",
            "X 15 GET /missing 404 req[163-190 b0] resp[237-457 b153] - u0",
            "X 17 GET /small.txt 200 req[191-220 b0] resp[458-585 b6] - u0",
            "X 19 GET /fail 500 req[221-246 b0] resp[586-656 b5] - u0",
        ],
    );
    let resp = exchanges(&events)[0].response.clone().unwrap();
    assert_eq!(resp.headers.get_str("etag"), Some("\"65920080-40\""));
    assert_eq!(
        resp.headers.get_str("last-modified"),
        Some("Mon, 01 Jan 2024 00:00:00 GMT")
    );
    let req = exchanges(&events)[1].request.clone().unwrap();
    assert_eq!(
        req.headers.get_str("accept-encoding"),
        Some("gzip, deflate")
    );
}

#[test]
fn h2load_pipelines_streams_against_nginx() {
    let events = check(
        "h2_h2load_nginx",
        &[
            "X 1 GET /index.html 200 req[58-99 b0] resp[49-236 b64] - u0",
            "X 3 GET /small.txt 200 req[100-122 b0] resp[237-364 b6] - u0",
            "X 5 GET /index.html 200 req[123-136 b0] resp[365-552 b64] - u0",
            "X 7 GET /small.txt 200 req[146-168 b0] resp[553-680 b6] - u0",
            "X 9 GET /index.html 200 req[169-182 b0] resp[681-868 b64] - u0",
            "X 11 GET /small.txt 200 req[183-205 b0] resp[869-996 b6] - u0",
        ],
    );
    // Requests 3..11 are a few bytes each: nearly every field comes from the dynamic table.
    for x in exchanges(&events) {
        let req = x.request.as_ref().unwrap();
        assert_eq!(req.authority.as_deref(), Some("127.0.0.1:19106"));
        assert_eq!(
            req.headers.get_str("user-agent"),
            Some("h2load nghttp2/1.52.0")
        );
    }
}

/// What the agent does for h2c: the HTTP/1 parser reads the upgrade request and the 101, then
/// says where HTTP/2 starts; the HTTP/2 parser takes over from there.
#[test]
fn curl_h2c_upgrade_hands_over_from_http1() {
    let steps = load("h2_upgrade_curl");
    let mut h1 = Http1Conn::new(Default::default());
    let mut h1_out = Vec::new();
    let mut off = [0u64; 2];
    for step in &steps {
        if let Step::Data(side, bytes) = step {
            h1.data(*side, off[*side as usize], bytes, &mut h1_out);
            off[*side as usize] += bytes.len() as u64;
        }
        if h1.is_stopped() {
            break;
        }
    }
    let [
        Http1Event::Exchange(x101),
        Http1Event::Stopped {
            reason,
            request_offset,
            response_offset,
        },
    ] = &h1_out[..]
    else {
        panic!("{h1_out:?}")
    };
    assert_eq!(
        reason,
        &StopReason::Upgrade {
            protocol: Some("h2c".into())
        }
    );
    assert_eq!(
        (x101.status(), *request_offset, *response_offset),
        (Some(101), Some(177), 71)
    );
    let upgrade = H2cUpgrade::from_http1(x101, *request_offset, *response_offset);
    assert_eq!(
        upgrade.client_settings.as_deref(),
        Some(&[0, 3, 0, 0, 0, 100, 0, 4, 2, 0, 0, 0, 0, 2, 0, 0, 0, 0][..])
    );
    let mut conn = H2Conn::upgraded(Limits::default(), &upgrade);
    let events = h2common::feed(&mut conn, &steps, [0, 0], |_| Vec::new());
    assert_eq!(
        render_all(&events),
        [
            "X 1 GET /first 200 req[0-176 b0] resp[122-175 b22] - u0",
            "X 3 GET /second 200 req[250-298 b0] resp[185-231 b23] - u0",
            "X 5 GET /missing 404 req[299-320 b0] resp[232-279 b24] - u0",
        ]
    );
    let first = exchanges(&events)[0].request.clone().unwrap();
    assert_eq!(first.authority.as_deref(), Some("127.0.0.1:19107"));
    assert_eq!(first.headers.get_str("user-agent"), Some("curl/7.88.1"));
    assert_eq!(
        first.headers.get("upgrade"),
        None,
        "HTTP/1 connection fields dropped"
    );
    assert_eq!(
        exchanges(&events)[0]
            .response
            .as_ref()
            .unwrap()
            .headers
            .get_str("content-length"),
        Some("22")
    );
}

#[test]
fn closing_early_reports_what_is_pending() {
    // Only the first request records of the gRPC fixture: the requests are seen, no response.
    let steps = load("h2_grpc_python_concurrent");
    let cut: Vec<Step> = steps
        .iter()
        .filter(|s| matches!(s, Step::Data(Side::Request, _)))
        .cloned()
        .chain([Step::End(EndReason::Reset)])
        .collect();
    let events = run(&cut);
    let xs = exchanges(&events);
    assert_eq!(xs.len(), 5);
    assert!(
        xs.iter()
            .all(|x| x.incomplete == Some(Incomplete::ConnectionReset)
                && x.response.is_none()
                && x.request_extent.is_some_and(|e| e.complete))
    );
    let ids: Vec<u32> = xs.iter().map(|x| x.stream_id).collect();
    assert_eq!(ids, [1, 3, 5, 7, 9], "in stream order");
}

#[test]
fn every_fixture_is_covered_here() {
    assert_eq!(
        h2common::fixture_names(),
        [
            "h2_curl_post_nginx",
            "h2_grpc_node_client",
            "h2_grpc_python",
            "h2_grpc_python_concurrent",
            "h2_grpc_python_large",
            "h2_h2load_nginx",
            "h2_nghttp_nginx",
            "h2_upgrade_curl",
        ]
    );
}

/// The agent attached after the first call: frames are found at the next record start, and
/// every field stream 1 inserted into the dynamic tables (`:authority`, `content-type`,
/// `user-agent`, the Unary `:path`, `grpc-status: 0`...) is unrecovered, never guessed.
#[test]
fn joining_the_grpc_connection_after_its_first_call() {
    let steps = load("h2_grpc_python");
    // Frame boundaries right after stream 1 ended on each side (see `record/h2_frames.py`).
    let from = [370u64, 240];
    let mut off = [0u64; 2];
    let mut later = Vec::new();
    for step in &steps {
        match step {
            Step::Data(side, b) => {
                let i = *side as usize;
                let start = off[i];
                off[i] += b.len() as u64;
                if off[i] > from[i] {
                    let skip = from[i].saturating_sub(start) as usize;
                    later.push(Step::Data(*side, b[skip..].to_vec()));
                }
            }
            other => later.push(other.clone()),
        }
    }
    let mut conn = H2Conn::attach(Limits::default());
    let events = h2common::feed(&mut conn, &later, from, |_| Vec::new());
    assert_eq!(
        render_all(&events),
        [
            "X 3 POST - 200 req[417-469 b14] resp[270-352 b0] - u7?",
            "X 5 POST /sonde.fixture.Echo/ServerStream 200 req[483-557 b10] resp[366-476 b34] - u8",
            "X 7 POST /sonde.fixture.Echo/ClientStream 200 req[558-716 b32] resp[477-534 b12] - u8",
            "X 9 POST /sonde.fixture.Echo/Bidi 200 req[717-866 b27] resp[591-711 b27] - u8",
            "X 11 POST /sonde.fixture.Echo/Nope 200 req[927-1004 b8] resp[712-770 b0] - u6",
            "X 13 POST - - req[1018-1086 b11] resp- stream_reset u6? Rrequest:CANCEL",
            "X 15 POST - 200 req[1117-1187 b12] resp[927-1000 b12] - u9?",
        ]
    );
    let xs = exchanges(&events);
    // Same offsets as the full run: the spans would be timed the same.
    let full = run(&steps);
    let full_x = exchanges(&full);
    for x in &xs {
        let f = full_x.iter().find(|f| f.stream_id == x.stream_id).unwrap();
        assert_eq!(
            x.request_extent.map(|e| (e.first, e.last)),
            f.request_extent.map(|e| (e.first, e.last))
        );
    }
    let s3 = xs[0].request.as_ref().unwrap();
    assert_eq!((s3.path.as_deref(), s3.authority.as_deref()), (None, None));
    assert!(s3.pseudo_unknown());
    // gRPC is not recognised without its content-type; the fields that were literals are there.
    assert!(GrpcCall::from_exchange(xs[0]).is_none());
    let resp3 = &xs[0].response.as_ref().unwrap().headers;
    assert_eq!(resp3.get_str("grpc-status"), Some("5"));
    assert_eq!(
        resp3.get_str("grpc-message"),
        Some("item \"missing\" not found: caf%C3%A9 100%25")
    );
    // `grpc-status: 0` in the trailers refers to the table: unknown, not absent.
    let t5 = xs[1].response_trailers.as_ref().unwrap();
    assert_eq!((t5.get("grpc-status"), t5.unrecovered_count()), (None, 1));
    assert_eq!(conn.stats().unrecovered_fields, 52);
}
