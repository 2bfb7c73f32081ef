//! The `sonde` binary: the allocator tuned, then the command line ([`sonde::cli`]).

fn main() -> std::process::ExitCode {
    tune_allocator();
    sonde::cli::main()
}

/// glibc raises its mmap threshold each time a large mmapped block is freed, so after the
/// start-up frees the kernel BTF (megabytes), later large buffers come from the heap and stay
/// there. A fixed threshold keeps large buffers in their own mappings, returned when freed.
fn tune_allocator() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt before any thread exists; it only sets an allocator parameter.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
    }
}
