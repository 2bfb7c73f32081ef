//! The prepared statements and portals of one connection, so that an `Execute` reports the
//! text its statement was parsed from, within bounds the client cannot move.
//!
//! ```text
//! Parse  "s1" "SELECT .."   statements  s1 ─┐
//! Bind   "p1" "s1"          portals     p1 ─┴→ texts  #7 "SELECT .." refs 2   (one copy)
//! Execute "p1"              → the operation shares #7's text
//! ```
//!
//! At most `Limits::max_statements` statements and as many portals, and at most
//! [`MAX_STATEMENT_BYTES`] of text, each text once. Past a limit the least recently used goes
//! (a text with every statement and portal that refers to it): each one let go is counted by
//! the caller, and an `Execute` that needs it reports no text and says it was evicted. Once
//! anything was let go, a name not found may be one of those: it is reported evicted too,
//! never given another statement's text.

use std::collections::HashMap;
use std::sync::Arc;

use crate::db::{MAX_STATEMENT_BYTES, TextId, Texts};
use crate::mem;

#[derive(Debug, Default)]
pub(super) struct Prepared {
    texts: Texts,
    statements: HashMap<String, TextId>,
    portals: HashMap<String, Portal>,
    /// Something was let go at a limit since the last `clear`.
    forgot: bool,
}

#[derive(Debug)]
struct Portal {
    text: Known,
    /// Its statement's name.
    statement: String,
    /// The tick of its last bind or execution.
    used: u64,
}

/// What a portal knows of its text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Known {
    Text(TextId),
    /// Let go at a limit, or bound to a statement name not found after something was.
    Evicted,
    /// Bound to a statement the observer never saw prepared.
    Unknown,
}

/// What one message made the table let go, for the caller to count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Evicted {
    /// Statements or texts let go (or a statement not kept).
    pub statements: u32,
    /// Portals let go.
    pub portals: u32,
}

/// What an `Execute` of a portal runs.
#[derive(Debug, Default)]
pub(super) struct Run {
    pub query: Option<Arc<str>>,
    pub truncated: bool,
    /// `query` is `None` because the text was let go at a limit.
    pub evicted: bool,
    /// The statement's name, when it has one.
    pub statement: Option<String>,
}

impl Prepared {
    /// A `Parse` of `name`: it replaces any statement of that name, and lets the least
    /// recently used go to make room (`max` statements, [`MAX_STATEMENT_BYTES`]).
    pub(super) fn parse(
        &mut self,
        name: String,
        text: Arc<str>,
        truncated: bool,
        max: usize,
    ) -> Evicted {
        let mut evicted = Evicted::default();
        if let Some(old) = self.statements.remove(&name) {
            self.texts.release(old);
        }
        if max == 0 || text.len() > MAX_STATEMENT_BYTES {
            // Not kept; nor is the old text of the name, which would be wrong.
            self.forgot = true;
            evicted.statements += 1;
            return evicted;
        }
        while self.statements.len() >= max {
            let Some(victim) = self.least_used_statement() else {
                break;
            };
            if let Some(id) = self.statements.remove(&victim) {
                self.texts.release(id);
            }
            self.forgot = true;
            evicted.statements += 1;
        }
        while !self.texts.fits(text.len()) {
            let Some(id) = self.texts.least_used() else {
                break;
            };
            self.drop_text(id);
            evicted.statements += 1;
        }
        let id = self.texts.add(text, truncated);
        self.statements.insert(name, id);
        evicted
    }

    /// A `Bind` of `portal` to `statement`: the portal shares the statement's text; it
    /// replaces any portal of that name, and lets the least recently used go past `max`.
    pub(super) fn bind(&mut self, portal: String, statement: String, max: usize) -> Evicted {
        let mut evicted = Evicted::default();
        let text = match self.statements.get(&statement) {
            Some(&id) => {
                self.texts.retain(id);
                Known::Text(id)
            }
            None if self.forgot => Known::Evicted,
            None => Known::Unknown,
        };
        if let Some(old) = self.portals.remove(&portal) {
            self.release(old.text);
        } else if max == 0 {
            self.release(text);
            self.forgot = true;
            evicted.portals += 1;
            return evicted;
        }
        while self.portals.len() >= max {
            let Some(victim) = self.least_used_portal() else {
                break;
            };
            if let Some(p) = self.portals.remove(&victim) {
                self.release(p.text);
            }
            self.forgot = true;
            evicted.portals += 1;
        }
        let used = self.texts.tick();
        self.portals.insert(
            portal,
            Portal {
                text,
                statement,
                used,
            },
        );
        evicted
    }

    /// An `Execute` of `portal`: its text, shared.
    pub(super) fn execute(&mut self, portal: &str) -> Run {
        let used = self.texts.tick();
        let Some(p) = self.portals.get_mut(portal) else {
            return Run {
                evicted: self.forgot,
                ..Run::default()
            };
        };
        p.used = used;
        let statement = Some(p.statement.clone()).filter(|s| !s.is_empty());
        let (query, truncated, evicted) = match p.text {
            Known::Text(id) => match self.texts.get(id) {
                Some((q, t)) => (Some(q), t, false),
                None => (None, false, true),
            },
            Known::Evicted => (None, false, true),
            Known::Unknown => (None, false, false),
        };
        Run {
            query,
            truncated,
            evicted,
            statement,
        }
    }

    /// A `Close` of statement `name`. Its portals keep its text.
    pub(super) fn close_statement(&mut self, name: &str) {
        if let Some(id) = self.statements.remove(name) {
            self.texts.release(id);
        }
    }

    /// A `Close` of portal `name`.
    pub(super) fn close_portal(&mut self, name: &str) {
        if let Some(p) = self.portals.remove(name) {
            self.release(p.text);
        }
    }

    /// The parser lost its place: statements may have been prepared or closed unseen.
    pub(super) fn clear(&mut self) {
        self.statements.clear();
        self.portals.clear();
        self.texts.clear();
        self.forgot = false;
    }

    pub(super) fn statements(&self) -> usize {
        self.statements.len()
    }

    pub(super) fn portals(&self) -> usize {
        self.portals.len()
    }

    /// Bytes of text held (each text once): at most [`MAX_STATEMENT_BYTES`].
    pub(super) fn text_bytes(&self) -> usize {
        self.texts.bytes()
    }

    /// Heap bytes: the names, the tables and the texts.
    pub(super) fn heap_bytes(&self) -> usize {
        let statements: usize = self.statements.keys().map(String::capacity).sum();
        let portals: usize = self
            .portals
            .iter()
            .map(|(name, p)| name.capacity() + p.statement.capacity())
            .sum();
        mem::hash_map(&self.statements)
            + statements
            + mem::hash_map(&self.portals)
            + portals
            + self.texts.heap_bytes()
    }

    fn release(&mut self, text: Known) {
        if let Known::Text(id) = text {
            self.texts.release(id);
        }
    }

    /// Lets text `id` go with every statement and portal that refers to it.
    fn drop_text(&mut self, id: TextId) {
        self.texts.evict(id);
        self.statements.retain(|_, t| *t != id);
        for p in self.portals.values_mut() {
            if p.text == Known::Text(id) {
                p.text = Known::Evicted;
            }
        }
        self.forgot = true;
    }

    fn least_used_statement(&self) -> Option<String> {
        self.statements
            .iter()
            .min_by_key(|(_, id)| self.texts.last_use(**id))
            .map(|(name, _)| name.clone())
    }

    fn least_used_portal(&self) -> Option<String> {
        self.portals
            .iter()
            .min_by_key(|(_, p)| p.used)
            .map(|(name, _)| name.clone())
    }
}
