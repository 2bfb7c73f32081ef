//! Huffman decoding of HPACK string literals (RFC 7541 §5.2 and Appendix B).
//!
//! Table-driven, four bits at a time, as nghttp2 and h2 do: the code tree's 256 internal nodes
//! are the states, and `DECODE[state][nibble]` says where the nibble leads, which symbol (if
//! any) it completed, and whether the string may end there. The table is computed at compile
//! time from the RFC's code list, so the only hand-copied data is that list.
//!
//! ```text
//! string  = *symbol padding
//! symbol  = 5 to 30 bits (codes below), most significant bit first
//! padding = the most significant bits of EOS (all ones), fewer than 8 of them
//! ```
//!
//! A code never completes more than one symbol per nibble (the shortest is 5 bits), so one
//! table step emits at most one byte. Decoding EOS, or ending inside a code on anything but
//! up to seven 1 bits, is an error (RFC 7541 §5.2).

/// Why a Huffman-coded string is invalid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum HuffmanError {
    /// The string contains the EOS symbol.
    #[error("Huffman string contains EOS")]
    Eos,
    /// The string ends inside a code, on more than 7 bits or on bits that are not all ones.
    #[error("Huffman string has invalid padding")]
    Padding,
}

/// `(code, bit length)` of symbols 0..=255 and EOS (256), RFC 7541 Appendix B.
pub(crate) const CODES: [(u32, u8); 257] = [
    (0x1ff8, 13),
    (0x7fffd8, 23),
    (0xfffffe2, 28),
    (0xfffffe3, 28),
    (0xfffffe4, 28),
    (0xfffffe5, 28),
    (0xfffffe6, 28),
    (0xfffffe7, 28),
    (0xfffffe8, 28),
    (0xffffea, 24),
    (0x3ffffffc, 30),
    (0xfffffe9, 28),
    (0xfffffea, 28),
    (0x3ffffffd, 30),
    (0xfffffeb, 28),
    (0xfffffec, 28),
    (0xfffffed, 28),
    (0xfffffee, 28),
    (0xfffffef, 28),
    (0xffffff0, 28),
    (0xffffff1, 28),
    (0xffffff2, 28),
    (0x3ffffffe, 30),
    (0xffffff3, 28),
    (0xffffff4, 28),
    (0xffffff5, 28),
    (0xffffff6, 28),
    (0xffffff7, 28),
    (0xffffff8, 28),
    (0xffffff9, 28),
    (0xffffffa, 28),
    (0xffffffb, 28),
    (0x14, 6),
    (0x3f8, 10),
    (0x3f9, 10),
    (0xffa, 12),
    (0x1ff9, 13),
    (0x15, 6),
    (0xf8, 8),
    (0x7fa, 11),
    (0x3fa, 10),
    (0x3fb, 10),
    (0xf9, 8),
    (0x7fb, 11),
    (0xfa, 8),
    (0x16, 6),
    (0x17, 6),
    (0x18, 6),
    (0x0, 5),
    (0x1, 5),
    (0x2, 5),
    (0x19, 6),
    (0x1a, 6),
    (0x1b, 6),
    (0x1c, 6),
    (0x1d, 6),
    (0x1e, 6),
    (0x1f, 6),
    (0x5c, 7),
    (0xfb, 8),
    (0x7ffc, 15),
    (0x20, 6),
    (0xffb, 12),
    (0x3fc, 10),
    (0x1ffa, 13),
    (0x21, 6),
    (0x5d, 7),
    (0x5e, 7),
    (0x5f, 7),
    (0x60, 7),
    (0x61, 7),
    (0x62, 7),
    (0x63, 7),
    (0x64, 7),
    (0x65, 7),
    (0x66, 7),
    (0x67, 7),
    (0x68, 7),
    (0x69, 7),
    (0x6a, 7),
    (0x6b, 7),
    (0x6c, 7),
    (0x6d, 7),
    (0x6e, 7),
    (0x6f, 7),
    (0x70, 7),
    (0x71, 7),
    (0x72, 7),
    (0xfc, 8),
    (0x73, 7),
    (0xfd, 8),
    (0x1ffb, 13),
    (0x7fff0, 19),
    (0x1ffc, 13),
    (0x3ffc, 14),
    (0x22, 6),
    (0x7ffd, 15),
    (0x3, 5),
    (0x23, 6),
    (0x4, 5),
    (0x24, 6),
    (0x5, 5),
    (0x25, 6),
    (0x26, 6),
    (0x27, 6),
    (0x6, 5),
    (0x74, 7),
    (0x75, 7),
    (0x28, 6),
    (0x29, 6),
    (0x2a, 6),
    (0x7, 5),
    (0x2b, 6),
    (0x76, 7),
    (0x2c, 6),
    (0x8, 5),
    (0x9, 5),
    (0x2d, 6),
    (0x77, 7),
    (0x78, 7),
    (0x79, 7),
    (0x7a, 7),
    (0x7b, 7),
    (0x7ffe, 15),
    (0x7fc, 11),
    (0x3ffd, 14),
    (0x1ffd, 13),
    (0xffffffc, 28),
    (0xfffe6, 20),
    (0x3fffd2, 22),
    (0xfffe7, 20),
    (0xfffe8, 20),
    (0x3fffd3, 22),
    (0x3fffd4, 22),
    (0x3fffd5, 22),
    (0x7fffd9, 23),
    (0x3fffd6, 22),
    (0x7fffda, 23),
    (0x7fffdb, 23),
    (0x7fffdc, 23),
    (0x7fffdd, 23),
    (0x7fffde, 23),
    (0xffffeb, 24),
    (0x7fffdf, 23),
    (0xffffec, 24),
    (0xffffed, 24),
    (0x3fffd7, 22),
    (0x7fffe0, 23),
    (0xffffee, 24),
    (0x7fffe1, 23),
    (0x7fffe2, 23),
    (0x7fffe3, 23),
    (0x7fffe4, 23),
    (0x1fffdc, 21),
    (0x3fffd8, 22),
    (0x7fffe5, 23),
    (0x3fffd9, 22),
    (0x7fffe6, 23),
    (0x7fffe7, 23),
    (0xffffef, 24),
    (0x3fffda, 22),
    (0x1fffdd, 21),
    (0xfffe9, 20),
    (0x3fffdb, 22),
    (0x3fffdc, 22),
    (0x7fffe8, 23),
    (0x7fffe9, 23),
    (0x1fffde, 21),
    (0x7fffea, 23),
    (0x3fffdd, 22),
    (0x3fffde, 22),
    (0xfffff0, 24),
    (0x1fffdf, 21),
    (0x3fffdf, 22),
    (0x7fffeb, 23),
    (0x7fffec, 23),
    (0x1fffe0, 21),
    (0x1fffe1, 21),
    (0x3fffe0, 22),
    (0x1fffe2, 21),
    (0x7fffed, 23),
    (0x3fffe1, 22),
    (0x7fffee, 23),
    (0x7fffef, 23),
    (0xfffea, 20),
    (0x3fffe2, 22),
    (0x3fffe3, 22),
    (0x3fffe4, 22),
    (0x7ffff0, 23),
    (0x3fffe5, 22),
    (0x3fffe6, 22),
    (0x7ffff1, 23),
    (0x3ffffe0, 26),
    (0x3ffffe1, 26),
    (0xfffeb, 20),
    (0x7fff1, 19),
    (0x3fffe7, 22),
    (0x7ffff2, 23),
    (0x3fffe8, 22),
    (0x1ffffec, 25),
    (0x3ffffe2, 26),
    (0x3ffffe3, 26),
    (0x3ffffe4, 26),
    (0x7ffffde, 27),
    (0x7ffffdf, 27),
    (0x3ffffe5, 26),
    (0xfffff1, 24),
    (0x1ffffed, 25),
    (0x7fff2, 19),
    (0x1fffe3, 21),
    (0x3ffffe6, 26),
    (0x7ffffe0, 27),
    (0x7ffffe1, 27),
    (0x3ffffe7, 26),
    (0x7ffffe2, 27),
    (0xfffff2, 24),
    (0x1fffe4, 21),
    (0x1fffe5, 21),
    (0x3ffffe8, 26),
    (0x3ffffe9, 26),
    (0xffffffd, 28),
    (0x7ffffe3, 27),
    (0x7ffffe4, 27),
    (0x7ffffe5, 27),
    (0xfffec, 20),
    (0xfffff3, 24),
    (0xfffed, 20),
    (0x1fffe6, 21),
    (0x3fffe9, 22),
    (0x1fffe7, 21),
    (0x1fffe8, 21),
    (0x7ffff3, 23),
    (0x3fffea, 22),
    (0x3fffeb, 22),
    (0x1ffffee, 25),
    (0x1ffffef, 25),
    (0xfffff4, 24),
    (0xfffff5, 24),
    (0x3ffffea, 26),
    (0x7ffff4, 23),
    (0x3ffffeb, 26),
    (0x7ffffe6, 27),
    (0x3ffffec, 26),
    (0x3ffffed, 26),
    (0x7ffffe7, 27),
    (0x7ffffe8, 27),
    (0x7ffffe9, 27),
    (0x7ffffea, 27),
    (0x7ffffeb, 27),
    (0xffffffe, 28),
    (0x7ffffec, 27),
    (0x7ffffed, 27),
    (0x7ffffee, 27),
    (0x7ffffef, 27),
    (0x7fffff0, 27),
    (0x3ffffee, 26),
    (0x3fffffff, 30),
];

const EOS: usize = 256;
/// A child that is a leaf: the symbol is in the low bits.
const LEAF: u16 = 0x8000;

/// Children `[bit 0, bit 1]` of each internal node (node 0 is the root). A child is another
/// node's index or `LEAF | symbol`; 0 never appears, since the root is nobody's child.
const TREE: [[u16; 2]; 256] = build_tree();

const fn build_tree() -> [[u16; 2]; 256] {
    let mut tree = [[0u16; 2]; 256];
    let mut used = 1;
    let mut sym = 0;
    while sym < CODES.len() {
        let (code, len) = CODES[sym];
        let mut node = 0;
        let mut bit = len as u32;
        while bit > 1 {
            bit -= 1;
            let b = ((code >> bit) & 1) as usize;
            if tree[node][b] == 0 {
                tree[node][b] = used as u16;
                used += 1;
            }
            node = tree[node][b] as usize;
        }
        tree[node][(code & 1) as usize] = LEAF | sym as u16;
        sym += 1;
    }
    // 257 leaves of a full binary tree hang from exactly 256 internal nodes.
    assert!(used == 256);
    tree
}

/// The step emits `sym`.
const EMIT: u8 = 1;
/// The step decoded EOS: the string is invalid.
const FAIL: u8 = 2;
/// The string may end after this step: the bits since the last symbol are at most seven ones.
const ACCEPT: u8 = 4;

#[derive(Clone, Copy)]
struct Step {
    next: u8,
    sym: u8,
    flags: u8,
}

const DECODE: [[Step; 16]; 256] = build_decode();

/// Whether a string may end in `node`: the root, or one of the first seven nodes on the path
/// of 1 bits (a proper prefix of EOS shorter than 8 bits).
const fn accepting(node: usize) -> bool {
    let mut n = 0;
    let mut depth = 0;
    while depth <= 7 {
        if n == node {
            return true;
        }
        let child = TREE[n][1];
        if child & LEAF != 0 {
            return false;
        }
        n = child as usize;
        depth += 1;
    }
    false
}

const fn build_decode() -> [[Step; 16]; 256] {
    let empty = Step {
        next: 0,
        sym: 0,
        flags: 0,
    };
    let mut table = [[empty; 16]; 256];
    let mut state = 0;
    while state < 256 {
        let mut nibble = 0;
        while nibble < 16 {
            let mut node = state;
            let mut step = empty;
            let mut bit = 4;
            while bit > 0 {
                bit -= 1;
                let child = TREE[node][(nibble >> bit) & 1];
                if child & LEAF == 0 {
                    node = child as usize;
                } else if (child & !LEAF) as usize == EOS {
                    step.flags |= FAIL;
                    break;
                } else {
                    step.flags |= EMIT;
                    step.sym = (child & !LEAF) as u8;
                    node = 0;
                }
            }
            if step.flags & FAIL == 0 && accepting(node) {
                step.flags |= ACCEPT;
            }
            step.next = node as u8;
            table[state][nibble] = step;
            nibble += 1;
        }
        state += 1;
    }
    table
}

/// Decodes `src`, appending at most `max` bytes to `dst`; returns the decoded length, which
/// may exceed `max` (the rest is validated and counted, not stored).
pub(crate) fn decode(src: &[u8], dst: &mut Vec<u8>, max: usize) -> Result<usize, HuffmanError> {
    let room = max.min(src.len().saturating_mul(8) / 5);
    let start = dst.len();
    let mut len = 0usize;
    let mut state = 0u8;
    let mut accept = true;
    for &byte in src {
        for nibble in [byte >> 4, byte & 0x0f] {
            let step = DECODE[usize::from(state)][usize::from(nibble)];
            if step.flags & FAIL != 0 {
                dst.truncate(start);
                return Err(HuffmanError::Eos);
            }
            if step.flags & EMIT != 0 {
                if len < room {
                    dst.push(step.sym);
                }
                len += 1;
            }
            state = step.next;
            accept = step.flags & ACCEPT != 0;
        }
    }
    if !accept {
        dst.truncate(start);
        return Err(HuffmanError::Padding);
    }
    Ok(len)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A plain bit-by-bit encoder, the independent reference for the table-driven decoder.
    pub(crate) fn encode(src: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let (mut acc, mut bits) = (0u64, 0u32);
        for &b in src {
            let (code, len) = CODES[usize::from(b)];
            acc = (acc << len) | u64::from(code);
            bits += u32::from(len);
            while bits >= 8 {
                bits -= 8;
                out.push((acc >> bits) as u8);
            }
        }
        if bits > 0 {
            out.push(((acc << (8 - bits)) | (0xff >> bits)) as u8);
        }
        out
    }

    fn dec(src: &[u8]) -> Result<Vec<u8>, HuffmanError> {
        let mut v = Vec::new();
        decode(src, &mut v, usize::MAX).map(|n| {
            assert_eq!(n, v.len());
            v
        })
    }

    #[test]
    fn codes_are_canonical_and_complete() {
        // Canonical: ordered by (length, symbol), each code is the previous plus one, shifted.
        let mut order: Vec<usize> = (0..257).collect();
        order.sort_by_key(|&s| (CODES[s].1, s));
        let mut code = 0u32;
        for w in order.windows(2) {
            let (a, b) = (CODES[w[0]], CODES[w[1]]);
            code = (code + 1) << (b.1 - a.1);
            assert_eq!(CODES[w[1]].0, code, "symbol {}", w[1]);
        }
        // Complete: the Kraft sum is exactly 1.
        let kraft: u64 = CODES.iter().map(|&(_, l)| 1u64 << (30 - l)).sum();
        assert_eq!(kraft, 1 << 30);
        assert_eq!(CODES[EOS], (0x3fff_ffff, 30));
    }

    #[test]
    fn rfc7541_appendix_c4_strings() {
        let cases: &[(&str, &str)] = &[
            ("f1e3c2e5f23a6ba0ab90f4ff", "www.example.com"),
            ("a8eb10649cbf", "no-cache"),
            ("25a849e95ba97d7f", "custom-key"),
            ("25a849e95bb8e8b4bf", "custom-value"),
            ("6402", "302"),
            ("aec3771a4b", "private"),
            (
                "d07abe941054d444a8200595040b8166e082a62d1bff",
                "Mon, 21 Oct 2013 20:13:21 GMT",
            ),
            (
                "9d29ad171863c78f0b97c8e9ae82ae43d3",
                "https://www.example.com",
            ),
            (
                "94e7821dd7f2e6c7b335dfdfcd5b3960d5af27087f3672c1ab270fb5291f9587316065c003ed4ee5b1063d5007",
                "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1",
            ),
        ];
        for (hex, text) in cases {
            let bytes = hex_bytes(hex);
            assert_eq!(dec(&bytes).as_deref(), Ok(text.as_bytes()), "{text}");
            assert_eq!(encode(text.as_bytes()), bytes, "{text}");
        }
    }

    #[test]
    fn every_byte_round_trips_alone_and_in_runs() {
        for b in 0..=255u8 {
            for n in [1, 2, 3, 7] {
                let s = vec![b; n];
                assert_eq!(dec(&encode(&s)), Ok(s), "byte {b} x{n}");
            }
        }
        let all: Vec<u8> = (0..=255).chain((0..=255).rev()).collect();
        assert_eq!(dec(&encode(&all)), Ok(all));
    }

    #[test]
    fn padding_rules() {
        assert_eq!(dec(&[]), Ok(Vec::new()));
        // '0' is 00000 (5 bits) + 111 padding.
        assert_eq!(dec(&[0x07]), Ok(b"0".to_vec()));
        // Padding with a 0 bit.
        assert_eq!(dec(&[0x06]), Err(HuffmanError::Padding));
        // A whole byte of padding (8 ones) is too long.
        assert_eq!(dec(&[0x07, 0xff]), Err(HuffmanError::Padding));
        // 'a' (00011) then 11: padding shorter than 8 bits is fine... followed by a cut code.
        assert_eq!(dec(&[0x1f]), Ok(b"a".to_vec()));
        // Ending inside a long code whose prefix is not all ones.
        assert_eq!(dec(&[0xfe]), Err(HuffmanError::Padding));
        // EOS itself: 30 ones, then 2 more ones of padding.
        assert_eq!(dec(&[0xff, 0xff, 0xff, 0xff]), Err(HuffmanError::Eos));
    }

    #[test]
    fn output_is_capped_but_counted() {
        let text = b"www.example.com";
        let enc = encode(text);
        let mut v = b"xy".to_vec();
        assert_eq!(decode(&enc, &mut v, 4), Ok(15));
        assert_eq!(v, b"xywww.");
        // On error nothing is left behind.
        let mut v = b"xy".to_vec();
        let mut bad = enc.clone();
        bad.push(0xff);
        assert_eq!(decode(&bad, &mut v, 100), Err(HuffmanError::Padding));
        assert_eq!(v, b"xy");
    }

    pub(crate) fn hex_bytes(hex: &str) -> Vec<u8> {
        let hex: Vec<u8> = hex.bytes().filter(u8::is_ascii_hexdigit).collect();
        hex.chunks(2)
            .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
            .collect()
    }
}
