//! Container commands: `berth run`, `create`, `ps`, `start`, `stop`, `restart`, `kill`, `rm`,
//! `wait`, `container prune`.

use crate::context::Context;
use std::process::ExitCode;

/// Container commands (flattened into the top level, as docker's).
#[derive(clap::Subcommand, Debug)]
pub enum ContainerCommand {
    /// List containers.
    Ps {
        /// Show all containers (default shows just running).
        #[arg(short, long)]
        all: bool,
    },
}

pub async fn run(cmd: ContainerCommand, _ctx: &Context) -> anyhow::Result<ExitCode> {
    match cmd {
        ContainerCommand::Ps { .. } => anyhow::bail!("not implemented yet"),
    }
}
