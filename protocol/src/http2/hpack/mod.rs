//! HPACK (RFC 7541) decoding for a passive observer: one [`Decoder`] per direction of a
//! connection, fed every header block of that direction in order.
//!
//! Laid out like h2's `hpack`: `huffman` decodes string literals, `table` holds the static and
//! dynamic tables (and the rule for what an observer that missed inserts may still trust),
//! `decoder` reads the field representations. There is no encoder: sonde only listens. The
//! tests check the decoder against every example of RFC 7541 Appendix C and, in
//! `tests/hpack_roundtrip.rs`, against an independent encoder.

mod decoder;
mod huffman;
mod table;

pub use decoder::{Decoder, DecoderError, DecoderLimits, Outcome};
pub use huffman::HuffmanError;
pub use table::{DEFAULT_TABLE_SIZE, ENTRY_OVERHEAD, Lookup, STATIC, Table};
