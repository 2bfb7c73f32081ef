//! The HPACK indexing tables (RFC 7541 §2.3), and what an observer that may have missed some
//! of the encoder's inserts can still know about the dynamic one.
//!
//! ```text
//! <----------  Index Address Space ---------->
//! <-- Static  Table -->  <-- Dynamic Table -->
//! +---+-----------+---+  +---+-----------+---+
//! | 1 |    ...    | 61|  |62 |    ...    |62+k|     62 is the newest entry; an insert shifts
//! +---+-----------+---+  +---+-----------+---+     every other entry up by one, evictions
//!                        ^                   |     take the oldest (highest index)
//!                        |                   V
//!                 Insertion Point      Dropping Point
//! ```
//!
//! # What can be trusted
//!
//! Dynamic index `62 + k` names *the entry inserted `k` inserts ago*, whatever the table held
//! before it and whatever was evicted since: evictions only ever remove the oldest entries, so
//! they never move the others, and once an entry is evicted every older one is gone too, so the
//! encoder can no longer send its index. Hence the rule this table implements:
//!
//! - it keeps the entries it *saw inserted*, newest first ([`Table::get`] answers from them);
//! - the moment an insert may have been missed (a header block cut by a capture gap, skipped
//!   over a limit, undecodable, or never seen because the observer attached mid-connection),
//!   every kept entry may have shifted by an unknown amount, so [`Table::forget`] drops them
//!   all; a reference past the kept entries is then [`Lookup::Unknown`], never a guess;
//! - inserts seen after that are trusted again at once, from index 62 up, because indices count
//!   from the newest entry: nothing about the unknown older entries changes their position;
//! - a table size update to 0 empties the encoder's table, so from there the table is
//!   *complete* again, and a reference past its entries is a real error ([`Lookup::Invalid`]).
//!
//! An entry whose name or value was not kept (an unknown name index, a string over the
//! decoder's limit) is inserted as an opaque placeholder so that later indices stay right;
//! references to it are unknown too. Whether the kept entries match the encoder's sizes only
//! matters while complete: an incomplete table may keep entries the encoder already evicted
//! (harmless, as shown above) and is bounded by the decoder's memory cap instead.

use std::collections::VecDeque;

/// RFC 7541 §4.1: an entry's size is its name and value lengths plus 32.
pub const ENTRY_OVERHEAD: usize = 32;

/// The initial dynamic table size (the default of SETTINGS_HEADER_TABLE_SIZE).
pub const DEFAULT_TABLE_SIZE: usize = 4096;

/// The static table, RFC 7541 Appendix A: index `i` is `STATIC[i - 1]`.
pub const STATIC: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// What an index refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup<'a> {
    /// A field whose name and value are known.
    Field {
        /// The field name.
        name: &'a [u8],
        /// The field value.
        value: &'a [u8],
    },
    /// An entry that exists (or may exist) but is not known: inserted before the observer was
    /// in sync, or kept only as a placeholder.
    Unknown,
    /// No such entry: 0, or past the end of a complete table.
    Invalid,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Entry {
    /// `field` is the name followed by the value.
    Known { field: Box<[u8]>, name_len: usize },
    /// Inserted, content not kept; `size` is its RFC size (a guess when the name was unknown).
    Opaque { size: usize },
}

impl Entry {
    fn size(&self) -> usize {
        match self {
            Self::Known { field, .. } => field.len() + ENTRY_OVERHEAD,
            Self::Opaque { size } => *size,
        }
    }
}

/// The dynamic table of one direction's decoder, as far as it is known.
#[derive(Clone, Debug)]
pub struct Table {
    /// Newest first: `entries[k]` has index `62 + k`.
    entries: VecDeque<Entry>,
    /// Sum of the RFC sizes of `entries`.
    size: usize,
    /// The encoder's maximum size, from its last size update (initially 4096).
    max_size: usize,
    /// The most this table ever holds, whatever `max_size` says.
    cap: usize,
    /// The decoding peer's SETTINGS_HEADER_TABLE_SIZE, when known: a conforming encoder never
    /// uses more, so neither does this table.
    ceiling: usize,
    /// `entries` is the encoder's whole table.
    complete: bool,
    /// Whether a size update was seen since the table became incomplete (then `max_size` is
    /// exact again).
    max_known: bool,
}

impl Table {
    /// An empty table at the start of a connection: complete, maximum size 4096. `cap` bounds
    /// the bytes it holds (as RFC sizes).
    pub fn new(cap: usize) -> Self {
        Self {
            entries: VecDeque::new(),
            size: 0,
            max_size: DEFAULT_TABLE_SIZE,
            cap,
            ceiling: usize::MAX,
            complete: true,
            max_known: true,
        }
    }

    /// The table of a connection joined in the middle: nothing known.
    pub fn unknown(cap: usize) -> Self {
        let mut t = Self::new(cap);
        t.forget();
        t
    }

    /// Entries known (complete or not).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// No entries known.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Sum of the known entries' sizes (RFC 7541 §4.1).
    pub fn size(&self) -> usize {
        self.size
    }

    /// Heap bytes held: the entry slots, and the RFC sizes of the entries (name + value + 32:
    /// the 32 stands for each entry's allocation; a placeholder holds nothing but is counted
    /// the same, an overestimate bounded by the table's cap).
    pub(crate) fn heap_bytes(&self) -> usize {
        self.entries.capacity() * std::mem::size_of::<Entry>() + self.size
    }

    /// The encoder's maximum table size as last signalled.
    pub fn max_size(&self) -> usize {
        self.max_size
    }

    /// The known entries are the encoder's whole table.
    pub fn is_complete(&self) -> bool {
        self.complete
    }

    /// What index `index` (1-based, static then dynamic) refers to.
    pub fn get(&self, index: u32) -> Lookup<'_> {
        let Some(i) = (index as usize).checked_sub(1) else {
            return Lookup::Invalid;
        };
        if let Some((name, value)) = STATIC.get(i) {
            return Lookup::Field {
                name: name.as_bytes(),
                value: value.as_bytes(),
            };
        }
        match self.entries.get(i - STATIC.len()) {
            Some(Entry::Known { field, name_len }) => {
                let (name, value) = field.split_at(*name_len);
                Lookup::Field { name, value }
            }
            Some(Entry::Opaque { .. }) => Lookup::Unknown,
            None if self.complete => Lookup::Invalid,
            None => Lookup::Unknown,
        }
    }

    /// Inserts a known field (literal with incremental indexing).
    pub fn insert(&mut self, name: &[u8], value: &[u8]) {
        let mut field = Vec::with_capacity(name.len() + value.len());
        field.extend_from_slice(name);
        field.extend_from_slice(value);
        self.push(Entry::Known {
            field: field.into_boxed_slice(),
            name_len: name.len(),
        });
    }

    /// Inserts a placeholder of `size` bytes (RFC size) whose content is not kept.
    pub fn insert_opaque(&mut self, size: usize) {
        self.push(Entry::Opaque { size });
    }

    fn push(&mut self, entry: Entry) {
        let size = entry.size();
        let limit = self.limit();
        if size > limit {
            // RFC 7541 §4.4: an entry larger than the table empties it and is not added. Over
            // our cap only (the encoder may have kept it), the result is no longer complete.
            if size <= self.max_size && self.complete {
                self.complete = false;
            }
            self.clear_entries();
            return;
        }
        self.evict_to(limit - size);
        self.size += size;
        self.entries.push_front(entry);
    }

    /// A dynamic table size update (RFC 7541 §6.3). Size 0 empties the encoder's table, so the
    /// table is complete from here on.
    pub fn set_max_size(&mut self, max_size: usize) {
        self.max_size = max_size;
        self.max_known = true;
        if max_size == 0 {
            self.clear_entries();
            self.complete = true;
        }
        let limit = self.limit();
        self.evict_to(limit);
    }

    /// The decoding peer's advertised SETTINGS_HEADER_TABLE_SIZE (`None`: not known); entries
    /// over it are evicted now and never kept.
    pub fn set_ceiling(&mut self, ceiling: Option<usize>) {
        self.ceiling = ceiling.unwrap_or(usize::MAX);
        let limit = self.limit();
        self.evict_to(limit);
    }

    /// An insert may have been missed: keep nothing, trust only what comes next.
    pub fn forget(&mut self) {
        self.clear_entries();
        self.complete = false;
        self.max_known = false;
    }

    /// Where eviction starts: the encoder's maximum when it is known, else only our cap
    /// (keeping too much is harmless, keeping too little costs recoverable fields).
    fn limit(&self) -> usize {
        let limit = if self.complete || self.max_known {
            self.max_size.min(self.cap)
        } else {
            self.cap
        };
        limit.min(self.ceiling)
    }

    fn evict_to(&mut self, limit: usize) {
        while self.size > limit {
            let Some(old) = self.entries.pop_back() else {
                self.size = 0;
                break;
            };
            self.size -= old.size();
            if self.max_size.min(self.cap) < self.max_size {
                // Evicted for our cap, not by the encoder's rules: it may still be referenced.
                self.complete = false;
            }
        }
    }

    fn clear_entries(&mut self) {
        self.entries.clear();
        self.size = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(t: &Table, i: u32) -> Option<(String, String)> {
        match t.get(i) {
            Lookup::Field { name, value } => Some((
                String::from_utf8(name.to_vec()).unwrap(),
                String::from_utf8(value.to_vec()).unwrap(),
            )),
            _ => None,
        }
    }

    fn pair(n: &str, v: &str) -> Option<(String, String)> {
        Some((n.to_string(), v.to_string()))
    }

    #[test]
    fn static_table_edges() {
        let t = Table::new(4096);
        assert_eq!(t.get(0), Lookup::Invalid);
        assert_eq!(field(&t, 1), pair(":authority", ""));
        assert_eq!(field(&t, 2), pair(":method", "GET"));
        assert_eq!(field(&t, 8), pair(":status", "200"));
        assert_eq!(field(&t, 61), pair("www-authenticate", ""));
        assert_eq!(t.get(62), Lookup::Invalid, "complete and empty");
        assert_eq!(Table::unknown(4096).get(62), Lookup::Unknown);
        assert_eq!(Table::unknown(4096).get(u32::MAX), Lookup::Unknown);
    }

    #[test]
    fn inserts_shift_and_evict_oldest() {
        let mut t = Table::new(4096);
        t.set_max_size(100);
        t.insert(b"a", b"1"); // 34
        t.insert(b"b", b"2"); // 68
        assert_eq!(field(&t, 62), pair("b", "2"));
        assert_eq!(field(&t, 63), pair("a", "1"));
        t.insert(b"c", b"3"); // 102 > 100: a goes
        assert_eq!((t.len(), t.size()), (2, 68));
        assert_eq!(field(&t, 62), pair("c", "3"));
        assert_eq!(field(&t, 63), pair("b", "2"));
        assert_eq!(t.get(64), Lookup::Invalid);
        // Larger than the table: empties it, not added.
        t.insert(b"big", &[b'x'; 80]);
        assert_eq!((t.len(), t.size(), t.is_complete()), (0, 0, true));
        // Shrinking evicts.
        t.insert(b"d", b"4");
        t.insert(b"e", b"5");
        t.set_max_size(40);
        assert_eq!(t.len(), 1);
        assert_eq!(field(&t, 62), pair("e", "5"));
    }

    #[test]
    fn forgetting_then_trusting_new_inserts() {
        let mut t = Table::new(4096);
        t.insert(b"old", b"x");
        t.forget();
        assert_eq!(t.get(62), Lookup::Unknown);
        t.insert(b"new", b"y");
        assert_eq!(field(&t, 62), pair("new", "y"));
        // Whatever came before is unknown, not invalid and not "old".
        assert_eq!(t.get(63), Lookup::Unknown);
        assert!(!t.is_complete());
        // A size update to 0 empties the encoder's table: complete again.
        t.set_max_size(0);
        t.set_max_size(4096);
        assert!(t.is_complete());
        assert_eq!(t.get(62), Lookup::Invalid);
        t.insert(b"z", b"1");
        assert_eq!(field(&t, 62), pair("z", "1"));
        assert_eq!(t.get(63), Lookup::Invalid);
    }

    #[test]
    fn placeholders_keep_positions() {
        let mut t = Table::new(4096);
        t.insert(b"a", b"1");
        t.insert_opaque(40);
        t.insert(b"c", b"3");
        assert_eq!(field(&t, 62), pair("c", "3"));
        assert_eq!(t.get(63), Lookup::Unknown);
        assert_eq!(field(&t, 64), pair("a", "1"));
        assert_eq!(t.size(), 34 + 40 + 34);
    }

    #[test]
    fn cap_bounds_memory_and_costs_completeness() {
        let mut t = Table::new(100);
        t.set_max_size(1000);
        for i in 0..10u8 {
            t.insert(b"k", &[b'0' + i]);
        }
        assert!(t.size() <= 100);
        assert_eq!(t.len(), 2);
        assert!(
            !t.is_complete(),
            "evicted for the cap: older entries may be referenced"
        );
        assert_eq!(field(&t, 62), pair("k", "9"));
        assert_eq!(t.get(64), Lookup::Unknown);
        // An unknown table is bounded by the cap only.
        let mut u = Table::unknown(100);
        for _ in 0..10 {
            u.insert(b"k", b"v");
        }
        assert!(u.size() <= 100);
    }
}
