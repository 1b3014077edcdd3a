//! Published ports on the CLI side: docker's `-p` forms parsed into `PortBinding`s, `berth port`,
//! and the PORTS column of `ps`.

use super::{client, daemon_err};
use crate::context::Context;
use anyhow::{anyhow, Result};
use berth_proto::runtime::v1 as pb;
use std::process::ExitCode;

/// `berth port CONTAINER [PRIVATE_PORT[/PROTO]]`
#[derive(clap::Args, Debug)]
pub struct PortOpts {
    /// Container (ID, ID prefix or name).
    pub container: String,
    /// Only this container port ("80" or "80/udp").
    pub private_port: Option<String>,
}

fn range(s: &str, what: &str, spec: &str) -> Result<(u32, u32)> {
    let bad = || anyhow!("invalid {what} {s:?} in published port {spec:?}");
    let (a, b) = match s.split_once('-') {
        Some((a, b)) => (a.parse::<u32>().map_err(|_| bad())?, b.parse::<u32>().map_err(|_| bad())?),
        None => {
            let n = s.parse::<u32>().map_err(|_| bad())?;
            (n, n)
        }
    };
    if a > b || b > 65535 {
        return Err(bad());
    }
    Ok((a, b))
}

/// Parses one `-p` value: `[ip:][hostPort:]containerPort[/proto]`, where both ports may be
/// ranges (`8080-8081:80-81`) and an empty host port means a random one (`127.0.0.1::80`).
pub fn parse_publish(spec: &str) -> Result<Vec<pb::PortBinding>> {
    let (rest, proto) = match spec.rsplit_once('/') {
        Some((r, p)) => (r, p.to_ascii_lowercase()),
        None => (spec, "tcp".to_string()),
    };
    if proto != "tcp" && proto != "udp" {
        return Err(anyhow!("invalid proto: {proto}"));
    }
    let parts: Vec<&str> = rest.split(':').collect();
    let (ip, host, ctr) = match parts.as_slice() {
        [c] => ("", "", *c),
        [h, c] => ("", *h, *c),
        [ip, h, c] => (*ip, *h, *c),
        _ => return Err(anyhow!("invalid published port {spec:?}")),
    };
    let ip = ip.trim_start_matches('[').trim_end_matches(']');
    if !ip.is_empty() && ip.parse::<std::net::Ipv4Addr>().is_err() {
        return Err(anyhow!("invalid IP address {ip:?} in published port {spec:?} (IPv4 only)"));
    }
    let (c0, c1) = range(ctr, "container port", spec)?;
    if c0 == 0 {
        return Err(anyhow!("invalid container port 0 in published port {spec:?}"));
    }
    let hosts: Vec<u32> = if host.is_empty() {
        vec![0; (c1 - c0 + 1) as usize]
    } else {
        let (h0, h1) = range(host, "host port", spec)?;
        if c0 == c1 && h1 > h0 {
            // `8000-8010:80`: one binding, the first free host port of the range (docker's).
            return Ok(vec![pb::PortBinding {
                host_ip: ip.to_string(),
                host_port: h0,
                container_port: c0,
                protocol: proto,
                host_port_end: h1,
            }]);
        }
        if h1 - h0 != c1 - c0 {
            return Err(anyhow!(
                "invalid ranges in published port {spec:?}: host and container ranges must have the same length"
            ));
        }
        (h0..=h1).collect()
    };
    Ok((c0..=c1)
        .zip(hosts)
        .map(|(c, h)| pb::PortBinding {
            host_ip: ip.to_string(),
            host_port: h,
            container_port: c,
            protocol: proto.clone(),
            host_port_end: 0,
        })
        .collect())
}

fn shown_ip(p: &pb::PortBinding) -> &str {
    if p.host_ip.is_empty() {
        "0.0.0.0"
    } else {
        &p.host_ip
    }
}

/// The PORTS column: `0.0.0.0:8080->80/tcp, 443/tcp` (published, then exposed only).
pub fn ports_text(c: &pb::Container) -> String {
    let mut out: Vec<String> = c
        .ports
        .iter()
        .map(|p| format!("{}:{}->{}/{}", shown_ip(p), p.host_port, p.container_port, p.protocol))
        .collect();
    for e in &c.exposed_ports {
        let (port, proto) = e.split_once('/').unwrap_or((e, "tcp"));
        if !c.ports.iter().any(|p| p.container_port.to_string() == port && p.protocol == proto) {
            out.push(format!("{port}/{proto}"));
        }
    }
    out.join(", ")
}

/// `berth port`.
pub async fn port(ctx: &Context, o: PortOpts) -> Result<ExitCode> {
    let mut rt = client(ctx).await?;
    let c = rt
        .inspect(pb::InspectRequest { container: o.container.clone() })
        .await
        .map_err(daemon_err)?
        .into_inner()
        .container
        .unwrap_or_default();
    match &o.private_port {
        None => {
            for p in &c.ports {
                println!("{}/{} -> {}:{}", p.container_port, p.protocol, shown_ip(p), p.host_port);
            }
        }
        Some(want) => {
            let (port, proto) = want.split_once('/').unwrap_or((want, "tcp"));
            let port: u32 = port.parse().map_err(|_| anyhow!("Error: invalid port ({want})"))?;
            let found: Vec<&pb::PortBinding> =
                c.ports.iter().filter(|p| p.container_port == port && p.protocol == proto).collect();
            if found.is_empty() {
                return Err(anyhow!("Error: No public port '{port}/{proto}' published for {}", o.container));
            }
            for p in found {
                println!("{}:{}", shown_ip(p), p.host_port);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(s: &str) -> (String, u32, u32, String) {
        let v = parse_publish(s).unwrap();
        assert_eq!(v.len(), 1, "{s}");
        (v[0].host_ip.clone(), v[0].host_port, v[0].container_port, v[0].protocol.clone())
    }

    #[test]
    fn docker_forms_parse() {
        assert_eq!(one("8080:80"), ("".into(), 8080, 80, "tcp".into()));
        assert_eq!(one("127.0.0.1:8080:80"), ("127.0.0.1".into(), 8080, 80, "tcp".into()));
        assert_eq!(one("80"), ("".into(), 0, 80, "tcp".into()));
        assert_eq!(one("8080:80/udp"), ("".into(), 8080, 80, "udp".into()));
        assert_eq!(one("127.0.0.1::80"), ("127.0.0.1".into(), 0, 80, "tcp".into()));
        let r = parse_publish("8080-8081:80-81").unwrap();
        assert_eq!(r.iter().map(|p| (p.host_port, p.container_port)).collect::<Vec<_>>(), vec![(8080, 80), (8081, 81)]);
        assert_eq!(parse_publish("80-82").unwrap().len(), 3);
        assert!(parse_publish("8080-8082:80-81").is_err());
        let r = parse_publish("8000-8010:80").unwrap();
        assert_eq!((r.len(), r[0].host_port, r[0].host_port_end, r[0].container_port), (1, 8000, 8010, 80));
        assert!(parse_publish("x:80").is_err());
        assert!(parse_publish("80/sctp").is_err());
        assert!(parse_publish("1.2.3:80:80").is_err());
    }

    #[test]
    fn ports_column() {
        let c = pb::Container {
            ports: vec![pb::PortBinding {
                host_ip: "0.0.0.0".into(),
                host_port: 8080,
                container_port: 80,
                protocol: "tcp".into(),
                host_port_end: 0,
            }],
            exposed_ports: vec!["80/tcp".into(), "443/tcp".into()],
            ..Default::default()
        };
        assert_eq!(ports_text(&c), "0.0.0.0:8080->80/tcp, 443/tcp");
    }
}
