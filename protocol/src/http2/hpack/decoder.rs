//! The HPACK decoder of one direction (RFC 7541 §6): complete header blocks in, fields out.
//!
//! A block is decoded only once it is complete (HEADERS or PUSH_PROMISE and its CONTINUATION
//! frames), so there is no partial state between calls: a block that ends inside a
//! representation is malformed, not "need more". The connection bounds what it buffers for a
//! block; this decoder bounds what a block decodes to (string length, header list size) and
//! what the dynamic table keeps, so a small block cannot expand into a large allocation.
//!
//! ```text
//! Indexed Header Field (§6.1)                  Literal Header Field (§6.2)
//!   0   1   2   3   4   5   6   7                0   1   2   3   4   5   6   7
//! +---+---+---+---+---+---+---+---+            +---+---+---+---+---+---+---+---+
//! | 1 |        Index (7+)         |            | 0 | 1 |      Index (6+)       |  incremental
//! +---+---------------------------+            +---+---+-----------------------+  indexing
//!                                              | 0 | 0 | 0 | 0 |  Index (4+)   |  without
//! Dynamic Table Size Update (§6.3)             +---+---+---+---+---------------+  indexing
//! +---+---+---+---+---+---+---+---+            | 0 | 0 | 0 | 1 |  Index (4+)   |  never
//! | 0 | 0 | 1 |   Max size (5+)   |            +---+---+---+---+---------------+  indexed
//! +---+---+---+-------------------+            then, if Index is 0, the name as a string,
//!                                              then the value as a string:
//! Integer (§5.1), N-bit prefix                 +---+---------------------------+
//! +---+---+---+-------------------+            | H |     String Length (7+)    |
//! | ? | ? | ? |  2^N-1 (all ones) |            +---+---------------------------+
//! +---+---+---+-------------------+            |  String Data (Length octets)  |
//! | 1 |    Value-(2^N-1) LSB      |            +-------------------------------+
//! +---+---------------------------+            H: Huffman-coded (see `huffman`)
//! | 0 |    Value-(2^N-1) MSB      |
//! +---+---------------------------+
//! ```
//!
//! Fields whose dynamic-table entry is unknown (see `table` for when that is) are reported as
//! [`Unrecovered`], never guessed. A malformed block leaves the table in an unknown state (the
//! rest of its inserts were not seen), so the decoder forgets the table before returning the
//! error.

use super::huffman::{self, HuffmanError};
use super::table::{ENTRY_OVERHEAD, Lookup, Table};
use crate::http2::headers::{Headers, Push, Unrecovered};

/// Bounds of one direction's decoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecoderLimits {
    /// Longest string (name or value, after Huffman decoding) kept; longer ones are skipped,
    /// their field reported unrecovered (default 16 KiB).
    pub max_string_bytes: usize,
    /// Most a block decodes to, as HPACK sizes (name + value + 32 per field); further fields
    /// are decoded for the table's sake but not kept (default 64 KiB).
    pub max_list_bytes: usize,
    /// Most the dynamic table keeps, as HPACK sizes (default 64 KiB).
    pub max_table_bytes: usize,
}

impl Default for DecoderLimits {
    fn default() -> Self {
        Self {
            max_string_bytes: 16 * 1024,
            max_list_bytes: 64 * 1024,
            max_table_bytes: 64 * 1024,
        }
    }
}

/// Why a header block could not be decoded. The fields decoded before it are unreliable and
/// the dynamic table is forgotten.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum DecoderError {
    /// Index 0, or past the end of a dynamic table known to be complete.
    #[error("invalid HPACK index {index}")]
    InvalidIndex {
        /// The index referenced.
        index: u32,
    },
    /// An integer longer than 32 bits.
    #[error("HPACK integer overflows 32 bits")]
    IntegerOverflow,
    /// The block ends inside a representation.
    #[error("header block ends inside a field representation")]
    Truncated,
    /// A Huffman-coded string is invalid.
    #[error("invalid Huffman-coded string")]
    Huffman(#[source] HuffmanError),
    /// A dynamic table size update after the first field of the block (RFC 7541 §4.2).
    #[error("dynamic table size update after a header field")]
    SizeUpdateMisplaced,
    /// A dynamic table size update above the SETTINGS_HEADER_TABLE_SIZE the decoding peer
    /// advertised: a decoding error (RFC 7541 §4.2, §6.3).
    #[error("dynamic table size update to {size} over the advertised limit {limit}")]
    SizeUpdateOverLimit {
        /// The size asked for.
        size: usize,
        /// The largest size the decoding peer advertised.
        limit: usize,
    },
}

impl From<HuffmanError> for DecoderError {
    fn from(e: HuffmanError) -> Self {
        Self::Huffman(e)
    }
}

/// What a block cost that was not fatal.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Strings over `max_string_bytes`: their fields are unrecovered.
    pub too_long: u32,
    /// Fields not kept because the block went over `max_list_bytes`.
    pub over_list_limit: u32,
}

/// The HPACK decoding context of one direction of a connection.
#[derive(Clone, Debug)]
pub struct Decoder {
    table: Table,
    limits: DecoderLimits,
    /// The largest table size the decoding peer allowed (SETTINGS_HEADER_TABLE_SIZE), when
    /// known.
    size_limit: Option<usize>,
    /// Reused for a literal's name and value.
    scratch: Vec<u8>,
}

impl Decoder {
    /// A decoder at the start of a connection: empty, complete table.
    pub fn new(limits: DecoderLimits) -> Self {
        Self {
            table: Table::new(limits.max_table_bytes),
            limits,
            size_limit: None,
            scratch: Vec::new(),
        }
    }

    /// A decoder for a connection joined in the middle: the dynamic table is unknown.
    pub fn unsynced(limits: DecoderLimits) -> Self {
        Self {
            table: Table::unknown(limits.max_table_bytes),
            ..Self::new(limits)
        }
    }

    /// The dynamic table as known.
    pub fn table(&self) -> &Table {
        &self.table
    }

    /// Heap bytes held: the dynamic table and the scratch buffer for literals.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.table.heap_bytes() + self.scratch.capacity()
    }

    /// The largest table size the decoding peer advertised (SETTINGS_HEADER_TABLE_SIZE): the
    /// table never holds more, and a size update above it is
    /// [`DecoderError::SizeUpdateOverLimit`].
    pub fn set_size_limit(&mut self, limit: Option<usize>) {
        self.size_limit = limit;
        self.table.set_ceiling(limit);
    }

    /// A header block of this direction was (or may have been) missed: forget the table.
    pub fn forget(&mut self) {
        self.table.forget();
    }

    /// Decodes one complete header block, appending its fields to `out`. On error the table is
    /// forgotten and `out` marked incomplete.
    pub fn decode(&mut self, block: &[u8], out: &mut Headers) -> Result<Outcome, DecoderError> {
        let mut outcome = Outcome::default();
        let result = self.decode_fields(block, out, &mut outcome);
        if self.scratch.capacity() > 2 * self.limits.max_string_bytes.max(4096) {
            self.scratch = Vec::new();
        }
        match result {
            Ok(()) => Ok(outcome),
            Err(e) => {
                self.table.forget();
                out.mark_incomplete();
                Err(e)
            }
        }
    }

    fn decode_fields(
        &mut self,
        block: &[u8],
        out: &mut Headers,
        outcome: &mut Outcome,
    ) -> Result<(), DecoderError> {
        let mut buf = block;
        let mut fields_seen = false;
        while let Some(&first) = buf.first() {
            if first & 0x80 != 0 {
                let index = integer(&mut buf, 7)?;
                match self.table.get(index) {
                    Lookup::Field { name, value } => {
                        push(out, name, value, false, self.limits.max_list_bytes, outcome)
                    }
                    Lookup::Unknown => out.push_unrecovered(Unrecovered::Index(index)),
                    Lookup::Invalid => return Err(DecoderError::InvalidIndex { index }),
                }
            } else if first & 0x40 != 0 {
                self.literal(&mut buf, 6, Indexing::Incremental, out, outcome)?;
            } else if first & 0x20 != 0 {
                if fields_seen {
                    return Err(DecoderError::SizeUpdateMisplaced);
                }
                let size = integer(&mut buf, 5)? as usize;
                if let Some(limit) = self.size_limit
                    && size > limit
                {
                    return Err(DecoderError::SizeUpdateOverLimit { size, limit });
                }
                self.table.set_max_size(size);
                continue;
            } else {
                let indexing = if first & 0x10 != 0 {
                    Indexing::Never
                } else {
                    Indexing::Without
                };
                self.literal(&mut buf, 4, indexing, out, outcome)?;
            }
            fields_seen = true;
        }
        Ok(())
    }

    fn literal(
        &mut self,
        buf: &mut &[u8],
        prefix: u8,
        indexing: Indexing,
        out: &mut Headers,
        outcome: &mut Outcome,
    ) -> Result<(), DecoderError> {
        let max_string = self.limits.max_string_bytes;
        let index = integer(buf, prefix)?;
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        let name = if index == 0 {
            match string(buf, &mut scratch, max_string)? {
                Str::Kept(n) => Name::Known(n),
                Str::TooLong(n) => Name::TooLong(n),
            }
        } else {
            match self.table.get(index) {
                Lookup::Field { name, .. } => {
                    scratch.extend_from_slice(name);
                    Name::Known(name.len())
                }
                Lookup::Unknown => Name::Unknown,
                Lookup::Invalid => {
                    self.scratch = scratch;
                    return Err(DecoderError::InvalidIndex { index });
                }
            }
        };
        let value = match string(buf, &mut scratch, max_string) {
            Ok(v) => v,
            Err(e) => {
                self.scratch = scratch;
                return Err(e);
            }
        };
        let insert = indexing == Indexing::Incremental;
        match (name, value) {
            (Name::Known(n), Str::Kept(_)) => {
                let (name, value) = scratch.split_at(n);
                let never = indexing == Indexing::Never;
                push(out, name, value, never, self.limits.max_list_bytes, outcome);
                if insert {
                    self.table.insert(name, value);
                }
            }
            (name, value) => {
                let value_len = match value {
                    Str::Kept(n) | Str::TooLong(n) => n,
                };
                let (what, name_len) = match name {
                    Name::Known(n) => {
                        let name = String::from_utf8_lossy(&scratch[..n]).into_owned();
                        (Unrecovered::TooLong { name: Some(name) }, n)
                    }
                    Name::TooLong(n) => (Unrecovered::TooLong { name: None }, n),
                    // Only while the table is incomplete, where sizes need not be exact.
                    Name::Unknown => (Unrecovered::Index(index), 0),
                };
                if matches!(what, Unrecovered::TooLong { .. }) {
                    outcome.too_long += 1;
                }
                out.push_unrecovered(what);
                if insert {
                    self.table
                        .insert_opaque(name_len + value_len + ENTRY_OVERHEAD);
                }
            }
        }
        self.scratch = scratch;
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Indexing {
    Incremental,
    Without,
    Never,
}

enum Name {
    /// In the scratch buffer, this long.
    Known(usize),
    /// A literal name over the string limit, this long once decoded.
    TooLong(usize),
    /// A reference to an unknown dynamic entry.
    Unknown,
}

/// A decoded string: appended to the buffer, or only measured (over the limit).
enum Str {
    Kept(usize),
    TooLong(usize),
}

fn push(out: &mut Headers, name: &[u8], value: &[u8], never: bool, max: usize, o: &mut Outcome) {
    if out.push(name, value, never, max) == Push::Full {
        o.over_list_limit += 1;
    }
}

/// Decodes an integer with an `prefix`-bit prefix (RFC 7541 §5.1), advancing `buf`.
fn integer(buf: &mut &[u8], prefix: u8) -> Result<u32, DecoderError> {
    let mask = (1u32 << prefix) - 1;
    let (&first, mut rest) = buf.split_first().ok_or(DecoderError::Truncated)?;
    let mut value = u64::from(u32::from(first) & mask);
    if value == u64::from(mask) {
        let mut shift = 0u32;
        loop {
            let (&b, r) = rest.split_first().ok_or(DecoderError::Truncated)?;
            rest = r;
            if shift > 28 {
                return Err(DecoderError::IntegerOverflow);
            }
            value += u64::from(b & 0x7f) << shift;
            if value > u64::from(u32::MAX) {
                return Err(DecoderError::IntegerOverflow);
            }
            shift += 7;
            if b & 0x80 == 0 {
                break;
            }
        }
    }
    *buf = rest;
    Ok(value as u32)
}

/// Decodes a string literal (RFC 7541 §5.2), appending it to `dst` if it is at most `max`
/// bytes long once decoded.
fn string(buf: &mut &[u8], dst: &mut Vec<u8>, max: usize) -> Result<Str, DecoderError> {
    let huffman = buf.first().ok_or(DecoderError::Truncated)? & 0x80 != 0;
    let len = integer(buf, 7)? as usize;
    if buf.len() < len {
        return Err(DecoderError::Truncated);
    }
    let (data, rest) = buf.split_at(len);
    *buf = rest;
    if huffman {
        let start = dst.len();
        let n = huffman::decode(data, dst, max)?;
        if n > max {
            dst.truncate(start);
            return Ok(Str::TooLong(n));
        }
        Ok(Str::Kept(n))
    } else if len > max {
        Ok(Str::TooLong(len))
    } else {
        dst.extend_from_slice(data);
        Ok(Str::Kept(len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http2::hpack::huffman::tests::hex_bytes;

    type Pairs = Vec<(String, String)>;

    fn pairs(p: &[(&str, &str)]) -> Pairs {
        p.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    fn fields(d: &mut Decoder, hex: &str) -> Pairs {
        let mut h = Headers::default();
        let outcome = d.decode(&hex_bytes(hex), &mut h).expect("decodes");
        assert_eq!(outcome, Outcome::default());
        assert!(h.is_exact(), "{h:?}");
        h.iter()
            .map(|(n, v)| (n.to_string(), String::from_utf8(v.to_vec()).unwrap()))
            .collect()
    }

    /// The dynamic table, newest first, as `(name, value)` and its size.
    fn table(d: &Decoder) -> (Pairs, usize) {
        let t = d.table();
        let entries = (0..t.len() as u32)
            .map(|k| match t.get(62 + k) {
                Lookup::Field { name, value } => (
                    String::from_utf8(name.to_vec()).unwrap(),
                    String::from_utf8(value.to_vec()).unwrap(),
                ),
                other => panic!("entry {k}: {other:?}"),
            })
            .collect();
        (entries, t.size())
    }

    fn with_table_size(size: usize) -> Decoder {
        let mut d = Decoder::new(DecoderLimits::default());
        d.table.set_max_size(size);
        d
    }

    #[test]
    fn rfc7541_c1_integers() {
        // C.1.1: 10 with a 5-bit prefix; C.1.2: 1337 with a 5-bit prefix; C.1.3: 42, 8 bits.
        let mut b: &[u8] = &[0b0000_1010];
        assert_eq!(integer(&mut b, 5), Ok(10));
        let mut b: &[u8] = &[0b0001_1111, 0b1001_1010, 0b0000_1010, 0xaa];
        assert_eq!(integer(&mut b, 5), Ok(1337));
        assert_eq!(b, [0xaa], "consumes exactly the integer");
        let mut b: &[u8] = &[42];
        assert_eq!(integer(&mut b, 8 - 1), Ok(42));
        let mut b: &[u8] = &[0x1f, 0x9a];
        assert_eq!(integer(&mut b, 5), Err(DecoderError::Truncated));
        let mut b: &[u8] = &[0x1f, 0xff, 0xff, 0xff, 0xff, 0x0f];
        assert_eq!(integer(&mut b, 5), Err(DecoderError::IntegerOverflow));
        let mut b: &[u8] = &[0x1f, 0xe0, 0xff, 0xff, 0xff, 0x0f];
        assert_eq!(integer(&mut b, 5), Ok(u32::MAX));
        let mut b: &[u8] = &[0x1f, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00];
        assert_eq!(integer(&mut b, 5), Err(DecoderError::IntegerOverflow));
    }

    #[test]
    fn rfc7541_c2_single_representations() {
        // C.2.1 literal with indexing.
        let mut d = Decoder::new(DecoderLimits::default());
        let got = fields(
            &mut d,
            "400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572",
        );
        assert_eq!(got, pairs(&[("custom-key", "custom-header")]));
        assert_eq!(table(&d), (pairs(&[("custom-key", "custom-header")]), 55));
        // C.2.2 literal without indexing.
        let mut d = Decoder::new(DecoderLimits::default());
        let got = fields(&mut d, "040c 2f73 616d 706c 652f 7061 7468");
        assert_eq!(got, pairs(&[(":path", "/sample/path")]));
        assert_eq!(table(&d), (vec![], 0));
        // C.2.3 literal never indexed: kept, marked sensitive, not inserted.
        let mut d = Decoder::new(DecoderLimits::default());
        let mut h = Headers::default();
        d.decode(
            &hex_bytes("1008 7061 7373 776f 7264 0673 6563 7265 74"),
            &mut h,
        )
        .unwrap();
        let got: Vec<(&str, &[u8], bool)> = h.iter_with_sensitivity().collect();
        assert_eq!(got, [("password", &b"secret"[..], true)]);
        assert_eq!(table(&d), (vec![], 0));
        // C.2.4 indexed.
        let mut d = Decoder::new(DecoderLimits::default());
        assert_eq!(fields(&mut d, "82"), pairs(&[(":method", "GET")]));
    }

    /// C.3 (plain) and C.4 (Huffman): three requests on one connection.
    #[test]
    fn rfc7541_c3_c4_requests() {
        let blocks = [
            (
                "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
                "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
            ),
            (
                "8286 84be 5808 6e6f 2d63 6163 6865",
                "8286 84be 5886 a8eb 1064 9cbf",
            ),
            (
                "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
                "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
            ),
        ];
        let base = [(":method", "GET"), (":scheme", "http"), (":path", "/")];
        let auth = (":authority", "www.example.com");
        let want = [
            pairs(&[base[0], base[1], base[2], auth]),
            pairs(&[
                base[0],
                base[1],
                base[2],
                auth,
                ("cache-control", "no-cache"),
            ]),
            pairs(&[
                base[0],
                (":scheme", "https"),
                (":path", "/index.html"),
                auth,
                ("custom-key", "custom-value"),
            ]),
        ];
        let tables = [
            (pairs(&[auth]), 57),
            (pairs(&[("cache-control", "no-cache"), auth]), 110),
            (
                pairs(&[
                    ("custom-key", "custom-value"),
                    ("cache-control", "no-cache"),
                    auth,
                ]),
                164,
            ),
        ];
        for huffman in [false, true] {
            let mut d = Decoder::new(DecoderLimits::default());
            for (i, (plain, coded)) in blocks.iter().enumerate() {
                let hex = if huffman { coded } else { plain };
                assert_eq!(fields(&mut d, hex), want[i], "huffman={huffman} #{i}");
                assert_eq!(table(&d), tables[i], "huffman={huffman} #{i}");
            }
        }
    }

    /// C.5 (plain) and C.6 (Huffman): three responses with a 256-byte table: evictions.
    #[test]
    fn rfc7541_c5_c6_responses_with_eviction() {
        let blocks = [
            (
                "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
                "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
            ),
            ("4803 3330 37c1 c0bf", "4883 640e ffc1 c0bf"),
            (
                "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d 54c0 5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049 5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b 2076 6572 7369 6f6e 3d31",
                "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab 77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f 9587 3160 65c0 03ed 4ee5 b106 3d50 07",
            ),
        ];
        let date1 = ("date", "Mon, 21 Oct 2013 20:13:21 GMT");
        let date2 = ("date", "Mon, 21 Oct 2013 20:13:22 GMT");
        let loc = ("location", "https://www.example.com");
        let cc = ("cache-control", "private");
        let cookie = (
            "set-cookie",
            "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1",
        );
        let want = [
            pairs(&[(":status", "302"), cc, date1, loc]),
            pairs(&[(":status", "307"), cc, date1, loc]),
            pairs(&[
                (":status", "200"),
                cc,
                date2,
                loc,
                ("content-encoding", "gzip"),
                cookie,
            ]),
        ];
        let tables = [
            (pairs(&[loc, date1, cc, (":status", "302")]), 222),
            (pairs(&[(":status", "307"), loc, date1, cc]), 222),
            (pairs(&[cookie, ("content-encoding", "gzip"), date2]), 215),
        ];
        for huffman in [false, true] {
            let mut d = with_table_size(256);
            for (i, (plain, coded)) in blocks.iter().enumerate() {
                let hex = if huffman { coded } else { plain };
                assert_eq!(fields(&mut d, hex), want[i], "huffman={huffman} #{i}");
                assert_eq!(table(&d), tables[i], "huffman={huffman} #{i}");
            }
        }
    }

    #[test]
    fn unknown_entries_are_reported_never_guessed() {
        // Joined mid-connection: 0xbe (62) and a literal with name index 63 are unknown.
        let mut d = Decoder::unsynced(DecoderLimits::default());
        let mut h = Headers::default();
        // 82 :method GET; be idx 62; 7f00 literal w/ indexing name idx 63 value "v".
        d.decode(&[0x82, 0xbe, 0x7f, 0x00, 0x01, b'v'], &mut h)
            .unwrap();
        assert_eq!(h.len(), 1);
        assert_eq!(h.get_str(":method"), Some("GET"));
        assert_eq!(
            h.unrecovered(),
            [Unrecovered::Index(62), Unrecovered::Index(63)]
        );
        // That insert is a placeholder: 62 is still unknown, 63 is too.
        assert_eq!(d.table().get(62), Lookup::Unknown);
        // A fresh insert is trusted at 62; what it pushed down stays unknown.
        let mut h = Headers::default();
        d.decode(&hex_bytes("4001 6101 31 be bf"), &mut h).unwrap();
        assert_eq!(
            h.iter().collect::<Vec<_>>(),
            [("a", &b"1"[..]), ("a", b"1")]
        );
        assert_eq!(h.unrecovered(), [Unrecovered::Index(63)]);
    }

    #[test]
    fn errors_forget_the_table() {
        let mut d = Decoder::new(DecoderLimits::default());
        fields(
            &mut d,
            "400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572",
        );
        let cases: &[(&[u8], DecoderError)] = &[
            (&[0x80], DecoderError::InvalidIndex { index: 0 }),
            (&[0xc0], DecoderError::InvalidIndex { index: 64 }),
            (&[0x40, 0x05, b'a'], DecoderError::Truncated),
            (&[0x41], DecoderError::Truncated),
            (&[0x82, 0x3f, 0xe1, 0x1f], DecoderError::SizeUpdateMisplaced),
            (
                &[0x40, 0x81, 0xff, 0x00],
                DecoderError::Huffman(HuffmanError::Padding),
            ),
            (
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0x7f],
                DecoderError::IntegerOverflow,
            ),
        ];
        for (block, want) in cases {
            let mut d = d.clone();
            assert_eq!(
                d.table().get(62),
                Lookup::Field {
                    name: b"custom-key",
                    value: b"custom-header"
                }
            );
            let mut h = Headers::default();
            assert_eq!(d.decode(block, &mut h), Err(*want), "{block:02x?}");
            assert!(h.is_incomplete());
            assert_eq!(d.table().get(62), Lookup::Unknown, "{block:02x?}");
            assert!(!d.table().is_complete());
        }
    }

    #[test]
    fn size_updates_at_block_start_clear_and_bound() {
        let mut d = Decoder::unsynced(DecoderLimits::default());
        d.set_size_limit(Some(4096));
        let mut h = Headers::default();
        // 20 (size 0: table emptied, complete again), 3fe11f (4096), then an insert.
        d.decode(&hex_bytes("20 3fe11f 4001 6101 31"), &mut h)
            .unwrap();
        assert!(d.table().is_complete());
        assert_eq!(d.table().max_size(), 4096);
        assert_eq!(d.table().get(63), Lookup::Invalid);
        // 3fe13f: 8192, over the advertised limit: a decoding error; not applied, and the table
        // is forgotten (the encoder's idea of it is no longer ours).
        let mut h = Headers::default();
        assert_eq!(
            d.decode(&hex_bytes("3fe13f 82"), &mut h),
            Err(DecoderError::SizeUpdateOverLimit {
                size: 8192,
                limit: 4096
            })
        );
        assert_eq!(d.table().max_size(), 4096);
        assert!(!d.table().is_complete());
        assert_eq!(d.table().get(62), Lookup::Unknown);
        // At the limit is fine.
        let mut h = Headers::default();
        d.decode(&hex_bytes("3fe11f 82"), &mut h).unwrap();
        assert_eq!(d.table().max_size(), 4096);
    }

    #[test]
    fn the_table_never_grows_past_the_advertised_limit() {
        // A connection joined in the middle: the encoder's size is unknown, so only our cap
        // (64 KiB) and the peer's SETTINGS bound the table.
        let mut d = Decoder::unsynced(DecoderLimits::default());
        d.set_size_limit(Some(256));
        // 40 literals with incremental indexing, each 32 + 1 + 100 bytes: 5,320 in all.
        let mut block = Vec::new();
        for i in 0..40u8 {
            block.extend_from_slice(&[0x40, 0x01, b'a' + i % 26, 0x64]);
            block.extend_from_slice(&[b'v'; 100]);
        }
        let mut h = Headers::default();
        d.decode(&block, &mut h).unwrap();
        assert!(d.table().size() <= 256, "{}", d.table().size());
        assert_eq!(d.table().len(), 1, "one 133-byte entry fits in 256");
        // A limit lowered later (a new SETTINGS) evicts at once.
        d.set_size_limit(Some(100));
        assert_eq!(d.table().size(), 0);
        // Without a known limit, only the cap bounds it.
        let mut d = Decoder::unsynced(DecoderLimits::default());
        d.decode(&block, &mut h).unwrap();
        assert_eq!(d.table().size(), 40 * 133);
    }

    #[test]
    fn limits_bound_strings_lists_and_table() {
        let limits = DecoderLimits {
            max_string_bytes: 8,
            max_list_bytes: 80,
            max_table_bytes: 100,
        };
        let mut d = Decoder::new(limits);
        let mut h = Headers::default();
        // Literal with indexing, name "k", value 9 bytes (too long): placeholder of 42 bytes.
        let o = d
            .decode(b"\x40\x01k\x09123456789\x82\x82\x82", &mut h)
            .unwrap();
        assert_eq!(o.too_long, 1);
        assert_eq!(
            h.unrecovered(),
            [Unrecovered::TooLong {
                name: Some("k".into())
            }]
        );
        assert_eq!(d.table().size(), 42);
        assert_eq!(d.table().get(62), Lookup::Unknown);
        // Three ":method: GET" (42 each) in an 80-byte list: one kept, two over.
        assert_eq!(h.len(), 1);
        assert_eq!(o.over_list_limit, 2);
        assert!(h.is_incomplete());
        // Huffman-coded value decoding to more than 8 bytes: counted, not kept.
        let mut h = Headers::default();
        let o = d
            .decode(
                &hex_bytes("0001 618c f1e3 c2e5 f23a 6ba0 ab90 f4ff"),
                &mut h,
            )
            .unwrap();
        assert_eq!(o.too_long, 1);
        assert!(h.is_empty());
    }
}
