//! Real traffic, recorded once from real clients and servers on 127.0.0.1 (see
//! `fixtures/README.md`): each fixture must parse into exactly these exchanges. The offsets were
//! cross-checked with an independent script when the fixtures were recorded.

mod common;

use common::{load, render_all, run};
use sonde_protocol::http1::{Http1Event, StopReason};

fn exchanges(name: &str) -> Vec<Http1Event> {
    run(&load(name))
}

fn check(name: &str, want: &[&str]) {
    assert_eq!(render_all(&exchanges(name)), want, "{name}");
}

#[test]
fn curl_keep_alive_against_nginx() {
    check(
        "curl_keepalive_nginx",
        &[
            "X GET /index.html 200 req[0-88 b0] resp[0-299 b64] 1xx[] -",
            "X GET /missing 404 req[89-174 b0] resp[300-607 b153] 1xx[] -",
            "X GET /small.txt 200 req[175-262 b0] resp[608-848 b6] 1xx[] -",
        ],
    );
    let Http1Event::Exchange(x) = &exchanges("curl_keepalive_nginx")[0] else {
        panic!("not an exchange")
    };
    assert_eq!(x.request.headers.get_str("user-agent"), Some("curl/7.88.1"));
    assert_eq!(x.request.headers.get_str("HOST"), Some("127.0.0.1:19000"));
    let resp = x.response.as_ref().expect("response");
    assert_eq!(resp.headers.get_str("server"), Some("nginx/1.22.1"));
    assert_eq!(resp.headers.get_str("content-length"), Some("64"));
    assert!(resp.headers.has_token("connection", "keep-alive"));
}

#[test]
fn curl_head_against_nginx_has_no_bodies() {
    check(
        "curl_head_nginx",
        &[
            "X HEAD /index.html 200 req[0-89 b0] resp[0-235 b0] 1xx[] -",
            "X HEAD /missing 404 req[90-176 b0] resp[236-390 b0] 1xx[] -",
        ],
    );
}

#[test]
fn nginx_304_204_and_500() {
    check(
        "curl_statuses_nginx",
        &[
            "X GET /index.html 304 req[0-138 b0] resp[0-178 b0] 1xx[] -",
            "X GET /empty 204 req[139-222 b0] resp[179-288 b0] 1xx[] -",
            "X GET /fail 500 req[223-305 b0] resp[289-459 b5] 1xx[] -",
        ],
    );
}

#[test]
fn pipelined_requests_against_nginx() {
    // All three requests are in the first record.
    check(
        "pipelined_nginx",
        &[
            "X GET /index.html 200 req[0-75 b0] resp[0-299 b64] 1xx[] -",
            "X GET /small.txt 200 req[76-150 b0] resp[300-540 b6] 1xx[] -",
            "X GET /missing 404 req[151-242 b0] resp[541-843 b153] 1xx[] -",
        ],
    );
}

#[test]
fn python_http10_response_ends_at_close() {
    check(
        "urllib_http10_close_python",
        &["X GET /legacy 200 req[0-124 b0] resp[0-182 b66] 1xx[] -"],
    );
    let Http1Event::Exchange(x) = &exchanges("urllib_http10_close_python")[0] else {
        panic!("not an exchange")
    };
    let resp = x.response.as_ref().expect("response");
    assert_eq!((resp.minor_version, resp.reason.as_str()), (0, "OK"));
    assert_eq!(resp.headers.get("content-length"), None);
}

#[test]
fn python_requests_against_go_statuses() {
    check(
        "requests_statuses_go",
        &[
            "X GET /hello 200 req[0-150 b0] resp[0-130 b14] 1xx[] -",
            "X GET /missing 404 req[151-303 b0] resp[131-306 b19] 1xx[] -",
            "X GET /error 500 req[304-454 b0] resp[307-479 b5] 1xx[] -",
            "X GET /nocontent 204 req[455-609 b0] resp[480-543 b0] 1xx[] -",
            "X GET /notmodified 304 req[610-766 b0] resp[544-621 b0] 1xx[] -",
            "X GET /stream 200 req[767-918 b0] resp[622-787 b21c] 1xx[] -",
        ],
    );
}

#[test]
fn node_chunked_response_with_trailers() {
    check(
        "curl_chunked_trailers_node",
        &["X GET /chunked 200 req[0-85 b0] resp[0-237 b20c] 1xx[] -"],
    );
}

#[test]
fn curl_posts_with_length_and_chunked() {
    check(
        "curl_post_node",
        &[
            "X POST /echo 200 req[0-577 b424] resp[0-201 b47] 1xx[] -",
            "X POST /echo 200 req[578-1174 b424c] resp[202-403 b47] 1xx[] -",
        ],
    );
}

#[test]
fn node_client_chunked_request() {
    check(
        "node_client_chunked_node",
        &[
            "X POST /echo 200 req[0-162 b24c] resp[0-200 b46] 1xx[] -",
            "X GET /chunked 200 req[163-234 b0] resp[201-438 b20c] 1xx[] -",
        ],
    );
}

#[test]
fn curl_expect_100_continue() {
    check(
        "curl_expect_100_node",
        &["X PUT /upload 201 req[0-2832 b2704] resp[25-233 b49] 1xx[100@0-24] -"],
    );
    let Http1Event::Exchange(x) = &exchanges("curl_expect_100_node")[0] else {
        panic!("not an exchange")
    };
    assert_eq!(x.first_response_byte(), Some(0), "the 100 came first");
    assert_eq!(x.request.headers.get_str("expect"), Some("100-continue"));
}

#[test]
fn websocket_upgrade_stops_parsing() {
    let events = exchanges("websocket_upgrade_node");
    assert_eq!(
        render_all(&events),
        [
            "X GET /ws 101 req[0-155 b0] resp[0-128 b0] 1xx[] -",
            "S upgrade(websocket) req@156 resp@129",
        ]
    );
    let Http1Event::Stopped { reason, .. } = &events[1] else {
        panic!("not stopped")
    };
    assert_eq!(
        reason,
        &StopReason::Upgrade {
            protocol: Some("websocket".into())
        }
    );
}

#[test]
fn every_fixture_is_covered_here() {
    let mut names = common::fixture_names();
    names.sort();
    assert_eq!(
        names,
        [
            "curl_chunked_trailers_node",
            "curl_expect_100_node",
            "curl_head_nginx",
            "curl_keepalive_nginx",
            "curl_post_node",
            "curl_statuses_nginx",
            "node_client_chunked_node",
            "pipelined_nginx",
            "requests_statuses_go",
            "urllib_http10_close_python",
            "websocket_upgrade_node",
        ]
    );
}
