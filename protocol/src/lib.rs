//! Pure protocol parsers: `&[u8]` in, values out. No aya, tokio or kube here, so parsers are
//! tested, fuzzed and benchmarked without root and build fast.
