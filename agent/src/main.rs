//! The `sonde` binary: the allocator, then the command line ([`sonde::cli`]).

/// mimalloc: the agent allocates and frees small buffers for every event and span, where
/// glibc's malloc took about a fifth of its CPU (`bench/profile.sh`). Without transparent huge
/// pages (`no_thp`): a batch's encode buffer would otherwise fault in, and zero, 2 MiB pages
/// each time it is allocated again, and RSS would grow by whole huge pages. When freed memory
/// goes back to the OS: [`sonde::alloc`].
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    sonde::alloc::startup();
    sonde::cli::main()
}
