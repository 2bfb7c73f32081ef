//! Where the capture thread's time goes, stage by stage, cheaply enough to stay on.
//!
//! One batch of events in [`SAMPLE_EVERY`] is timed: while it is handled, every stage
//! boundary (a [`Guard`] from [`enter`]) reads the monotonic clock and charges the time since
//! the previous boundary to the stage that was running, so each stage gets its own time
//! without the stages it calls. The other batches pay one thread-local flag check per
//! boundary. Draining and decoding the ring buffer and the periodic tick are timed on every
//! batch and tick (one clock pair each). The times are wall-clock: a thread preempted inside a
//! stage charges the wait to it, so on a host short of CPU the split is approximate (the
//! benchmark divides the capture thread's real CPU time by it).

use std::{cell::Cell, time::Instant};

/// One batch in this many is timed stage by stage.
pub const SAMPLE_EVERY: u64 = 32;

/// A stage of the per-event path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Outside every stage (not charged).
    None,
    /// Connection tracking: reorder windows, reassembly, gaps.
    Conn,
    /// Protocol detection and parsing.
    Parse,
    /// Building a span from an exchange: ids, links, timing, attributes.
    Span,
    /// What the span stage hands spans to: sampling, privacy, span metrics, the trace view,
    /// the export queue.
    Policy,
}

impl Stage {
    /// The stages charged, in pipeline order.
    pub const CHARGED: [Self; 4] = [Self::Conn, Self::Parse, Self::Span, Self::Policy];

    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Conn => "conn",
            Self::Parse => "parse",
            Self::Span => "span",
            Self::Policy => "policy",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

const N: usize = 5;

thread_local! {
    static ON: Cell<bool> = const { Cell::new(false) };
    static CURRENT: Cell<Stage> = const { Cell::new(Stage::None) };
    static SINCE: Cell<Option<Instant>> = const { Cell::new(None) };
    static SPENT: Cell<[u64; N]> = const { Cell::new([0; N]) };
}

/// Charges the time since the last boundary to the running stage, and switches to `next`.
fn switch(next: Stage) {
    let now = Instant::now();
    if let Some(since) = SINCE.get() {
        let mut spent = SPENT.get();
        spent[CURRENT.get().index()] += now.duration_since(since).as_nanos() as u64;
        SPENT.set(spent);
    }
    SINCE.set(Some(now));
    CURRENT.set(next);
}

/// Marks the start of a stage until the guard drops (then the enclosing stage resumes).
#[inline]
pub fn enter(stage: Stage) -> Guard {
    if !ON.get() {
        return Guard(None);
    }
    let previous = CURRENT.get();
    switch(stage);
    Guard(Some(previous))
}

#[must_use]
pub struct Guard(Option<Stage>);

impl Drop for Guard {
    #[inline]
    fn drop(&mut self) {
        if let Some(previous) = self.0 {
            switch(previous);
        }
    }
}

/// Totals of the capture thread, published with its counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StageTimes {
    pub batches: u64,
    pub events: u64,
    pub sampled_batches: u64,
    pub sampled_events: u64,
    /// Nanoseconds per charged stage ([`Stage::CHARGED`] order) in the sampled batches.
    pub sampled_ns: [u64; 4],
    /// Nanoseconds in ticks (every tick).
    pub tick_ns: u64,
}

impl StageTimes {
    /// Starts a batch of `events` events (starting with `first`): whether it is timed.
    pub(crate) fn begin(&mut self, events: usize, first: Stage) -> bool {
        self.batches += 1;
        self.events += events as u64;
        let sampled = events > 0 && self.batches % SAMPLE_EVERY == 1;
        if sampled {
            self.sampled_batches += 1;
            self.sampled_events += events as u64;
            SPENT.set([0; N]);
            SINCE.set(None);
            ON.set(true);
            switch(first);
        }
        sampled
    }

    /// Ends a timed batch: its stage times join the totals.
    pub(crate) fn end(&mut self) {
        switch(Stage::None);
        ON.set(false);
        SINCE.set(None);
        let spent = SPENT.replace([0; N]);
        for (i, s) in Stage::CHARGED.iter().enumerate() {
            self.sampled_ns[i] += spent[s.index()];
        }
    }

    /// Estimated nanoseconds per charged stage over all events: the sampled batches' time per
    /// event times the events seen.
    pub fn estimated_ns(&self) -> [u64; 4] {
        if self.sampled_events == 0 {
            return [0; 4];
        }
        self.sampled_ns
            .map(|ns| (ns as f64 / self.sampled_events as f64 * self.events as f64) as u64)
    }
}

#[cfg(test)]
mod tests {
    use std::{thread, time::Duration};

    use super::*;

    #[test]
    fn nested_stages_are_charged_their_own_time() {
        let mut t = StageTimes::default();
        assert!(t.begin(3, Stage::Conn));
        thread::sleep(Duration::from_millis(20));
        {
            let _p = enter(Stage::Parse);
            thread::sleep(Duration::from_millis(30));
            {
                let _s = enter(Stage::Span);
                thread::sleep(Duration::from_millis(10));
                let _o = enter(Stage::Policy);
                thread::sleep(Duration::from_millis(5));
            }
            thread::sleep(Duration::from_millis(30));
        }
        t.end();
        let ms = t.sampled_ns.map(|ns| ns / 1_000_000);
        // conn 20, parse 30 + 30, span 10, policy 5 (sleeps last at least that long).
        assert!((20..40).contains(&ms[0]), "{ms:?}");
        assert!((60..90).contains(&ms[1]), "{ms:?}");
        assert!((10..25).contains(&ms[2]), "{ms:?}");
        assert!((5..20).contains(&ms[3]), "{ms:?}");
        assert_eq!((t.batches, t.events, t.sampled_events), (1, 3, 3));
    }

    #[test]
    fn one_batch_in_32_is_timed_and_the_rest_cost_a_flag() {
        let mut t = StageTimes::default();
        let mut timed = 0;
        for _ in 0..64 {
            if t.begin(10, Stage::Conn) {
                timed += 1;
                t.end();
            } else {
                // Not timed: a guard charges nothing.
                let _g = enter(Stage::Parse);
                thread::sleep(Duration::from_millis(2));
            }
        }
        assert_eq!(timed, 2);
        assert_eq!((t.batches, t.events, t.sampled_events), (64, 640, 20));
        assert!(t.sampled_ns[1] < 1_000_000, "{:?}", t.sampled_ns);
        t.sampled_ns = [100, 200, 300, 400];
        assert_eq!(t.estimated_ns(), [3200, 6400, 9600, 12800]);
    }
}
