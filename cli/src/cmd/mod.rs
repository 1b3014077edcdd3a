//! One module per area of commands. Each exposes a clap `Subcommand` enum and an async `run`
//! returning the process exit code.

pub mod container;
pub mod context;
pub mod image;
pub mod inspect;
pub mod network;
pub mod system;
pub mod volume;

/// The exit code for a failed command: 125 for engine errors (as docker), unless the error
/// carries a more specific code.
pub fn exit_code_of(e: &anyhow::Error) -> u8 {
    e.downcast_ref::<ExitStatus>().map(|s| s.0).unwrap_or(125)
}

/// An error that asks for a specific exit code (e.g. 126/127 from `run`).
#[derive(Debug, thiserror::Error)]
#[error("exit status {0}")]
pub struct ExitStatus(pub u8);
