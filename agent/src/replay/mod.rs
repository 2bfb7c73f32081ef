//! `sonde replay FILE`: a pcap or pcapng capture through the same pipeline as live traffic,
//! without root. TCP streams are reassembled into the records the kernel would have written
//! ([`tcp`]), then go through connection tracking, protocol parsing and span building.
//!
//! Timing comes from packet timestamps (wall clock), so a span's duration is what the network
//! saw, not what the processes saw. Every view gets the same resource: `service.name` is
//! `replay`; there is no process to describe.

pub mod pcap;
pub mod tcp;

use std::{path::Path, sync::Arc};

use sonde_model::{KeyValue, Resource};

pub use self::tcp::Sides;
use self::{
    pcap::{PcapFileError, PcapStats, for_each_segment},
    tcp::{Reassembler, ReassemblyStats},
};
use crate::{
    clock::WallClock,
    conn::{ConnStats, ConnTracker, Limits},
    pipeline::{Driver, NoKernel},
    span::{FixedResource, HttpConfig, SpanSink, SpanStage, SpanStats},
};

#[derive(Clone, Debug, Default)]
pub struct ReplaySummary {
    pub pcap: PcapStats,
    pub tcp: ReassemblyStats,
    pub conns: ConnStats,
    pub spans: SpanStats,
}

/// The resource of replayed spans.
pub fn replay_resource(path: &Path) -> Arc<Resource> {
    Arc::new(Resource {
        attributes: vec![
            KeyValue::new("service.name", "replay"),
            KeyValue::new("sonde.replay.file", path.display().to_string()),
            KeyValue::new("telemetry.sdk.name", "sonde"),
            KeyValue::new("telemetry.sdk.version", env!("CARGO_PKG_VERSION")),
        ],
    })
}

/// Replays `path`, handing spans to `out`.
pub fn replay<O: SpanSink>(
    path: &Path,
    sides: Sides,
    config: HttpConfig,
    out: O,
) -> Result<(O, ReplaySummary), PcapFileError> {
    let stage = SpanStage::new(
        config,
        WallClock::with_offset(0),
        FixedResource(replay_resource(path)),
        out,
    );
    let mut driver = Driver::new(ConnTracker::without_role_resolver(Limits::default()), stage);
    let mut reassembler = Reassembler::new(sides);
    let mut events = Vec::new();
    let mut last_ts = 0;
    let pcap = for_each_segment(path, |seg| {
        reassembler.segment(seg, &mut events);
        for ev in events.drain(..) {
            driver.event(ev, &mut NoKernel);
        }
        if seg.ts_ns > last_ts {
            last_ts = seg.ts_ns;
            driver.tick(last_ts, &mut NoKernel);
        }
    })?;
    reassembler.finish(last_ts, &mut events);
    for ev in events.drain(..) {
        driver.event(ev, &mut NoKernel);
    }
    driver.shutdown(last_ts);
    let summary = ReplaySummary {
        pcap,
        tcp: reassembler.stats.clone(),
        conns: driver.tracker.stats.clone(),
        spans: driver.sink.stats().clone(),
    };
    Ok((driver.sink.into_out(), summary))
}
