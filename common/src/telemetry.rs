//! Logging setup shared by the services: `tracing` to stderr, filtered by `BERTH_LOG` (or
//! `RUST_LOG`), default `info`.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. Call once, first thing in `main`.
pub fn init(service: &'static str) {
    let filter = std::env::var("BERTH_LOG")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| "info".to_string());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        // Colours only on a terminal: services started by the CLI log to a file.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
    tracing::debug!(service, "logging initialised");
}
