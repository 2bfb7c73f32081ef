//! Decoded header blocks. A block keeps its fields as one owned byte buffer with positions into
//! it, like `http1::Headers`, plus what could *not* be decoded: an observer that joined late or
//! lost a block reports which fields it could not recover instead of guessing them.

use std::fmt;

use crate::mem;

/// At most this many unrecovered fields are listed per block; all are counted.
pub const MAX_LISTED_UNRECOVERED: usize = 16;

/// A field of a header block that was there but could not be recovered.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Unrecovered {
    /// A reference to this HPACK index (name and value, or only the name of a literal whose
    /// value was then dropped) whose dynamic-table entry is unknown to the observer.
    Index(u32),
    /// A literal whose value (or name, then `name` is `None`) was longer than the decoder's
    /// string limit, so it was not kept.
    TooLong {
        /// The field name, when it was known.
        name: Option<String>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Field {
    name: (u32, u32),
    value: (u32, u32),
    never_indexed: bool,
}

/// Why a field was not added to a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Push {
    Added,
    /// The name or value is not valid in HTTP/2 (RFC 9113 §8.2.1): dropped and counted.
    Malformed,
    /// Over the block's size limit: dropped, the block is marked incomplete.
    Full,
}

/// The fields of one header block (or of the regular part of a head), in wire order.
///
/// Names are as sent, which HTTP/2 requires to be lower-case (an upper-case name makes a field
/// malformed, and it is dropped); lookups compare names exactly. Values are bytes.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Headers {
    raw: Vec<u8>,
    fields: Vec<Field>,
    unrecovered: Vec<Unrecovered>,
    unrecovered_count: u32,
    malformed: u32,
    incomplete: bool,
    size: usize,
}

impl Headers {
    /// Number of fields kept (a name sent twice counts twice).
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// No fields kept.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// `(name, value)` pairs in wire order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> + '_ {
        self.fields
            .iter()
            .map(|f| (self.name(f), self.slice(f.value)))
    }

    /// Like [`Headers::iter`], with whether each field was sent as never-indexed (HPACK's
    /// mark for sensitive values, RFC 7541 §7.1.3).
    pub fn iter_with_sensitivity(&self) -> impl Iterator<Item = (&str, &[u8], bool)> + '_ {
        self.fields
            .iter()
            .map(|f| (self.name(f), self.slice(f.value), f.never_indexed))
    }

    /// The value of the first field called `name` (exact, so lower-case).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|f| self.name(f) == name)
            .map(|f| self.slice(f.value))
    }

    /// Like [`Headers::get`], if the value is UTF-8.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Values of every field called `name`, in wire order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.fields
            .iter()
            .filter(move |f| self.name(f) == name)
            .map(|f| self.slice(f.value))
    }

    /// Fields that were sent but could not be recovered (at most
    /// [`MAX_LISTED_UNRECOVERED`]; see [`Headers::unrecovered_count`] for all).
    pub fn unrecovered(&self) -> &[Unrecovered] {
        &self.unrecovered
    }

    /// How many fields could not be recovered.
    pub fn unrecovered_count(&self) -> u32 {
        self.unrecovered_count
    }

    /// Fields dropped because their name or value is not valid HTTP/2.
    pub fn malformed_count(&self) -> u32 {
        self.malformed
    }

    /// Fields are missing beyond the listed unrecovered ones: the block was cut by a capture
    /// gap, could not be decoded, or went over a size limit. Absence then proves nothing.
    pub fn is_incomplete(&self) -> bool {
        self.incomplete
    }

    /// The fields kept are all the block held: complete, nothing unrecovered.
    pub fn is_exact(&self) -> bool {
        !self.incomplete && self.unrecovered_count == 0
    }

    /// Sum of the kept fields' sizes as HPACK counts them (name + value + 32 each).
    pub fn size(&self) -> usize {
        self.size
    }

    /// An empty block standing for one that could not be decoded at all.
    pub(crate) fn lost() -> Self {
        Self {
            incomplete: true,
            ..Self::default()
        }
    }

    pub(crate) fn mark_incomplete(&mut self) {
        self.incomplete = true;
    }

    /// Adds a field if it is valid and the block stays within `max_size` (RFC sizes).
    pub(crate) fn push(
        &mut self,
        name: &[u8],
        value: &[u8],
        never_indexed: bool,
        max_size: usize,
    ) -> Push {
        if !valid_name(name) || !valid_value(value) {
            self.malformed = self.malformed.saturating_add(1);
            return Push::Malformed;
        }
        let size = name.len() + value.len() + super::hpack::ENTRY_OVERHEAD;
        if self.size + size > max_size || self.raw.len() + name.len() + value.len() > MAX_RAW {
            self.incomplete = true;
            return Push::Full;
        }
        let n0 = self.raw.len() as u32;
        self.raw.extend_from_slice(name);
        let v0 = self.raw.len() as u32;
        self.raw.extend_from_slice(value);
        self.fields.push(Field {
            name: (n0, v0),
            value: (v0, self.raw.len() as u32),
            never_indexed,
        });
        self.size += size;
        Push::Added
    }

    pub(crate) fn push_unrecovered(&mut self, what: Unrecovered) {
        self.unrecovered_count = self.unrecovered_count.saturating_add(1);
        if self.unrecovered.len() < MAX_LISTED_UNRECOVERED {
            self.unrecovered.push(what);
        }
    }

    /// Removes the pseudo-header fields and returns them, in order, as `(name, value)`.
    /// `misplaced` is set if one followed a regular field (RFC 9113 §8.3).
    pub(crate) fn take_pseudo(&mut self) -> (Vec<(String, Vec<u8>)>, bool) {
        let mut pseudo = Vec::new();
        let mut misplaced = false;
        let mut seen_regular = false;
        let mut kept = Vec::with_capacity(self.fields.len());
        for f in &self.fields {
            let name = self.name(f);
            if name.starts_with(':') {
                misplaced |= seen_regular;
                pseudo.push((name.to_string(), self.slice(f.value).to_vec()));
                self.size -= (f.name.1 - f.name.0 + f.value.1 - f.value.0) as usize
                    + super::hpack::ENTRY_OVERHEAD;
            } else {
                seen_regular = true;
                kept.push(*f);
            }
        }
        self.fields = kept;
        (pseudo, misplaced)
    }

    /// Bytes this block holds on the heap (for the stream memory bounds).
    pub(crate) fn heap_bytes(&self) -> usize {
        self.raw.len()
            + self.fields.len() * std::mem::size_of::<Field>()
            + self.unrecovered.len() * std::mem::size_of::<Unrecovered>()
    }

    /// Heap bytes this block holds now, for the connection's memory estimate: the buffers'
    /// capacities, and the names of listed unrecovered fields (which [`Headers::heap_bytes`],
    /// the figure the stream limits charge, leaves out).
    pub(crate) fn allocated_bytes(&self) -> usize {
        let names: usize = self
            .unrecovered
            .iter()
            .map(|u| match u {
                Unrecovered::TooLong { name: Some(n) } => n.capacity(),
                _ => 0,
            })
            .sum();
        mem::vec(&self.raw) + mem::vec(&self.fields) + mem::vec(&self.unrecovered) + names
    }

    fn name(&self, f: &Field) -> &str {
        // Names were checked to be ASCII when pushed, so this never falls back.
        std::str::from_utf8(self.slice(f.name)).unwrap_or_default()
    }

    fn slice(&self, (start, end): (u32, u32)) -> &[u8] {
        self.raw
            .get(start as usize..end as usize)
            .unwrap_or_default()
    }
}

/// Positions are `u32`: a block never holds more than this many bytes.
const MAX_RAW: usize = u32::MAX as usize;

/// RFC 9113 §8.2.1: a lower-case token, optionally after the `:` of a pseudo-header.
fn valid_name(name: &[u8]) -> bool {
    let body = name.strip_prefix(b":").unwrap_or(name);
    !body.is_empty() && body.iter().all(|&b| TCHAR_LOWER[usize::from(b)])
}

/// RFC 9113 §8.2.1: no NUL, CR or LF.
fn valid_value(value: &[u8]) -> bool {
    !value.iter().any(|&b| matches!(b, 0 | b'\r' | b'\n'))
}

/// RFC 9110 `tchar` without upper-case letters.
const TCHAR_LOWER: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_digit()
            || c.is_ascii_lowercase()
            || matches!(
                c,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        b += 1;
    }
    t
};

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Headers");
        d.field(
            "fields",
            &self
                .iter()
                .map(|(n, v)| (n, String::from_utf8_lossy(v).into_owned()))
                .collect::<Vec<_>>(),
        );
        if self.unrecovered_count > 0 {
            d.field("unrecovered", &self.unrecovered)
                .field("unrecovered_count", &self.unrecovered_count);
        }
        if self.malformed > 0 {
            d.field("malformed", &self.malformed);
        }
        if self.incomplete {
            d.field("incomplete", &true);
        }
        d.finish()
    }
}

/// A request's header section: pseudo-header fields apart, regular fields in `headers`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestHead {
    /// `:method`, e.g. `GET`.
    pub method: Option<String>,
    /// `:scheme`, e.g. `https`.
    pub scheme: Option<String>,
    /// `:authority` (the HTTP/1 `Host`).
    pub authority: Option<String>,
    /// `:path`: path and query, e.g. `/pkg.Service/Method`.
    pub path: Option<String>,
    /// `:protocol` (extended CONNECT, RFC 8441).
    pub protocol: Option<String>,
    /// The regular fields, and what could not be recovered of the whole block.
    pub headers: Headers,
}

impl RequestHead {
    /// Splits a decoded block; `true` if its pseudo-header fields broke RFC 9113 §8.3 (unknown,
    /// repeated, misplaced or response-only). The first value of each is kept.
    pub(crate) fn from_block(mut headers: Headers) -> (Self, bool) {
        let (pseudo, mut malformed) = headers.take_pseudo();
        let mut head = Self::default();
        for (name, value) in pseudo {
            let slot = match name.as_str() {
                ":method" => &mut head.method,
                ":scheme" => &mut head.scheme,
                ":authority" => &mut head.authority,
                ":path" => &mut head.path,
                ":protocol" => &mut head.protocol,
                _ => {
                    malformed = true;
                    continue;
                }
            };
            if slot.is_some() {
                malformed = true;
            } else {
                *slot = Some(String::from_utf8_lossy(&value).into_owned());
            }
        }
        head.headers = headers;
        (head, malformed)
    }

    /// Heap bytes held: the pseudo-header strings and the regular fields.
    pub(crate) fn allocated_bytes(&self) -> usize {
        [
            &self.method,
            &self.scheme,
            &self.authority,
            &self.path,
            &self.protocol,
        ]
        .into_iter()
        .map(|s| mem::opt_string(s.as_ref()))
        .sum::<usize>()
            + self.headers.allocated_bytes()
    }

    /// A pseudo-header every request needs (`:method`; `:path` and `:scheme` unless CONNECT)
    /// is absent while the block had fields that could not be recovered: it is unknown, not
    /// missing.
    pub fn pseudo_unknown(&self) -> bool {
        let connect = self.method.as_deref() == Some("CONNECT");
        let absent =
            self.method.is_none() || (!connect && (self.path.is_none() || self.scheme.is_none()));
        absent && !self.headers.is_exact()
    }
}

/// A response's header section: `:status` apart, regular fields in `headers`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResponseHead {
    /// `:status`, 100–999.
    pub status: Option<u16>,
    /// The regular fields, and what could not be recovered of the whole block.
    pub headers: Headers,
}

impl ResponseHead {
    /// Splits a decoded block; `true` if its pseudo-header fields were malformed (anything
    /// but one valid `:status`).
    pub(crate) fn from_block(mut headers: Headers) -> (Self, bool) {
        let (pseudo, mut malformed) = headers.take_pseudo();
        let mut status = None;
        for (name, value) in pseudo {
            match (name.as_str(), parse_status(&value)) {
                (":status", Some(s)) if status.is_none() => status = Some(s),
                _ => malformed = true,
            }
        }
        (Self { status, headers }, malformed)
    }

    /// `:status` is absent while the block had fields that could not be recovered.
    pub fn pseudo_unknown(&self) -> bool {
        self.status.is_none() && !self.headers.is_exact()
    }
}

/// Trailers may not hold pseudo-header fields (RFC 9113 §8.1): they are dropped, `true` says
/// there were some.
pub(crate) fn trailers_from_block(mut headers: Headers) -> (Headers, bool) {
    let (pseudo, misplaced) = headers.take_pseudo();
    (headers, misplaced || !pseudo.is_empty())
}

/// Whether a block is a head (has a pseudo-header field) rather than trailers.
pub(crate) fn has_pseudo(headers: &Headers) -> bool {
    headers.iter().any(|(n, _)| n.starts_with(':'))
}

fn parse_status(v: &[u8]) -> Option<u16> {
    match v {
        [a @ b'1'..=b'9', b @ b'0'..=b'9', c @ b'0'..=b'9'] => {
            Some(u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0'))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(fields: &[(&str, &str)]) -> Headers {
        let mut h = Headers::default();
        for (n, v) in fields {
            h.push(n.as_bytes(), v.as_bytes(), false, 1 << 20);
        }
        h
    }

    #[test]
    fn validation_drops_and_counts_bad_fields() {
        let mut h = Headers::default();
        assert_eq!(
            h.push(b"content-type", b"text/plain", false, 1000),
            Push::Added
        );
        assert_eq!(h.push(b"Content-Type", b"x", false, 1000), Push::Malformed);
        assert_eq!(h.push(b"x-a", b"a\r\nb", false, 1000), Push::Malformed);
        assert_eq!(h.push(b"", b"v", false, 1000), Push::Malformed);
        assert_eq!(h.push(b":", b"v", false, 1000), Push::Malformed);
        assert_eq!(h.push(b"x b", b"v", false, 1000), Push::Malformed);
        assert_eq!(h.push(b":path", b"/", true, 1000), Push::Added);
        assert_eq!((h.len(), h.malformed_count()), (2, 5));
        assert_eq!(h.get_str("content-type"), Some("text/plain"));
        assert_eq!(h.get("Content-Type"), None, "exact names");
        let sens: Vec<bool> = h.iter_with_sensitivity().map(|f| f.2).collect();
        assert_eq!(sens, [false, true]);
        assert_eq!(h.size(), 12 + 10 + 32 + 5 + 1 + 32);
    }

    #[test]
    fn size_limit_marks_incomplete() {
        let mut h = Headers::default();
        assert_eq!(h.push(b"a", b"1", false, 40), Push::Added);
        assert_eq!(h.push(b"b", b"2", false, 40), Push::Full);
        assert!(h.is_incomplete() && !h.is_exact());
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn request_pseudo_headers_are_split_out() {
        let (head, bad) = RequestHead::from_block(block(&[
            (":method", "POST"),
            (":scheme", "http"),
            (":path", "/pkg.Svc/Do"),
            (":authority", "a:1"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ]));
        assert!(!bad);
        assert_eq!(head.method.as_deref(), Some("POST"));
        assert_eq!(head.path.as_deref(), Some("/pkg.Svc/Do"));
        assert_eq!(head.authority.as_deref(), Some("a:1"));
        assert_eq!(head.scheme.as_deref(), Some("http"));
        let names: Vec<&str> = head.headers.iter().map(|f| f.0).collect();
        assert_eq!(names, ["content-type", "te"]);
        assert_eq!(head.headers.size(), 12 + 16 + 32 + 2 + 8 + 32);
        assert!(!head.pseudo_unknown());
    }

    #[test]
    fn malformed_pseudo_headers_are_flagged() {
        for fields in [
            &[(":method", "GET"), ("a", "b"), (":path", "/")][..],
            &[(":method", "GET"), (":method", "PUT"), (":path", "/")],
            &[(":method", "GET"), (":status", "200")],
            &[(":method", "GET"), (":foo", "x")],
        ] {
            let (head, bad) = RequestHead::from_block(block(fields));
            assert!(bad, "{fields:?}");
            assert_eq!(head.method.as_deref(), Some("GET"));
        }
        let (resp, bad) = ResponseHead::from_block(block(&[(":status", "20x")]));
        assert!(bad);
        assert_eq!(resp.status, None);
        let (resp, bad) = ResponseHead::from_block(block(&[(":status", "404"), ("a", "b")]));
        assert!(!bad);
        assert_eq!(resp.status, Some(404));
        let (t, bad) = trailers_from_block(block(&[("grpc-status", "0"), (":path", "/")]));
        assert!(bad);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn unknown_pseudo_headers_need_unrecovered_fields() {
        let mut h = block(&[(":method", "GET")]);
        let (head, _) = RequestHead::from_block(h.clone());
        assert!(
            !head.pseudo_unknown(),
            "exact block: :path is missing, not unknown"
        );
        h.push_unrecovered(Unrecovered::Index(70));
        let (head, _) = RequestHead::from_block(h);
        assert!(head.pseudo_unknown());
        let (resp, _) = ResponseHead::from_block(Headers::lost());
        assert!(resp.pseudo_unknown());
    }

    #[test]
    fn unrecovered_list_is_capped_count_is_not() {
        let mut h = Headers::default();
        for i in 0..40 {
            h.push_unrecovered(Unrecovered::Index(62 + i));
        }
        assert_eq!(h.unrecovered().len(), MAX_LISTED_UNRECOVERED);
        assert_eq!(h.unrecovered_count(), 40);
        assert_eq!(h.unrecovered()[0], Unrecovered::Index(62));
    }
}
