//! HPACK decoding of arbitrary header blocks, and round trips through an independent encoder.
//!
//! ```text
//! first byte bit 0 = 0: decode mode. The rest is blocks, each `len` (1 byte) then `len` bytes,
//!                       decoded in order by a decoder from the connection's start and by one
//!                       joined mid-connection, both under tight limits.
//! first byte bit 0 = 1: round-trip mode. The rest is fields `name-len value-len flags name
//!                       value`, made valid (lower-case token names, no CR/LF/NUL in values),
//!                       encoded by httlib-hpack into blocks of up to 8 fields, and decoded.
//! ```
//!
//! Checks: no panic; the table and every decoded list stay within the limits; a decoder that
//! joined late never reports a field the complete one does not (in the same place); round
//! trips give back exactly the fields encoded.
#![no_main]

use httlib_hpack::Encoder;
use libfuzzer_sys::fuzz_target;
use sonde_protocol::http2::Headers;
use sonde_protocol::http2::hpack::{Decoder, DecoderLimits};

const LIMITS: DecoderLimits = DecoderLimits {
    max_string_bytes: 64,
    max_list_bytes: 512,
    max_table_bytes: 256,
};

fn fields(h: &Headers) -> Vec<(String, Vec<u8>)> {
    h.iter().map(|(n, v)| (n.to_string(), v.to_vec())).collect()
}

fn decode_mode(mut data: &[u8]) {
    let mut full = Decoder::new(LIMITS);
    let mut late = Decoder::unsynced(LIMITS);
    while let [len, rest @ ..] = data {
        let n = usize::from(*len).min(rest.len());
        let (block, tail) = rest.split_at(n);
        data = tail;
        let (mut a, mut b) = (Headers::default(), Headers::default());
        let ra = full.decode(block, &mut a);
        let rb = late.decode(block, &mut b);
        for (d, h) in [(&full, &a), (&late, &b)] {
            assert!(d.table().size() <= LIMITS.max_table_bytes);
            assert!(h.size() <= LIMITS.max_list_bytes);
        }
        // Where the complete decoder succeeded, the late one reports a subsequence of it.
        if ra.is_ok() && rb.is_ok() && full.table().is_complete() {
            let all = fields(&a);
            let mut it = all.iter();
            for f in fields(&b) {
                assert!(it.any(|g| *g == f), "late decoder invented {f:?}");
            }
        }
    }
}

fn roundtrip_mode(mut data: &[u8]) {
    let mut enc = Encoder::default();
    let mut dec = Decoder::new(DecoderLimits::default());
    let mut block = Vec::new();
    let mut sent = Vec::new();
    let flush = |block: &mut Vec<u8>, sent: &mut Vec<(String, Vec<u8>)>, dec: &mut Decoder| {
        let mut h = Headers::default();
        dec.decode(block, &mut h).expect("an encoded block decodes");
        assert_eq!(fields(&h), *sent);
        block.clear();
        sent.clear();
    };
    while let [nl, vl, flags, rest @ ..] = data {
        let (nl, vl) = (usize::from(*nl % 32) + 1, usize::from(*vl));
        if rest.len() < nl + vl {
            break;
        }
        const TCHAR: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789-_.!#$%&'*+^`|~";
        let name: String = rest[..nl]
            .iter()
            .map(|b| TCHAR[usize::from(*b) % TCHAR.len()] as char)
            .collect();
        let value: Vec<u8> = rest[nl..nl + vl]
            .iter()
            .map(|&b| {
                if matches!(b, 0 | b'\r' | b'\n') {
                    b'x'
                } else {
                    b
                }
            })
            .collect();
        data = &rest[nl + vl..];
        let flags = flags & 0x1f & !(if flags & 4 != 0 { 8 } else { 0 });
        enc.encode(
            (name.clone().into_bytes(), value.clone(), flags),
            &mut block,
        )
        .expect("encodes");
        sent.push((name, value));
        if sent.len() == 8 {
            flush(&mut block, &mut sent, &mut dec);
        }
    }
    flush(&mut block, &mut sent, &mut dec);
}

fuzz_target!(|data: &[u8]| {
    match data.split_first() {
        Some((mode, rest)) if mode & 1 == 1 => roundtrip_mode(rest),
        Some((_, rest)) => decode_mode(rest),
        None => {}
    }
});
