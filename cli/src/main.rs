//! `berth`: parse the command line, reach the services, print. All behaviour lives in the
//! modules; this file only dispatches.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

mod cmd;
mod config;
mod context;
mod gotemplate;
mod output;
mod stack;

/// A Docker-like container engine built from gRPC services.
#[derive(Parser, Debug)]
#[command(name = "berth", version, about, disable_help_subcommand = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: context::GlobalOpts,
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands. Each area owns its own flattened enum in `cmd/`.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Manage Berth itself: info, df, prune, stop.
    #[command(subcommand)]
    System(cmd::system::SystemCommand),
    /// Manage contexts (where the services are).
    #[command(subcommand)]
    Context(cmd::context::ContextCommand),
    /// Show the version of the client and of each running service.
    Version,
    /// Show the endpoints, versions and health of each service (same as `system info`).
    Info {
        /// Output format: "table" (default) or "json".
        #[arg(long, short = 'f', default_value = "table", value_parser = ["table", "json"])]
        format: String,
    },
    /// Manage networks.
    #[command(subcommand)]
    Network(cmd::network::NetworkCommand),
    /// Manage volumes.
    #[command(subcommand)]
    Volume(cmd::volume::VolumeCommand),
    #[command(flatten)]
    Image(cmd::image::ImageCommand),
    #[command(flatten)]
    Container(cmd::container::ContainerCommand),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Context(c) = cli.command {
        return report(cmd::context::run(c, &cli.global).await);
    }
    let ctx = match context::Context::load(cli.global) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("berth: {e:#}");
            return ExitCode::from(125);
        }
    };
    report(match cli.command {
        Command::System(c) => cmd::system::run(c, &ctx).await,
        Command::Info { format } => cmd::system::run(cmd::system::SystemCommand::Info { format }, &ctx).await,
        Command::Version => cmd::system::version(&ctx).await,
        Command::Context(_) => unreachable!("handled above"),
        Command::Image(c) => cmd::image::run(c, &ctx).await,
        Command::Network(c) => cmd::network::run(c, &ctx).await,
        Command::Volume(c) => cmd::volume::run(c, &ctx).await,
        Command::Container(c) => cmd::container::run(c, &ctx).await,
    })
}

fn report(result: anyhow::Result<ExitCode>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(e) => {
            // Messages that are already docker's ("Error response from daemon: …", "Error: No
            // public port …") are printed as they are, not as "Error: Error …".
            let msg = format!("{e:#}");
            if msg.starts_with("Error") {
                eprintln!("{msg}");
            } else {
                eprintln!("Error: {msg}");
            }
            ExitCode::from(cmd::exit_code_of(&e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Clap's own consistency checks over every command of every area (duplicate flags, a
    /// subcommand's short flag clashing with a global one, ...), which otherwise only fire when
    /// that command is run.
    #[test]
    fn command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
