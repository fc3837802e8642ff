//! The `ydht` binary: all logic lives in the library.

/// mimalloc instead of the system allocator: the services allocate many small,
/// short-lived buffers per request on several threads, where glibc's malloc spent
/// ~15% of a loaded cluster's CPU (bench/RESULTS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    ydht::cli::main()
}
