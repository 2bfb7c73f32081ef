//! The live event source: the kernel's ring buffer, read asynchronously.
//!
//! The kernel programs wake the agent only when a batch of data is pending
//! (`WAKEUP_BYTES`); a periodic poll collects whatever arrived in between, so the latency of
//! an event is at most the poll interval and a busy host pays one wakeup per batch.

use std::time::Duration;

use aya::maps::{MapData, RingBuf};
use tokio::{
    io::{Interest, unix::AsyncFd},
    time::MissedTickBehavior,
};

use super::{DecodeErrors, Event, EventSource, decode};

pub struct RingBufSource {
    fd: AsyncFd<RingBuf<MapData>>,
    interval: tokio::time::Interval,
    max_batch: usize,
    /// Records read so far (decoded or not).
    pub records: u64,
    /// Nanoseconds spent draining and decoding.
    pub decode_ns: u64,
}

impl RingBufSource {
    /// `poll` is the longest an event waits in the ring buffer when the host is quiet.
    pub fn new(ring: RingBuf<MapData>, poll: Duration) -> std::io::Result<Self> {
        let mut interval = tokio::time::interval(poll);
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // SAFETY: the ring buffer owns its map fd for as long as it lives, and the AsyncFd owns
        // the ring buffer: the fd stays open and names the same map for the AsyncFd's lifetime.
        let fd = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
            .map_err(std::io::Error::from)?;
        Ok(Self {
            fd,
            interval,
            max_batch: 4096,
            records: 0,
            decode_ns: 0,
        })
    }

    fn drain(&mut self, out: &mut Vec<Event>, errors: &mut DecodeErrors) -> usize {
        let started = std::time::Instant::now();
        let ring = self.fd.get_mut();
        let mut n = 0;
        while n < self.max_batch {
            let Some(item) = ring.next() else {
                break;
            };
            n += 1;
            match decode(&item) {
                Ok(ev) => out.push(ev),
                Err(e) => errors.record(&e),
            }
        }
        self.records += n as u64;
        self.decode_ns += started.elapsed().as_nanos() as u64;
        n
    }
}

impl EventSource for RingBufSource {
    async fn next_batch(
        &mut self,
        out: &mut Vec<Event>,
        errors: &mut DecodeErrors,
    ) -> std::io::Result<bool> {
        loop {
            if self.drain(out, errors) > 0 {
                return Ok(true);
            }
            tokio::select! {
                guard = self.fd.readable_mut() => guard?.clear_ready(),
                _ = self.interval.tick() => {}
            }
        }
    }
}
