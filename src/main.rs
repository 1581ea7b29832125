//! The `pettracker` binary: parses the command line and hands over to the library.

use std::process::ExitCode;

/// Every message allocates several small, short-lived buffers; with glibc's malloc that was 14 %
/// of the server's CPU under ingest load, and mimalloc took 17 % off its CPU per message
/// (BENCHMARKS.md, "Ingest: the allocator, PUBACKs in one write, and batches that wait for their
/// writer").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    pettracker::cli::main()
}
