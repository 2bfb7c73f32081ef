#![no_std]
//! Host-side stub: lets `agent` build-depend on this crate so cargo rebuilds the kernel
//! programs (the `sonde` binary target, built for bpfel by aya-build) when they change.
