//! The input format of the stream fuzz targets (`http1`, `h2_conn` and the database ones):
//! steps of data or of a gap, on either side of one connection.
//!
//! ```text
//! input = *( selector [len] bytes... )
//! selector bit 0      side: 0 request, 1 response
//! selector bits 1..2  0, 1: data of the next `len` bytes; 2: gap of `len` + 1 bytes; 3: data
//!                     of the rest of the input
//! ```
//!
//! The higher bits of the first selector are the targets' own (limits, joining midway).

/// One step, on the side `S` of the parser under test.
pub enum Step<'a, S> {
    Data(S, &'a [u8]),
    Gap(S, u64),
}

/// The steps of `data`, with `request` and `response` for its two sides.
pub fn steps<S: Copy>(mut data: &[u8], request: S, response: S) -> Vec<Step<'_, S>> {
    let mut out = Vec::new();
    while let [sel, rest @ ..] = data {
        let side = if sel & 1 == 0 { request } else { response };
        match (sel >> 1) & 3 {
            3 => {
                out.push(Step::Data(side, rest));
                break;
            }
            kind => {
                let [len, rest @ ..] = rest else { break };
                let len = usize::from(*len);
                if kind == 2 {
                    out.push(Step::Gap(side, len as u64 + 1));
                    data = rest;
                } else {
                    let n = len.min(rest.len());
                    out.push(Step::Data(side, &rest[..n]));
                    data = &rest[n..];
                }
            }
        }
    }
    out
}
