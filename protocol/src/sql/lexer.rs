//! Splits SQL into tokens, enough to find literals, comments and names: not a parser.
//!
//! ```text
//! comment      -- ... \n     # ... \n (MySQL)     /* ... */ (nested in PostgreSQL)
//! string       '...' ('' escapes; \ escapes in MySQL and in PostgreSQL E'...')
//!              "..." in MySQL; N'..' X'..' B'..' E'..' U&'..' prefixes; $tag$ ... $tag$ (PostgreSQL)
//! number       12  1.5  .5  1e-3  0x1F  0b101
//! placeholder  ?  $1  :name  %s  %(name)s
//! identifier   word  "quoted" (PostgreSQL)  `quoted` (MySQL)
//! ```

use super::Dialect;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Word,
    QuotedIdent,
    Literal,
    Placeholder,
    Punct,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Token<'a> {
    pub kind: Kind,
    pub text: &'a str,
    /// Whitespace or a comment came before it.
    pub spaced: bool,
}

pub(crate) fn tokens(sql: &str, dialect: Dialect) -> Vec<Token<'_>> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let mut spaced = false;
    let mysql = dialect == Dialect::MySql;
    while i < b.len() {
        let c = b[i];
        let start = i;
        let kind;
        if c.is_ascii_whitespace() {
            i += 1;
            spaced = true;
            continue;
        } else if (c == b'-' && b.get(i + 1) == Some(&b'-')) || (mysql && c == b'#') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
            spaced = true;
            continue;
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            let mut depth = 0usize;
            while i < b.len() {
                if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                    depth += 1;
                    i += 2;
                } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                    depth = depth.saturating_sub(1);
                    i += 2;
                    if depth == 0 || mysql {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            spaced = true;
            continue;
        } else if c == b'\'' {
            i = string_end(b, i, b'\'', mysql);
            kind = Kind::Literal;
        } else if c == b'"' {
            i = string_end(b, i, b'"', mysql);
            kind = if mysql {
                Kind::Literal
            } else {
                Kind::QuotedIdent
            };
        } else if c == b'`' {
            i = string_end(b, i, b'`', false);
            kind = Kind::QuotedIdent;
        } else if matches!(c, b'E' | b'e' | b'N' | b'n' | b'X' | b'x' | b'B' | b'b')
            && b.get(i + 1) == Some(&b'\'')
        {
            let escapes = mysql || matches!(c, b'E' | b'e');
            i = string_end(b, i + 1, b'\'', escapes);
            kind = Kind::Literal;
        } else if (c == b'U' || c == b'u')
            && b.get(i + 1) == Some(&b'&')
            && b.get(i + 2) == Some(&b'\'')
        {
            i = string_end(b, i + 2, b'\'', false);
            kind = Kind::Literal;
        } else if c == b'$' && !mysql && b.get(i + 1).is_some_and(u8::is_ascii_digit) {
            i += 1;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            kind = Kind::Placeholder;
        } else if c == b'$' && !mysql {
            // $tag$ ... $tag$ (the tag may be empty).
            let tag_end = b[i + 1..]
                .iter()
                .position(|&x| !(x.is_ascii_alphanumeric() || x == b'_'))
                .map(|p| i + 1 + p);
            match tag_end {
                Some(e) if b[e] == b'$' => {
                    let tag = &b[i..=e];
                    let body = e + 1;
                    i = find(&b[body..], tag).map_or(b.len(), |p| body + p + tag.len());
                    kind = Kind::Literal;
                }
                _ => {
                    i += 1;
                    kind = Kind::Punct;
                }
            }
        } else if c.is_ascii_digit() || (c == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit))
        {
            i = number_end(b, i);
            kind = Kind::Literal;
        } else if c == b'?' {
            i += 1;
            kind = Kind::Placeholder;
        } else if c == b'%' && matches!(b.get(i + 1), Some(b's' | b'd' | b'b')) {
            i += 2;
            kind = Kind::Placeholder;
        } else if c == b'%' && b.get(i + 1) == Some(&b'(') {
            i = b[i..]
                .iter()
                .position(|&x| x == b')')
                .map_or(b.len(), |p| i + p + 1);
            if i < b.len() && b[i].is_ascii_alphabetic() {
                i += 1;
            }
            kind = Kind::Placeholder;
        } else if c == b':'
            && b.get(i + 1).is_some_and(|x| x.is_ascii_alphabetic())
            && b.get(i.wrapping_sub(1)) != Some(&b':')
        {
            i += 1;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            kind = Kind::Placeholder;
        } else if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 {
            while i < b.len()
                && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'$' || b[i] >= 0x80)
            {
                i += 1;
            }
            kind = Kind::Word;
        } else {
            i += 1;
            // Keep multi-byte operators together.
            while i < b.len()
                && matches!(b[i], b'=' | b'<' | b'>' | b'|' | b':' | b'!')
                && matches!(c, b'<' | b'>' | b'!' | b'|' | b':' | b'=')
            {
                i += 1;
            }
            kind = Kind::Punct;
        }
        // Never cut a UTF-8 character: every boundary above is at an ASCII byte or the end.
        let text = sql.get(start..i).unwrap_or("");
        out.push(Token { kind, text, spaced });
        spaced = false;
    }
    out
}

/// The end (exclusive) of a quoted string starting at `i`.
fn string_end(b: &[u8], mut i: usize, q: u8, backslash: bool) -> usize {
    i += 1;
    while i < b.len() {
        if backslash && b[i] == b'\\' {
            i += 2;
        } else if b[i] == q {
            if b.get(i + 1) == Some(&q) {
                i += 2;
            } else {
                return i + 1;
            }
        } else {
            i += 1;
        }
    }
    b.len()
}

fn number_end(b: &[u8], mut i: usize) -> usize {
    if b[i] == b'0' && matches!(b.get(i + 1), Some(b'x' | b'X' | b'b' | b'B')) {
        i += 2;
        while i < b.len() && b[i].is_ascii_hexdigit() {
            i += 1;
        }
        return i;
    }
    while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.') {
        i += 1;
    }
    if i < b.len() && matches!(b[i], b'e' | b'E') {
        let mut j = i + 1;
        if j < b.len() && matches!(b[j], b'+' | b'-') {
            j += 1;
        }
        if j < b.len() && b[j].is_ascii_digit() {
            i = j;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
        }
    }
    i
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
