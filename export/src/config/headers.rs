//! `OTEL_EXPORTER_OTLP_HEADERS`: W3C-baggage-like `key=value` pairs separated by commas,
//! values percent-decoded (so `,` and `=` can be written as `%2C` and `%3D`).

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("entry {entry:?} has no `=`; write key=value pairs separated by commas")]
    MissingEquals { entry: String },
    #[error("entry {entry:?} has an empty key")]
    EmptyKey { entry: String },
    #[error("entry {entry:?} has a broken percent-escape; write a literal % as %25")]
    BadEscape { entry: String },
}

/// Parses `k=v,k2=v2`. Whitespace around keys and values is trimmed, empty entries are
/// skipped, keys are lower-cased, and a later duplicate key wins.
pub fn parse_headers(s: &str) -> Result<BTreeMap<String, String>, HeaderError> {
    let mut out = BTreeMap::new();
    for entry in s.split(',') {
        if entry.trim().is_empty() {
            continue;
        }
        let (k, v) = entry
            .split_once('=')
            .ok_or_else(|| HeaderError::MissingEquals {
                entry: entry.trim().to_owned(),
            })?;
        let bad = || HeaderError::BadEscape {
            entry: entry.trim().to_owned(),
        };
        let key = percent_decode(k.trim()).ok_or_else(bad)?;
        if key.is_empty() {
            return Err(HeaderError::EmptyKey {
                entry: entry.trim().to_owned(),
            });
        }
        let value = percent_decode(v.trim()).ok_or_else(bad)?;
        out.insert(key.to_ascii_lowercase(), value);
    }
    Ok(out)
}

/// Decodes `%XX` escapes; `None` for a truncated or non-hex escape or a result that is not
/// UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hi = (hex[0] as char).to_digit(16)?;
            let lo = (hex[1] as char).to_digit(16)?;
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(s: &str) -> Vec<(String, String)> {
        parse_headers(s).unwrap().into_iter().collect()
    }

    #[test]
    fn parses_trims_decodes_and_lowercases() {
        assert_eq!(
            pairs(" Api-Key = abc%3D%3D ,x-list=a%2Cb,, empty= ,sp=a%20b=c"),
            vec![
                ("api-key".into(), "abc==".into()),
                ("empty".into(), "".into()),
                ("sp".into(), "a b=c".into()),
                ("x-list".into(), "a,b".into()),
            ]
        );
        assert!(pairs("").is_empty());
        assert_eq!(pairs("a=1,A=2"), vec![("a".into(), "2".into())]);
        assert_eq!(pairs("k=%E2%9C%93"), vec![("k".into(), "✓".into())]);
    }

    #[test]
    fn rejects_malformed_entries() {
        assert_eq!(
            parse_headers("a=1,b").unwrap_err(),
            HeaderError::MissingEquals { entry: "b".into() }
        );
        assert_eq!(
            parse_headers("=v").unwrap_err(),
            HeaderError::EmptyKey { entry: "=v".into() }
        );
        assert_eq!(
            parse_headers("k=100%").unwrap_err(),
            HeaderError::BadEscape {
                entry: "k=100%".into()
            }
        );
        assert!(parse_headers("k=%zz").is_err());
        assert!(parse_headers("k=%ff").is_err(), "not UTF-8");
    }

    #[test]
    fn percent_decode_leaves_plain_text() {
        assert_eq!(percent_decode("plain+text").as_deref(), Some("plain+text"));
        assert_eq!(percent_decode("%41%62").as_deref(), Some("Ab"));
        assert_eq!(percent_decode("%4"), None);
    }
}
