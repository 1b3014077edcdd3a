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
/// `--expose PORT[-END][/PROTO]` as "PORT/PROTO" entries, one per port (docker's forms: `80`,
/// `53/udp`, `7000-7001/tcp`).
pub fn parse_expose(s: &str) -> Result<Vec<String>> {
    let (ports, proto) = s.split_once('/').unwrap_or((s, "tcp"));
    if proto != "tcp" && proto != "udp" {
        return Err(anyhow!("invalid --expose {s:?}: the protocol must be tcp or udp"));
    }
    let (a, b) = ports.split_once('-').unwrap_or((ports, ports));
    let bad = || anyhow!("invalid --expose {s:?}: expected PORT[-END][/tcp|udp], ports 1-65535");
    let (a, b): (u16, u16) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
    if a == 0 || b < a {
        return Err(bad());
    }
    Ok((a..=b).map(|p| format!("{p}/{proto}")).collect())
}

pub fn ports_text(c: &pb::Container) -> String {
    let mut ports: Vec<ShownPort> = c
        .ports
        .iter()
        .map(|p| ShownPort {
            ip: shown_ip(p).to_string(),
            public: p.host_port,
            private: p.container_port,
            proto: p.protocol.clone(),
        })
        .collect();
    for e in &c.exposed_ports {
        let (port, proto) = e.split_once('/').unwrap_or((e, "tcp"));
        let Ok(private) = port.parse::<u32>() else { continue };
        if !c.ports.iter().any(|p| p.container_port == private && p.protocol == proto) {
            ports.push(ShownPort { ip: String::new(), public: 0, private, proto: proto.to_string() });
        }
    }
    displayable_ports(ports)
}

/// One row of docker's PORTS column: published (`ip` set) or only exposed.
struct ShownPort {
    ip: String,
    public: u32,
    private: u32,
    proto: String,
}

/// docker's `DisplayablePorts`: sorted by container port; runs of consecutive ports published
/// on the same port number (or only exposed) with the same address and protocol are grouped
/// (`0.0.0.0:8000-8002->8000-8002/tcp`, `7000-7001/tcp`); a port published on another number is
/// listed on its own, after the groups (`0.0.0.0:8080->80/tcp`).
fn displayable_ports(mut ports: Vec<ShownPort>) -> String {
    ports.sort_by(|a, b| (a.private, &a.ip, a.public, &a.proto).cmp(&(b.private, &b.ip, b.public, &b.proto)));
    let form = |key: &str, first: u32, last: u32| {
        let (ip, proto) = key.split_once('/').map_or(("", key), |(ip, proto)| (ip, proto));
        let range = if first == last { first.to_string() } else { format!("{first}-{last}") };
        if ip.is_empty() {
            format!("{range}/{proto}")
        } else {
            format!("{ip}:{range}->{range}/{proto}")
        }
    };
    let mut groups: Vec<(String, u32, u32)> = vec![];
    let (mut result, mut mappings) = (vec![], vec![]);
    for p in &ports {
        let key = if p.ip.is_empty() {
            p.proto.clone()
        } else if p.public != p.private {
            mappings.push(format!("{}:{}->{}/{}", p.ip, p.public, p.private, p.proto));
            continue;
        } else {
            format!("{}/{}", p.ip, p.proto)
        };
        match groups.iter_mut().find(|g| g.0 == key) {
            None => groups.push((key, p.private, p.private)),
            Some(g) if p.private == g.2 + 1 => g.2 = p.private,
            Some(g) => {
                result.push(form(&g.0, g.1, g.2));
                (g.1, g.2) = (p.private, p.private);
            }
        }
    }
    result.extend(groups.iter().map(|g| form(&g.0, g.1, g.2)));
    result.extend(mappings);
    result.join(", ")
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
        // As docker: groups of exposed (or same-number) ports first, then other mappings.
        assert_eq!(ports_text(&c), "443/tcp, 0.0.0.0:8080->80/tcp");
    }

    fn p(ip: &str, public: u32, private: u32, proto: &str) -> ShownPort {
        ShownPort { ip: ip.into(), public, private, proto: proto.into() }
    }

    #[test]
    fn expose_forms() {
        assert_eq!(parse_expose("80").unwrap(), vec!["80/tcp"]);
        assert_eq!(parse_expose("53/udp").unwrap(), vec!["53/udp"]);
        assert_eq!(parse_expose("7000-7002/tcp").unwrap(), vec!["7000/tcp", "7001/tcp", "7002/tcp"]);
        for bad in ["", "x", "0", "80/sctp", "9-8", "70000", "1-x"] {
            assert!(parse_expose(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ports_column_as_docker() {
        // Same-number publishing is grouped; other mappings follow, one each.
        let v = vec![
            p("0.0.0.0", 8002, 8002, "tcp"),
            p("0.0.0.0", 8000, 8000, "tcp"),
            p("0.0.0.0", 8001, 8001, "tcp"),
            p("0.0.0.0", 18080, 80, "tcp"),
            p("127.0.0.1", 53, 53, "udp"),
            p("", 0, 7001, "tcp"),
            p("", 0, 7000, "tcp"),
        ];
        assert_eq!(
            displayable_ports(v),
            "127.0.0.1:53->53/udp, 7000-7001/tcp, 0.0.0.0:8000-8002->8000-8002/tcp, 0.0.0.0:18080->80/tcp"
        );
        // A gap ends a group.
        let v = vec![p("", 0, 80, "tcp"), p("", 0, 81, "tcp"), p("", 0, 90, "tcp")];
        assert_eq!(displayable_ports(v), "80-81/tcp, 90/tcp");
        assert_eq!(displayable_ports(vec![]), "");
    }
}
