//! `berth network create|ls|inspect|rm|prune`: user-defined bridge networks, through
//! runtime-svc's `berth.runtime.v1.Networks` service.

use crate::context::Context;
use crate::output::{short_id, Table};
use anyhow::{anyhow, Result};
use berth_proto::runtime::v1 as pb;
use pb::networks_client::NetworksClient;
use std::process::ExitCode;
use tonic::transport::Channel;

/// `berth network ...`
#[derive(clap::Subcommand, Debug)]
pub enum NetworkCommand {
    /// Create a network.
    Create {
        /// Subnet in CIDR format (default: a free /16 from 172.18.0.0/16 up).
        #[arg(long)]
        subnet: Option<String>,
        /// Gateway for the subnet (default: its first address).
        #[arg(long)]
        gateway: Option<String>,
        /// Driver (only "bridge").
        #[arg(short, long, default_value = "bridge")]
        driver: String,
        /// Network name.
        name: String,
    },
    /// List networks.
    #[command(alias = "list")]
    Ls {
        /// Only display network IDs.
        #[arg(short, long)]
        quiet: bool,
        /// Don't truncate output.
        #[arg(long)]
        no_trunc: bool,
        /// Format the output: "table" (default), "json", or a Go template ("table TEMPLATE"
        /// for docker's table with headers).
        #[arg(long)]
        format: Option<String>,
    },
    /// Display detailed information on one or more networks.
    Inspect {
        /// Networks (name, ID or ID prefix).
        #[arg(required = true)]
        networks: Vec<String>,
    },
    /// Remove one or more networks.
    #[command(alias = "remove")]
    Rm {
        /// Networks.
        #[arg(required = true)]
        networks: Vec<String>,
    },
    /// Remove all unused networks.
    Prune {
        /// Do not prompt for confirmation.
        #[arg(short, long)]
        force: bool,
    },
}

async fn client(ctx: &Context) -> Result<NetworksClient<Channel>> {
    Ok(NetworksClient::new(ctx.runtime().await?))
}

fn daemon_err(s: tonic::Status) -> anyhow::Error {
    anyhow!("Error response from daemon: {}", s.message())
}

fn scope(_n: &pb::Network) -> &'static str {
    "local"
}

/// docker's `network inspect` JSON for one network.
fn inspect_json(n: &pb::Network) -> serde_json::Value {
    let mut containers = serde_json::Map::new();
    for c in &n.containers {
        containers.insert(
            c.id.clone(),
            serde_json::json!({
                "Name": c.name,
                "MacAddress": c.mac_address,
                "IPv4Address": c.ipv4_address,
                "IPv6Address": "",
            }),
        );
    }
    let created = time::OffsetDateTime::from_unix_timestamp_nanos(n.created_at_unix_nanos as i128)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default();
    let config: Vec<serde_json::Value> =
        if n.subnet.is_empty() { vec![] } else { vec![serde_json::json!({"Subnet": n.subnet, "Gateway": n.gateway})] };
    serde_json::json!({
        "Name": n.name,
        "Id": n.id,
        "Created": created,
        "Scope": scope(n),
        "Driver": n.driver,
        "EnableIPv6": false,
        "IPAM": {"Driver": "default", "Options": {}, "Config": config},
        "Internal": false,
        "Attachable": false,
        "Containers": containers,
        "Options": if n.bridge.is_empty() { serde_json::json!({}) } else { serde_json::json!({"com.docker.network.bridge.name": n.bridge}) },
        "Labels": {},
        "NameResolution": if n.name_resolution { "hosts" } else { "" },
    })
}

pub async fn run(cmd: NetworkCommand, ctx: &Context) -> Result<ExitCode> {
    let mut c = client(ctx).await?;
    match cmd {
        NetworkCommand::Create { subnet, gateway, driver, name } => {
            let n = c
                .create_network(pb::CreateNetworkRequest {
                    name,
                    subnet: subnet.unwrap_or_default(),
                    gateway: gateway.unwrap_or_default(),
                    driver,
                })
                .await
                .map_err(daemon_err)?
                .into_inner()
                .network
                .unwrap_or_default();
            println!("{}", n.id);
        }
        NetworkCommand::Ls { quiet, no_trunc, format } => {
            let list = c.list_networks(pb::ListNetworksRequest {}).await.map_err(daemon_err)?.into_inner().networks;
            let id = |n: &pb::Network| if no_trunc { n.id.clone() } else { short_id(&n.id) };
            let format = format.as_deref().map(str::trim).filter(|f| !f.is_empty() && *f != "table");
            if quiet {
                for n in &list {
                    println!("{}", id(n));
                }
            } else if let Some(f) = format {
                // docker's `network ls --format` fields.
                let values: Vec<serde_json::Value> = list
                    .iter()
                    .map(|n| {
                        serde_json::json!({
                            "CreatedAt": super::container::created_at(n.created_at_unix_nanos),
                            "Driver": n.driver,
                            "ID": id(n),
                            "IPv4": "true",
                            "IPv6": "false",
                            "Internal": "false",
                            "Labels": "",
                            "Name": n.name,
                            "Scope": scope(n),
                        })
                    })
                    .collect();
                let headers = [
                    ("ID", "NETWORK ID"),
                    ("Name", "NAME"),
                    ("Driver", "DRIVER"),
                    ("Scope", "SCOPE"),
                    ("CreatedAt", "CREATED AT"),
                    ("IPv4", "IPV4"),
                    ("IPv6", "IPV6"),
                    ("Internal", "INTERNAL"),
                    ("Labels", "LABELS"),
                ];
                print!("{}", crate::gotemplate::render_list(f, &values, &headers).map_err(|e| anyhow!("{e}"))?);
            } else {
                let mut t = Table::new(["NETWORK ID", "NAME", "DRIVER", "SCOPE"]);
                for n in &list {
                    t.row([id(n), n.name.clone(), n.driver.clone(), scope(n).to_string()]);
                }
                print!("{t}");
            }
        }
        NetworkCommand::Inspect { networks } => {
            let mut out = vec![];
            let mut ok = true;
            for w in networks {
                match c.inspect_network(pb::InspectNetworkRequest { network: w }).await {
                    Ok(r) => out.push(inspect_json(&r.into_inner().network.unwrap_or_default())),
                    Err(e) => {
                        eprintln!("Error response from daemon: {}", e.message());
                        ok = false;
                    }
                }
            }
            println!("{}", crate::output::json_pretty(&out)?);
            if !ok {
                return Ok(ExitCode::from(1));
            }
        }
        NetworkCommand::Rm { networks } => {
            let mut ok = true;
            for w in networks {
                match c.remove_network(pb::RemoveNetworkRequest { network: w.clone() }).await {
                    Ok(_) => println!("{w}"),
                    Err(e) => {
                        eprintln!("Error response from daemon: {}", e.message());
                        ok = false;
                    }
                }
            }
            if !ok {
                return Ok(ExitCode::from(1));
            }
        }
        NetworkCommand::Prune { force } => {
            if !force {
                eprint!("WARNING! This will remove all custom networks not used by at least one container.\nAre you sure you want to continue? [y/N] ");
                let mut line = String::new();
                std::io::stdin().read_line(&mut line)?;
                if !matches!(line.trim(), "y" | "Y" | "yes") {
                    return Ok(ExitCode::SUCCESS);
                }
            }
            let removed = c.prune_networks(pb::PruneNetworksRequest {}).await.map_err(daemon_err)?.into_inner().removed;
            if !removed.is_empty() {
                println!("Deleted Networks:");
                for n in removed {
                    println!("{n}");
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
