//! Kernel timestamps (`bpf_ktime_get_ns`, CLOCK_MONOTONIC) to wall-clock time.
//!
//! The offset between CLOCK_REALTIME and CLOCK_MONOTONIC is measured by reading both clocks
//! back to back (keeping the tightest of a few tries), and measured again on `refresh` so
//! that NTP adjustments of the wall clock are followed.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid pointer to a timespec.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

/// Now on the kernel programs' clock.
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC) as u64
}

#[derive(Clone, Copy, Debug)]
pub struct WallClock {
    /// realtime - monotonic, in ns.
    offset_ns: i128,
}

impl WallClock {
    pub fn measure() -> Self {
        let mut best: Option<(i128, i128)> = None;
        for _ in 0..5 {
            let m1 = clock_ns(libc::CLOCK_MONOTONIC);
            let r = clock_ns(libc::CLOCK_REALTIME);
            let m2 = clock_ns(libc::CLOCK_MONOTONIC);
            let width = m2 - m1;
            let offset = r - (m1 + width / 2);
            if best.is_none_or(|(w, _)| width < w) {
                best = Some((width, offset));
            }
        }
        Self {
            offset_ns: best.map_or(0, |(_, o)| o),
        }
    }

    /// A fixed offset, for replays and tests.
    pub fn with_offset(offset_ns: i128) -> Self {
        Self { offset_ns }
    }

    pub fn refresh(&mut self) {
        *self = Self::measure();
    }

    /// Unix time in ns of a monotonic timestamp.
    pub fn unix_ns(&self, mono_ns: u64) -> u64 {
        (mono_ns as i128 + self.offset_ns).max(0) as u64
    }

    pub fn system_time(&self, mono_ns: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(self.unix_ns(mono_ns))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_monotonic_to_wall_time() {
        let c = WallClock::measure();
        let before = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        let wall = c.unix_ns(monotonic_ns());
        let after = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        // Within a millisecond of the wall clock read around it.
        assert!(
            wall + 1_000_000 >= before && wall <= after + 1_000_000,
            "{before} {wall} {after}"
        );
        assert_eq!(WallClock::with_offset(10).unix_ns(5), 15);
        assert_eq!(WallClock::with_offset(-10).unix_ns(5), 0);
    }
}
