//! One compact line per HTTP/1 event, for tests: the crate's unit tests and, through
//! `#[path]`, its integration tests (`tests/common`) read and write the same format.
//!
//! ```text
//! X GET /a 200 req[0-31 b0] resp[0-39 b2] 1xx[] -      exchange; extents: first-last, body
//!   flags after the body length: c chunked, u<n> uncaptured bytes, ! not complete
//! E request desync @12                                  error: side, label, offset
//! S upgrade(websocket) req@77 resp@129                  stopped
//! ```

use sonde_protocol::http1::{Extent, Http1Event, Incomplete, StopReason};

/// The line of one event.
pub fn render(ev: &Http1Event) -> String {
    match ev {
        Http1Event::Exchange(x) => {
            let status = x.status().map_or("-".to_string(), |s| s.to_string());
            let resp = x.response_extent.as_ref().map_or("-".to_string(), extent);
            let interim: Vec<String> = x
                .interim
                .iter()
                .map(|i| format!("{}@{}-{}", i.status, i.first, i.last))
                .collect();
            let inc = x.incomplete.map_or("-", Incomplete::as_str);
            format!(
                "X {} {} {status} req{} resp{resp} 1xx[{}] {inc}",
                x.request.method,
                x.request.target,
                extent(&x.request_extent),
                interim.join(" ")
            )
        }
        Http1Event::Error(e) => format!("E {} {} @{}", e.side, e.kind.as_str(), e.offset),
        Http1Event::Stopped {
            reason,
            request_offset,
            response_offset,
        } => {
            let why = match reason {
                StopReason::Upgrade { protocol } => {
                    format!("upgrade({})", protocol.as_deref().unwrap_or(""))
                }
                StopReason::Connect => "connect".to_string(),
            };
            let req = request_offset.map_or("-".to_string(), |o| o.to_string());
            format!("S {why} req@{req} resp@{response_offset}")
        }
    }
}

fn extent(e: &Extent) -> String {
    let mut flags = String::new();
    if e.chunked {
        flags.push('c');
    }
    if e.uncaptured > 0 {
        flags.push_str(&format!("u{}", e.uncaptured));
    }
    if !e.complete {
        flags.push('!');
    }
    format!("[{}-{} b{}{flags}]", e.first, e.last, e.body_len)
}
