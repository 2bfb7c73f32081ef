//! Parsed heads. A head keeps its header section as one owned byte block with field positions
//! into it: one allocation per head instead of two per field, and values stay bytes because
//! HTTP allows obs-text that is not UTF-8.

use std::fmt;

/// The header fields of one message, in wire order, names as sent.
///
/// Lookups are ASCII case-insensitive on the name. Values have surrounding whitespace removed;
/// an obs-fold (a line continued with leading whitespace) has been replaced by spaces.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Headers {
    raw: Box<[u8]>,
    fields: Vec<Field>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Field {
    name: (u32, u32),
    value: (u32, u32),
}

impl Headers {
    /// Builds from a header block and `(name, value)` byte ranges into it.
    pub(crate) fn from_parts(raw: Box<[u8]>, fields: Vec<((u32, u32), (u32, u32))>) -> Self {
        let fields = fields
            .into_iter()
            .map(|(name, value)| Field { name, value })
            .collect();
        Self { raw, fields }
    }

    /// Number of fields (a name sent twice counts twice).
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// No fields at all.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// `(name, value)` pairs in wire order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> + '_ {
        self.fields
            .iter()
            .map(|f| (self.name(f), self.slice(f.value)))
    }

    /// The value of the first field called `name` (ASCII case-insensitive).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|f| self.name(f).eq_ignore_ascii_case(name))
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
            .filter(move |f| self.name(f).eq_ignore_ascii_case(name))
            .map(|f| self.slice(f.value))
    }

    /// Whether any field called `name` holds `token` in its comma-separated list (both ASCII
    /// case-insensitive), as in `Connection: keep-alive, Upgrade`.
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.get_all(name)
            .flat_map(|v| v.split(|&b| b == b','))
            .any(|t| trim_ows(t).eq_ignore_ascii_case(token.as_bytes()))
    }

    /// Heap bytes held: the header block and the field positions.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.raw.len() + self.fields.capacity() * std::mem::size_of::<Field>()
    }

    fn name(&self, f: &Field) -> &str {
        // Names were checked to be tokens (ASCII) when parsed, so this never falls back.
        std::str::from_utf8(self.slice(f.name)).unwrap_or_default()
    }

    fn slice(&self, (start, end): (u32, u32)) -> &[u8] {
        self.raw
            .get(start as usize..end as usize)
            .unwrap_or_default()
    }
}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(
                self.iter()
                    .map(|(n, v)| (n, String::from_utf8_lossy(v).into_owned())),
            )
            .finish()
    }
}

/// Strips optional whitespace (SP, HTAB) at both ends.
pub(crate) fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// The head of a request: request line and header fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestHead {
    /// The method token, e.g. `GET`.
    pub method: String,
    /// The request-target as sent (origin-form, absolute-form, authority-form or `*`); bytes
    /// that are not UTF-8 are replaced with U+FFFD.
    pub target: String,
    /// `0` for HTTP/1.0, `1` for HTTP/1.1.
    pub minor_version: u8,
    /// Header fields.
    pub headers: Headers,
}

impl RequestHead {
    /// Heap bytes held: method, target and header fields.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.method.capacity() + self.target.capacity() + self.headers.heap_bytes()
    }
}

/// The head of a response: status line and header fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseHead {
    /// `0` for HTTP/1.0, `1` for HTTP/1.1.
    pub minor_version: u8,
    /// The status code (100–999).
    pub status: u16,
    /// The reason phrase, possibly empty; non-UTF-8 bytes replaced with U+FFFD.
    pub reason: String,
    /// Header fields.
    pub headers: Headers,
}

impl ResponseHead {
    /// Heap bytes held: reason phrase and header fields.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.reason.capacity() + self.headers.heap_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Headers {
        let raw = b"Host: a\r\nconnection: keep-alive, Upgrade\r\nX-V: \xff\r\nhost: b\r\n";
        let r = |s: usize, e: usize| (s as u32, e as u32);
        Headers::from_parts(
            raw.to_vec().into_boxed_slice(),
            vec![
                (r(0, 4), r(6, 7)),
                (r(9, 19), r(21, 40)),
                (r(42, 45), r(47, 48)),
                (r(50, 54), r(56, 57)),
            ],
        )
    }

    #[test]
    fn lookups_ignore_name_case_and_keep_order() {
        let h = sample();
        assert_eq!(h.len(), 4);
        assert_eq!(h.get("HOST"), Some(&b"a"[..]));
        assert_eq!(h.get_all("host").collect::<Vec<_>>(), [&b"a"[..], b"b"]);
        assert_eq!(h.get_str("x-v"), None, "not UTF-8");
        assert_eq!(h.get("x-v"), Some(&b"\xff"[..]));
        assert_eq!(h.get("missing"), None);
        assert!(h.has_token("Connection", "upgrade"));
        assert!(h.has_token("connection", "KEEP-ALIVE"));
        assert!(!h.has_token("connection", "close"));
        let names: Vec<&str> = h.iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["Host", "connection", "X-V", "host"]);
    }

    #[test]
    fn out_of_range_positions_read_as_empty() {
        let h = Headers::from_parts(Box::from(&b"ab"[..]), vec![((0, 9), (5, 1))]);
        assert_eq!(h.iter().collect::<Vec<_>>(), [("", &b""[..])]);
    }

    #[test]
    fn trim_ows_strips_both_ends() {
        assert_eq!(trim_ows(b" \t x y\t "), b"x y");
        assert_eq!(trim_ows(b"  "), b"");
    }
}
