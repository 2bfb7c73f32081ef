//! HPACK against an independent encoder (`httlib-hpack`): random header lists, encoded block
//! after block on one connection with random representations (Huffman or not, indexed, with or
//! without indexing, never indexed, table size updates that force evictions), must decode to
//! exactly what was encoded. And after the decoder forgets its table at a random block (a
//! missed block), what it still reports must be exactly the sent fields minus the unrecovered
//! ones, in order.

mod common;

use common::Rng;
use httlib_hpack::Encoder;
use sonde_protocol::http2::Headers;
use sonde_protocol::http2::hpack::{Decoder, DecoderLimits, Outcome};

type Field = (Vec<u8>, Vec<u8>);

const NAMES: &[&str] = &[
    ":method",
    ":path",
    ":authority",
    ":status",
    "content-type",
    "user-agent",
    "grpc-status",
    "grpc-message",
    "x-request-id",
    "cookie",
    "te",
];

const VALUES: &[&str] = &[
    "GET",
    "/",
    "/pkg.Service/Method",
    "application/grpc",
    "200",
    "0",
    "trailers",
    "example.com:443",
];

fn name(rng: &mut Rng) -> Vec<u8> {
    if rng.below(3) > 0 {
        return NAMES[rng.below(NAMES.len())].as_bytes().to_vec();
    }
    const TCHAR: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789-_.!#$%&'*+^`|~";
    (0..1 + rng.below(20))
        .map(|_| TCHAR[rng.below(TCHAR.len())])
        .collect()
}

fn value(rng: &mut Rng) -> Vec<u8> {
    match rng.below(4) {
        0 | 1 => VALUES[rng.below(VALUES.len())].as_bytes().to_vec(),
        2 => (0..rng.below(300))
            .map(|_| match rng.next() as u8 {
                0 | b'\r' | b'\n' => b'x',
                b => b,
            })
            .collect(),
        _ => (0..rng.below(40))
            .map(|_| b' ' + (rng.below(95) as u8))
            .collect(),
    }
}

/// Encodes one block with random representations; returns the bytes and the fields.
fn encode_block(
    rng: &mut Rng,
    enc: &mut Encoder<'_>,
    resize: Option<u32>,
) -> (Vec<u8>, Vec<Field>) {
    let mut dst = Vec::new();
    if let Some(size) = resize {
        enc.update_max_dynamic_size(size, &mut dst)
            .expect("size update");
    }
    let mut fields = Vec::new();
    for _ in 0..rng.below(12) {
        let (n, v) = (name(rng), value(rng));
        let mut flags = 0u8;
        if rng.below(2) == 0 {
            flags |= Encoder::HUFFMAN_NAME;
        }
        if rng.below(2) == 0 {
            flags |= Encoder::HUFFMAN_VALUE;
        }
        flags |= match rng.below(4) {
            0 => 0,
            1 => Encoder::NEVER_INDEXED,
            _ => Encoder::WITH_INDEXING,
        };
        if rng.below(3) > 0 {
            flags |= Encoder::BEST_FORMAT;
        }
        enc.encode((n.clone(), v.clone(), flags), &mut dst)
            .expect("encodes");
        fields.push((n, v));
    }
    (dst, fields)
}

fn decoded(h: &Headers) -> Vec<Field> {
    h.iter()
        .map(|(n, v)| (n.as_bytes().to_vec(), v.to_vec()))
        .collect()
}

#[test]
fn random_header_lists_round_trip() {
    let mut rng = Rng(31);
    let mut blocks = 0;
    for conn in 0..200 {
        let mut enc = Encoder::default();
        let mut dec = Decoder::new(DecoderLimits::default());
        dec.set_size_limit(Some(4096));
        for b in 0..20 {
            let resize = match rng.below(10) {
                0 => Some([0, 64, 256, 1024, 4096][rng.below(5)]),
                _ if b == 0 && conn % 2 == 0 => Some(256),
                _ => None,
            };
            let (bytes, fields) = encode_block(&mut rng, &mut enc, resize);
            let mut h = Headers::default();
            let outcome = dec.decode(&bytes, &mut h).expect("decodes");
            assert_eq!(decoded(&h), fields, "connection {conn} block {b}");
            assert!(h.is_exact() && outcome == Outcome::default());
            assert!(dec.table().is_complete());
            assert!(dec.table().size() <= dec.table().max_size());
            blocks += 1;
        }
    }
    assert_eq!(blocks, 4000);
}

#[test]
fn after_a_missed_block_what_is_reported_is_exactly_right() {
    let mut rng = Rng(32);
    let (mut recovered_dynamic, mut unrecovered) = (0usize, 0u32);
    for conn in 0..300 {
        let mut enc = Encoder::default();
        let mut dec = Decoder::new(DecoderLimits::default());
        let forget_at = rng.below(10);
        for b in 0..20 {
            let resize = (rng.below(25) == 0).then(|| [0, 256, 4096][rng.below(3)]);
            let (bytes, fields) = encode_block(&mut rng, &mut enc, resize);
            if b == forget_at {
                // This block is "missed": not decoded at all.
                dec.forget();
                continue;
            }
            let mut h = Headers::default();
            dec.decode(&bytes, &mut h).expect("decodes");
            let got = decoded(&h);
            // What is reported is the sent list with the unrecovered fields left out, in order.
            let mut sent = fields.iter();
            for f in &got {
                assert!(
                    sent.any(|s| s == f),
                    "connection {conn} block {b}: {f:?} not sent (or out of order)"
                );
            }
            assert_eq!(
                got.len() + h.unrecovered_count() as usize,
                fields.len(),
                "connection {conn} block {b}: every field is reported or counted"
            );
            if b > forget_at {
                unrecovered += h.unrecovered_count();
                // Fields that came from the dynamic table although it was forgotten: entries
                // inserted after the loss, trusted at their new positions.
                recovered_dynamic += got
                    .iter()
                    .filter(|(n, v)| {
                        !sonde_protocol::http2::hpack::STATIC
                            .iter()
                            .any(|(sn, sv)| sn.as_bytes() == n && sv.as_bytes() == v)
                    })
                    .count();
            }
        }
    }
    assert!(unrecovered > 100, "{unrecovered}: the loss never mattered");
    assert!(recovered_dynamic > 1000, "{recovered_dynamic}");
}

#[test]
fn tight_limits_never_break_the_table() {
    // Strings over the limit are skipped as placeholders; a table under its cap stays in step
    // with the encoder's (every field that is reported is right).
    let mut rng = Rng(33);
    for conn in 0..100 {
        let mut enc = Encoder::default();
        let limits = DecoderLimits {
            max_string_bytes: 24,
            max_list_bytes: 400,
            max_table_bytes: 4096,
        };
        let mut dec = Decoder::new(limits);
        for b in 0..20 {
            let (bytes, fields) = encode_block(&mut rng, &mut enc, None);
            let mut h = Headers::default();
            dec.decode(&bytes, &mut h).expect("decodes");
            let mut sent = fields.iter();
            for f in &decoded(&h) {
                assert!(sent.any(|s| s == f), "connection {conn} block {b}: {f:?}");
            }
            assert!(h.size() <= 400);
        }
    }
}
