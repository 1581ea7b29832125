//! The `pettracker` binary: parses the command line and hands over to the library.

use std::process::ExitCode;

/// Every message allocates a few small buffers on one worker thread and frees them on another;
/// mimalloc's per-thread free lists take that at a fraction of glibc's cost (BENCHMARKS.md,
/// "Ingest: allocator, PUBACKs and the days trigger").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    pettracker::cli::main()
}
