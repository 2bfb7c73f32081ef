//! SQL for span attributes, per the OpenTelemetry database conventions: the query text with
//! its literals replaced by `?` (`db.query.text`), and what it does to what (`db.operation.name`,
//! `db.collection.name`, `db.query.summary`).
//!
//! It tokenises rather than parses (see `lexer`): every string, number, hex, bit or
//! dollar-quoted literal becomes `?`, comments go, whitespace shrinks to one space, and a list of
//! values after `IN` shrinks to one placeholder, so `IN (1, 2, 3)` and `IN (4)` sanitise alike:
//!
//! ```
//! use sonde_protocol::sql::{Dialect, sanitize, summarize};
//!
//! let q = "SELECT * FROM users /* hot */ WHERE id IN (1, 2, 3) AND name = 'ann'";
//! assert_eq!(sanitize(q, Dialect::Postgres), "SELECT * FROM users WHERE id IN (?) AND name = ?");
//! let s = summarize(q, Dialect::Postgres);
//! assert_eq!((s.operation.as_deref(), s.collection.as_deref()), (Some("SELECT"), Some("users")));
//! assert_eq!(s.summary.as_deref(), Some("SELECT users"));
//! ```
//!
//! Placeholders already in the text (`$1`, `?`, `%s`, `:name`) stay as they are. Bytes that
//! are not SQL come out as punctuation; nothing panics.

mod lexer;

#[cfg(test)]
mod tests;

use lexer::{Kind, Token, tokens};

/// Which quoting rules apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// `"..."` is an identifier, `$tag$...$tag$` a string, backslashes only escape in `E'...'`.
    Postgres,
    /// `"..."` is a string, `` `...` `` an identifier, backslashes escape, `#` starts a comment.
    MySql,
}

/// At most this many bytes of summary (the conventions' recommendation).
pub const MAX_SUMMARY: usize = 255;

/// `query` with literals replaced by `?` and comments removed.
pub fn sanitize(query: &str, dialect: Dialect) -> String {
    let toks = tokens(query, dialect);
    let mut out = String::with_capacity(query.len().min(4096));
    let mut i = 0;
    while i < toks.len() {
        let t = toks[i];
        // IN ( ?, ?, ... ) → IN (?)
        if t.kind == Kind::Word
            && t.text.eq_ignore_ascii_case("IN")
            && let Some(end) = value_list(&toks, i + 1)
        {
            push(&mut out, t.spaced, t.text);
            push(&mut out, toks[i + 1].spaced, "(?)");
            i = end;
            continue;
        }
        let text = if t.kind == Kind::Literal { "?" } else { t.text };
        push(&mut out, t.spaced, text);
        i += 1;
    }
    out
}

/// If `toks[i..]` is `( v , v ... )` of literals or placeholders, the index past `)`.
fn value_list(toks: &[Token<'_>], i: usize) -> Option<usize> {
    if toks.get(i)?.text != "(" {
        return None;
    }
    let mut j = i + 1;
    loop {
        let v = toks.get(j)?;
        if !matches!(v.kind, Kind::Literal | Kind::Placeholder) {
            return None;
        }
        match toks.get(j + 1)?.text {
            "," => j += 2,
            ")" => return Some(j + 2),
            _ => return None,
        }
    }
}

fn push(out: &mut String, spaced: bool, text: &str) {
    if spaced && !out.is_empty() {
        out.push(' ');
    }
    out.push_str(text);
}

/// What a query does, for span names and attributes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// The first operation: `SELECT`, `INSERT`, `CREATE TABLE`, ... (`db.operation.name`).
    pub operation: Option<String>,
    /// The table, when the query names exactly one (`db.collection.name`), as written
    /// (schema prefix kept, quotes removed).
    pub collection: Option<String>,
    /// Operations and tables in the order they appear, e.g. `SELECT orders customers`,
    /// `INSERT archive SELECT orders` (`db.query.summary`, at most [`MAX_SUMMARY`] bytes).
    pub summary: Option<String>,
}

/// Statement keywords that start an operation.
const OPERATIONS: &[&str] = &[
    "SELECT",
    "INSERT",
    "UPDATE",
    "DELETE",
    "MERGE",
    "REPLACE",
    "UPSERT",
    "CREATE",
    "ALTER",
    "DROP",
    "TRUNCATE",
    "COPY",
    "CALL",
    "EXEC",
    "EXECUTE",
    "SHOW",
    "SET",
    "BEGIN",
    "START",
    "COMMIT",
    "ROLLBACK",
    "SAVEPOINT",
    "RELEASE",
    "GRANT",
    "REVOKE",
    "USE",
    "EXPLAIN",
    "VACUUM",
    "ANALYZE",
    "LOCK",
    "PREPARE",
    "DEALLOCATE",
    "LISTEN",
    "UNLISTEN",
    "NOTIFY",
    "DO",
    "DESCRIBE",
    "WITH",
    "VALUES",
    "FETCH",
    "DECLARE",
    "CLOSE",
    "REFRESH",
    "REINDEX",
    "CLUSTER",
    "COMMENT",
    "LOAD",
    "HANDLER",
    "OPTIMIZE",
    "RENAME",
    "DISCARD",
    "RESET",
    "CHECKPOINT",
];

/// Words after which a table name follows.
const TARGET_AFTER: &[&str] = &[
    "FROM", "JOIN", "INTO", "UPDATE", "TABLE", "COPY", "TRUNCATE",
];

/// Object kinds after CREATE/ALTER/DROP that make a two-word operation.
const OBJECTS: &[&str] = &[
    "TABLE",
    "INDEX",
    "VIEW",
    "SCHEMA",
    "DATABASE",
    "SEQUENCE",
    "FUNCTION",
    "PROCEDURE",
    "TRIGGER",
    "TYPE",
    "EXTENSION",
    "USER",
    "ROLE",
    "MATERIALIZED",
];

/// Words that can sit between a target keyword and the name.
const SKIP: &[&str] = &[
    "IF",
    "NOT",
    "EXISTS",
    "ONLY",
    "LATERAL",
    "TEMP",
    "TEMPORARY",
    "UNLOGGED",
    "IGNORE",
    "LOW_PRIORITY",
    "DELAYED",
    "HIGH_PRIORITY",
    "QUICK",
];

/// Words that are never table names (a subquery, a function, a keyword).
const NOT_TABLES: &[&str] = &[
    "SELECT",
    "WHERE",
    "SET",
    "VALUES",
    "DEFAULT",
    "AS",
    "ON",
    "USING",
    "GROUP",
    "ORDER",
    "LIMIT",
    "STDIN",
    "STDOUT",
    "UNNEST",
    "GENERATE_SERIES",
    "DUAL",
];

/// The operation, single table and summary of `query`.
pub fn summarize(query: &str, dialect: Dialect) -> Summary {
    let toks = tokens(query, dialect);
    let mut parts: Vec<String> = Vec::new();
    let mut operation: Option<String> = None;
    let mut tables: Vec<String> = Vec::new();
    let mut i = 0;
    let mut stmt_start = true;
    while i < toks.len() {
        let t = toks[i];
        if t.text == ";" {
            stmt_start = true;
            i += 1;
            continue;
        }
        if t.kind != Kind::Word {
            stmt_start = stmt_start && t.text == "(";
            i += 1;
            continue;
        }
        let up = t.text.to_ascii_uppercase();
        // Mid-statement, only sub-statements count (not `FOR UPDATE`, `ON CONFLICT DO UPDATE`).
        let mid_ok = match up.as_str() {
            "SELECT" | "INSERT" | "DELETE" | "VALUES" => true,
            "UPDATE" => !prev_word_is(&toks, i, &["FOR", "KEY", "DO", "ON"]),
            _ => false,
        };
        let is_op = OPERATIONS.contains(&up.as_str()) && (stmt_start || mid_ok);
        if is_op && up != "WITH" && up != "VALUES" {
            let mut op = up.clone();
            if matches!(up.as_str(), "CREATE" | "ALTER" | "DROP") {
                let mut j = i + 1;
                while let Some(n) = toks.get(j).filter(|n| n.kind == Kind::Word) {
                    let nu = n.text.to_ascii_uppercase();
                    if OBJECTS.contains(&nu.as_str()) {
                        op = format!("{up} {}", if nu == "MATERIALIZED" { "VIEW" } else { &nu });
                        break;
                    }
                    if !matches!(
                        nu.as_str(),
                        "OR" | "REPLACE"
                            | "TEMP"
                            | "TEMPORARY"
                            | "UNIQUE"
                            | "UNLOGGED"
                            | "GLOBAL"
                            | "LOCAL"
                    ) {
                        break;
                    }
                    j += 1;
                }
            }
            if operation.is_none() {
                operation = Some(op.clone());
            }
            parts.push(op);
        }
        if (is_op || up != "UPDATE")
            && TARGET_AFTER.contains(&up.as_str())
            && let Some((name, next)) = target(&toks, i + 1)
        {
            if !tables.contains(&name) {
                tables.push(name.clone());
            }
            if parts.last() != Some(&name) {
                parts.push(name);
            }
            i = next;
            stmt_start = false;
            continue;
        }
        stmt_start = false;
        i += 1;
    }
    let mut summary = String::new();
    for p in &parts {
        if summary.len() + p.len() + 1 > MAX_SUMMARY {
            break;
        }
        if !summary.is_empty() {
            summary.push(' ');
        }
        summary.push_str(p);
    }
    Summary {
        operation,
        collection: (tables.len() == 1).then(|| tables.remove(0)),
        summary: (!summary.is_empty()).then_some(summary),
    }
}

fn prev_word_is(toks: &[Token<'_>], i: usize, words: &[&str]) -> bool {
    i > 0
        && words
            .iter()
            .any(|w| toks[i - 1].text.eq_ignore_ascii_case(w))
}

/// A (possibly qualified, possibly quoted) table name at `toks[i..]`, and the index after it.
fn target(toks: &[Token<'_>], mut i: usize) -> Option<(String, usize)> {
    while let Some(t) = toks.get(i)
        && t.kind == Kind::Word
        && SKIP.iter().any(|s| t.text.eq_ignore_ascii_case(s))
    {
        i += 1;
    }
    let mut name = String::new();
    loop {
        let t = toks.get(i)?;
        match t.kind {
            Kind::Word => {
                if name.is_empty() && NOT_TABLES.iter().any(|s| t.text.eq_ignore_ascii_case(s)) {
                    return None;
                }
                name.push_str(t.text);
            }
            Kind::QuotedIdent => {
                let inner = t.text.get(1..t.text.len().saturating_sub(1)).unwrap_or("");
                name.push_str(inner);
            }
            _ => return None,
        }
        i += 1;
        match toks.get(i) {
            Some(d) if d.text == "." && !d.spaced => {
                name.push('.');
                i += 1;
            }
            // A function call, not a table.
            Some(p) if p.text == "(" && !p.spaced && name.contains('.') => return None,
            _ => break,
        }
    }
    (!name.is_empty()).then_some((name, i))
}
