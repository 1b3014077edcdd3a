//! `berth system info|df|prune`.

use crate::context::Context;
use std::process::ExitCode;

/// `berth system ...`
#[derive(clap::Subcommand, Debug)]
pub enum SystemCommand {
    /// Show the endpoints, versions and health of each service.
    Info,
}

pub async fn run(cmd: SystemCommand, _ctx: &Context) -> anyhow::Result<ExitCode> {
    match cmd {
        SystemCommand::Info => anyhow::bail!("not implemented yet"),
    }
}
