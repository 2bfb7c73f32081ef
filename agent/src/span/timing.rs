//! Which syscall moved the byte at a stream offset, and when.
//!
//! Parsers report stream offsets (first request byte, last response byte); spans need times.
//! Each direction keeps the offset ranges of its recent chunks with their syscall timestamps.

use std::collections::VecDeque;

use crate::events::Meta;

/// At most this many chunks are remembered per direction; older ones are forgotten first.
const MAX_ENTRIES: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkTime {
    /// First offset of the chunk.
    pub start: u64,
    /// One past its last offset.
    pub end: u64,
    pub enter_ns: u64,
    pub exit_ns: u64,
    pub tid: u32,
}

#[derive(Debug, Default)]
pub struct TimingIndex {
    entries: VecDeque<ChunkTime>,
}

impl TimingIndex {
    /// Records that `[start, start+len)` was moved by the syscall described by `meta`.
    pub fn record(&mut self, start: u64, len: u64, meta: &Meta) {
        if len == 0 {
            return;
        }
        if self.entries.len() >= MAX_ENTRIES {
            self.entries.pop_front();
        }
        self.entries.push_back(ChunkTime {
            start,
            end: start + len,
            enter_ns: meta.enter_ns,
            exit_ns: meta.exit_ns,
            tid: meta.tid,
        });
    }

    /// The chunk holding `offset`; for an offset inside a gap, the last chunk before it.
    pub fn at(&self, offset: u64) -> Option<ChunkTime> {
        let i = self.entries.partition_point(|e| e.end <= offset);
        match self.entries.get(i) {
            Some(e) if e.start <= offset => Some(*e),
            _ => i.checked_sub(1).and_then(|j| self.entries.get(j)).copied(),
        }
    }

    /// The most recent chunk.
    pub fn last(&self) -> Option<ChunkTime> {
        self.entries.back().copied()
    }

    /// Forgets chunks that end at or before `offset` (no message will ask for them again).
    pub fn forget_before(&mut self, offset: u64) {
        while self.entries.front().is_some_and(|e| e.end <= offset) {
            self.entries.pop_front();
        }
    }

    /// Forgets all but the `n` most recent chunks.
    pub fn keep_last(&mut self, n: usize) {
        while self.entries.len() > n {
            self.entries.pop_front();
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Heap bytes held (what the ring of entries has room for).
    pub fn heap_bytes(&self) -> usize {
        self.entries.capacity() * std::mem::size_of::<ChunkTime>()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(t: u64) -> Meta {
        Meta {
            pid: 1,
            tid: 2,
            cpu: 0,
            enter_ns: t,
            exit_ns: t + 1,
        }
    }

    #[test]
    fn finds_the_chunk_of_an_offset() {
        let mut t = TimingIndex::default();
        t.record(0, 10, &meta(100));
        t.record(10, 5, &meta(200));
        // 15..20 is a gap
        t.record(20, 5, &meta(300));
        assert_eq!(t.at(0).unwrap().enter_ns, 100);
        assert_eq!(t.at(9).unwrap().enter_ns, 100);
        assert_eq!(t.at(10).unwrap().enter_ns, 200);
        assert_eq!(
            t.at(17).unwrap().enter_ns,
            200,
            "inside a gap: the chunk before"
        );
        assert_eq!(t.at(24).unwrap().exit_ns, 301);
        assert_eq!(t.at(99).unwrap().enter_ns, 300);
        t.forget_before(15);
        assert_eq!(t.len(), 1);
        assert_eq!(t.at(0), None);
    }
}
