//! `berth inspect` (containers first, then images, as docker) and `berth container inspect`:
//! docker's JSON shape built from runtime-svc's `Container`, with `-f/--format` Go templates
//! (see `gotemplate`).

use super::container::{client, daemon_err, state_text};
use crate::context::Context;
use crate::gotemplate;
use anyhow::{anyhow, Result};
use berth_proto::runtime::v1 as pb;
use serde_json::{json, Map, Value};
use std::process::ExitCode;

/// `berth inspect` options.
#[derive(clap::Args, Debug)]
pub struct InspectOpts {
    /// Format output using a Go template (e.g. '{{.State.Status}}', '{{json .Config}}').
    #[arg(short, long)]
    pub format: Option<String>,
    /// Only look for this type of object: container or image.
    #[arg(long = "type", value_parser = ["container", "image"])]
    pub kind: Option<String>,
    /// Display total file sizes (accepted for docker compatibility).
    #[arg(short, long)]
    pub size: bool,
    /// Names or IDs of containers or images.
    #[arg(required = true)]
    pub names: Vec<String>,
}

/// `berth container inspect` options.
#[derive(clap::Args, Debug)]
pub struct ContainerInspectOpts {
    /// Format output using a Go template.
    #[arg(short, long)]
    pub format: Option<String>,
    /// Display total file sizes (accepted for docker compatibility).
    #[arg(short, long)]
    pub size: bool,
    /// Containers (ID, ID prefix or name).
    #[arg(required = true)]
    pub containers: Vec<String>,
}

/// RFC 3339 with nanoseconds, UTC ("0001-01-01T00:00:00Z" for never), as docker prints times.
pub fn rfc3339_nanos(nanos: i64) -> String {
    if nanos <= 0 {
        return "0001-01-01T00:00:00Z".into();
    }
    let Ok(t) = time::OffsetDateTime::from_unix_timestamp_nanos(nanos as i128) else {
        return "0001-01-01T00:00:00Z".into();
    };
    let frac = format!("{:09}", t.nanosecond());
    let frac = frac.trim_end_matches('0');
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{}{}Z",
        t.year(),
        t.month() as u8,
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        if frac.is_empty() { "" } else { "." },
        frac
    )
}

fn null_if_empty<T: serde::Serialize>(v: &[T]) -> Value {
    if v.is_empty() {
        Value::Null
    } else {
        json!(v)
    }
}

fn port_key(p: &pb::PortBinding) -> String {
    format!("{}/{}", p.container_port, if p.protocol.is_empty() { "tcp" } else { &p.protocol })
}

fn ports_map(ports: &[pb::PortBinding]) -> Map<String, Value> {
    let mut m = Map::new();
    for p in ports {
        let e = m.entry(port_key(p)).or_insert_with(|| json!([]));
        if let Some(a) = e.as_array_mut() {
            a.push(json!({
                "HostIp": if p.host_ip.is_empty() { "0.0.0.0" } else { &p.host_ip },
                "HostPort": if p.host_port == 0 { String::new() } else { p.host_port.to_string() },
            }));
        }
    }
    m
}

/// Docker's `container inspect` object for one container.
pub fn container_json(c: &pb::Container) -> Value {
    let cfg = c.config.clone().unwrap_or_default();
    let host = c.host_config.clone().unwrap_or_default();
    let running = c.status == pb::ContainerStatus::Running as i32;
    let restart = host.restart_policy.clone().unwrap_or_default();
    let mut exposed = Map::new();
    for p in &c.exposed_ports {
        exposed.insert(p.clone(), json!({}));
    }
    for p in host.port_bindings.iter() {
        exposed.insert(port_key(p), json!({}));
    }
    let mut volumes = Map::new();
    for v in &cfg.volumes {
        volumes.insert(v.clone(), json!({}));
    }
    let entrypoint = cfg.entrypoint.as_ref().map(|l| l.values.clone()).unwrap_or_default();
    let mounts: Vec<Value> = c
        .mount_points
        .iter()
        .map(|m| {
            let mut o = json!({
                "Type": m.r#type,
                "Source": m.source,
                "Destination": m.destination,
                "Mode": m.mode,
                "RW": m.rw,
                "Propagation": m.propagation,
            });
            if m.r#type == "volume" {
                o["Name"] = json!(m.name);
                o["Driver"] = json!(m.driver);
            }
            o
        })
        .collect();
    let host_mounts: Vec<Value> = host
        .mounts
        .iter()
        .map(|m| {
            let mut o = json!({"Type": m.r#type, "Source": m.source, "Target": m.target});
            if m.read_only {
                o["ReadOnly"] = json!(true);
            }
            if m.r#type == "tmpfs" && (m.tmpfs_size_bytes > 0 || m.tmpfs_mode > 0) {
                o["TmpfsOptions"] = json!({"SizeBytes": m.tmpfs_size_bytes, "Mode": m.tmpfs_mode});
            }
            if m.r#type == "volume" && m.volume_nocopy {
                o["VolumeOptions"] = json!({"NoCopy": true});
            }
            o
        })
        .collect();
    let network_mode = if host.network_mode.is_empty() { "bridge".to_string() } else { host.network_mode.clone() };
    let mut networks = Map::new();
    if !c.network.is_empty() {
        networks.insert(
            c.network.clone(),
            json!({
                "IPAMConfig": null, "Links": null, "Aliases": null,
                "MacAddress": c.mac_address, "NetworkID": "", "EndpointID": "",
                "Gateway": c.gateway, "IPAddress": c.ip_address, "IPPrefixLen": c.ip_prefix_len,
                "IPv6Gateway": "", "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0, "DriverOpts": null, "DNSNames": null,
            }),
        );
    }
    let on_default_bridge = c.network == "bridge";
    let state = json!({
        "Status": state_text(c),
        "Running": running || c.restarting,
        "Paused": false,
        "Restarting": c.restarting,
        "OOMKilled": c.oom_killed,
        "Dead": false,
        "Pid": c.pid,
        "ExitCode": c.exit_code,
        "Error": c.error,
        "StartedAt": rfc3339_nanos(c.started_at_unix_nanos),
        "FinishedAt": rfc3339_nanos(c.finished_at_unix_nanos),
    });
    let host_config = json!({
        "Binds": null_if_empty(&host.binds),
        "ContainerIDFile": "",
        "LogConfig": {"Type": "json-file", "Config": host.log_opts},
        "NetworkMode": network_mode,
        "PortBindings": ports_map(&host.port_bindings),
        "RestartPolicy": {
            "Name": if restart.name.is_empty() { "no".to_string() } else { restart.name.clone() },
            "MaximumRetryCount": restart.maximum_retry_count,
        },
        "AutoRemove": host.auto_remove,
        "VolumeDriver": "",
        "VolumesFrom": null,
        "CapAdd": null,
        "CapDrop": null,
        "Dns": [],
        "DnsOptions": [],
        "DnsSearch": [],
        "ExtraHosts": null,
        "IpcMode": "private",
        "Privileged": false,
        "PublishAllPorts": host.publish_all_ports,
        "ReadonlyRootfs": host.readonly_rootfs,
        "SecurityOpt": null,
        "Tmpfs": if host.tmpfs.is_empty() { Value::Null } else { json!(host.tmpfs) },
        "UTSMode": "",
        "ShmSize": 67108864,
        "Runtime": "runc",
        "Memory": host.memory_bytes,
        "NanoCpus": host.nano_cpus,
        "PidsLimit": if host.pids_limit > 0 { json!(host.pids_limit) } else { Value::Null },
        "Mounts": if host_mounts.is_empty() { Value::Null } else { json!(host_mounts) },
        "MaskedPaths": null,
        "ReadonlyPaths": null,
    });
    let config = json!({
        "Hostname": cfg.hostname,
        "Domainname": "",
        "User": cfg.user,
        "AttachStdin": false,
        "AttachStdout": false,
        "AttachStderr": false,
        "ExposedPorts": if exposed.is_empty() { Value::Null } else { Value::Object(exposed) },
        "Tty": cfg.tty,
        "OpenStdin": cfg.open_stdin,
        "StdinOnce": false,
        "Env": cfg.env,
        "Cmd": null_if_empty(&cfg.cmd),
        "Image": c.image,
        "Volumes": if volumes.is_empty() { Value::Null } else { Value::Object(volumes) },
        "WorkingDir": cfg.working_dir,
        "Entrypoint": null_if_empty(&entrypoint),
        "OnBuild": null,
        "Labels": cfg.labels,
        "StopSignal": if cfg.stop_signal.is_empty() { Value::Null } else { json!(cfg.stop_signal) },
    });
    let network_settings = json!({
        "Bridge": "",
        "SandboxID": "",
        "SandboxKey": c.sandbox_key,
        "Ports": Value::Object(ports_map(&c.ports)),
        "HairpinMode": false,
        "LinkLocalIPv6Address": "",
        "LinkLocalIPv6PrefixLen": 0,
        "SecondaryIPAddresses": null,
        "SecondaryIPv6Addresses": null,
        "EndpointID": "",
        "Gateway": if on_default_bridge { c.gateway.clone() } else { String::new() },
        "GlobalIPv6Address": "",
        "GlobalIPv6PrefixLen": 0,
        "IPAddress": if on_default_bridge { c.ip_address.clone() } else { String::new() },
        "IPPrefixLen": if on_default_bridge { c.ip_prefix_len } else { 0 },
        "IPv6Gateway": "",
        "MacAddress": if on_default_bridge { c.mac_address.clone() } else { String::new() },
        "Networks": networks,
    });
    json!({
        "Id": c.id,
        "Created": rfc3339_nanos(c.created_at_unix_nanos),
        "Path": c.command.first().cloned().unwrap_or_default(),
        "Args": c.command.iter().skip(1).cloned().collect::<Vec<_>>(),
        "State": state,
        "Image": if c.image_id.is_empty() { c.image_digest.clone() } else { c.image_id.clone() },
        "ResolvConfPath": "",
        "HostnamePath": "",
        "HostsPath": "",
        "LogPath": c.log_path,
        "Name": format!("/{}", c.name),
        "RestartCount": c.restart_count,
        "Driver": "overlay",
        "Platform": "linux",
        "MountLabel": "",
        "ProcessLabel": "",
        "AppArmorProfile": "",
        "ExecIDs": null,
        "HostConfig": host_config,
        "Mounts": mounts,
        "Config": config,
        "NetworkSettings": network_settings,
    })
}

/// Prints inspect results: a JSON array, or each object through the template.
pub fn print_values(values: &[Value], format: Option<&str>) -> Result<()> {
    match format {
        None | Some("") => {
            println!("{}", crate::output::json_pretty(values)?);
        }
        Some("json") => {
            for v in values {
                println!("{}", serde_json::to_string(v)?);
            }
        }
        Some(f) => {
            let out = gotemplate::render_lines(f, values).map_err(|e| anyhow!("{e}"))?;
            print!("{out}");
        }
    }
    Ok(())
}

/// `berth container inspect`.
pub async fn container_inspect(ctx: &Context, o: ContainerInspectOpts) -> Result<ExitCode> {
    let mut rt = client(ctx).await?;
    let mut values = vec![];
    let mut missing = vec![];
    for c in &o.containers {
        match rt.inspect(pb::InspectRequest { container: c.clone() }).await {
            Ok(r) => values.push(container_json(&r.into_inner().container.unwrap_or_default())),
            Err(e) if e.code() == tonic::Code::NotFound => missing.push(c.clone()),
            Err(e) => return Err(daemon_err(e)),
        }
    }
    if let Some(f) = o.format.as_deref() {
        gotemplate::Template::parse(f).map_err(|e| anyhow!("{e}"))?;
    }
    print_values(&values, o.format.as_deref())?;
    for m in &missing {
        eprintln!("Error: No such container: {m}");
    }
    Ok(if missing.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// `berth inspect`: each name as a container, else as an image (or only `--type`).
pub async fn inspect(ctx: &Context, o: InspectOpts) -> Result<ExitCode> {
    if let Some(f) = o.format.as_deref() {
        gotemplate::Template::parse(f).map_err(|e| anyhow!("{e}"))?;
    }
    let want_ctr = o.kind.as_deref() != Some("image");
    let want_img = o.kind.as_deref() != Some("container");
    let mut rt = if want_ctr { Some(client(ctx).await?) } else { None };
    let mut values = vec![];
    let mut missing = vec![];
    for n in &o.names {
        if let Some(rt) = rt.as_mut() {
            match rt.inspect(pb::InspectRequest { container: n.clone() }).await {
                Ok(r) => {
                    values.push(container_json(&r.into_inner().container.unwrap_or_default()));
                    continue;
                }
                Err(e) if e.code() == tonic::Code::NotFound || e.code() == tonic::Code::InvalidArgument => {}
                Err(e) => return Err(daemon_err(e)),
            }
        }
        if want_img {
            let (mut v, m) = crate::cmd::image::inspect_values(ctx, std::slice::from_ref(n)).await?;
            if m.is_empty() {
                values.append(&mut v);
                continue;
            }
        }
        missing.push(n.clone());
    }
    print_values(&values, o.format.as_deref())?;
    for m in &missing {
        match o.kind.as_deref() {
            Some("container") => eprintln!("Error: No such container: {m}"),
            Some("image") => eprintln!("Error: No such image: {m}"),
            _ => eprintln!("Error: No such object: {m}"),
        }
    }
    Ok(if missing.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_print_like_docker() {
        assert_eq!(rfc3339_nanos(0), "0001-01-01T00:00:00Z");
        assert_eq!(rfc3339_nanos(1_700_000_000_123_456_789), "2023-11-14T22:13:20.123456789Z");
        assert_eq!(rfc3339_nanos(1_700_000_000_000_000_000), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn container_json_has_docker_fields() {
        let c = pb::Container {
            id: "a".repeat(64),
            name: "web".into(),
            command: vec!["sh".into(), "-c".into(), "x".into()],
            status: pb::ContainerStatus::Exited as i32,
            exit_code: 3,
            restart_count: 2,
            ..Default::default()
        };
        let v = container_json(&c);
        assert_eq!(v["Name"], "/web");
        assert_eq!(v["Path"], "sh");
        assert_eq!(v["Args"], json!(["-c", "x"]));
        assert_eq!(v["State"]["Status"], "exited");
        assert_eq!(v["State"]["ExitCode"], 3);
        assert_eq!(v["State"]["StartedAt"], "0001-01-01T00:00:00Z");
        assert_eq!(v["RestartCount"], 2);
        assert_eq!(v["HostConfig"]["RestartPolicy"]["Name"], "no");
    }
}
