//! Image commands: `berth pull`, `images`, `image inspect`, `tag`, `rmi`.

use crate::context::Context;
use std::process::ExitCode;

/// Image commands (flattened into the top level, as docker's).
#[derive(clap::Subcommand, Debug)]
pub enum ImageCommand {
    /// Download an image from a registry.
    Pull {
        /// Image reference, e.g. busybox or localhost:5000/app:1.
        reference: String,
    },
}

pub async fn run(cmd: ImageCommand, _ctx: &Context) -> anyhow::Result<ExitCode> {
    match cmd {
        ImageCommand::Pull { .. } => anyhow::bail!("not implemented yet"),
    }
}
