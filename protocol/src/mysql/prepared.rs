//! The prepared statements of one connection by statement id, so that `COM_STMT_EXECUTE`
//! reports the text `COM_STMT_PREPARE` sent, within bounds the client cannot move: at most
//! `Limits::max_statements` statements and [`MAX_STATEMENT_BYTES`] of text. Past a limit the
//! least recently used statement is let go (the caller counts it), and its executions report
//! no text and say it was evicted. Once anything was let go, an id not found may be one of
//! those: it is reported evicted too, never given another statement's text.

use std::collections::HashMap;
use std::sync::Arc;

use crate::db::{MAX_STATEMENT_BYTES, TextId, Texts};
use crate::mem;

#[derive(Debug, Default)]
pub(super) struct Prepared {
    texts: Texts,
    statements: HashMap<u32, TextId>,
    /// A statement was let go at a limit since the last `clear`.
    forgot: bool,
}

/// What an execution of a statement id runs.
#[derive(Debug, Default)]
pub(super) struct Run {
    pub query: Option<Arc<str>>,
    pub truncated: bool,
    /// `query` is `None` because the text was let go at a limit.
    pub evicted: bool,
}

impl Prepared {
    /// The server prepared `text` as statement `id`: it replaces any statement of that id, and
    /// lets the least recently used go to make room (`max` statements,
    /// [`MAX_STATEMENT_BYTES`]). Returns how many were let go (or not kept).
    pub(super) fn prepare(&mut self, id: u32, text: Arc<str>, truncated: bool, max: usize) -> u32 {
        let mut evicted = 0;
        if let Some(old) = self.statements.remove(&id) {
            self.texts.release(old);
        }
        if max == 0 || text.len() > MAX_STATEMENT_BYTES {
            self.forgot = true;
            return 1;
        }
        while self.statements.len() >= max || !self.texts.fits(text.len()) {
            let Some(victim) = self.least_used() else {
                break;
            };
            if let Some(old) = self.statements.remove(&victim) {
                self.texts.release(old);
            }
            self.forgot = true;
            evicted += 1;
        }
        let t = self.texts.add(text, truncated);
        self.statements.insert(id, t);
        evicted
    }

    /// An execution (or reset, or fetch) of statement `id`: its text, shared.
    pub(super) fn execute(&mut self, id: u32) -> Run {
        let found = self.statements.get(&id).and_then(|t| self.texts.get(*t));
        match found {
            Some((query, truncated)) => Run {
                query: Some(query),
                truncated,
                evicted: false,
            },
            None => Run {
                evicted: self.forgot,
                ..Run::default()
            },
        }
    }

    /// `COM_STMT_CLOSE` of `id`.
    pub(super) fn close(&mut self, id: u32) {
        if let Some(t) = self.statements.remove(&id) {
            self.texts.release(t);
        }
    }

    /// The parser lost its place: statements may have been prepared or closed unseen.
    pub(super) fn clear(&mut self) {
        self.statements.clear();
        self.texts.clear();
        self.forgot = false;
    }

    pub(super) fn statements(&self) -> usize {
        self.statements.len()
    }

    /// Bytes of text held: at most [`MAX_STATEMENT_BYTES`].
    pub(super) fn text_bytes(&self) -> usize {
        self.texts.bytes()
    }

    /// Heap bytes: the tables and the texts.
    pub(super) fn heap_bytes(&self) -> usize {
        mem::hash_map(&self.statements) + self.texts.heap_bytes()
    }

    fn least_used(&self) -> Option<u32> {
        self.statements
            .iter()
            .min_by_key(|(_, t)| self.texts.last_use(**t))
            .map(|(id, _)| *id)
    }
}
