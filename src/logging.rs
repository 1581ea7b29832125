//! Log output: human-readable lines by default, one JSON object per line for log shippers.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber. `RUST_LOG`, when set, wins over the configured level.
pub fn init(format: LogFormat, level: &str) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        // tokio_postgres logs server NOTICEs (e.g. "already exists, skipping") at info: noise.
        .unwrap_or_else(|| {
            EnvFilter::try_new(format!("{level},tokio_postgres=warn"))
                .unwrap_or_else(|_| EnvFilter::new("info"))
        });
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colour codes only for people; log files and collectors get plain text.
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    // A second init (tests that start several apps) is harmless: the first subscriber stays.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
