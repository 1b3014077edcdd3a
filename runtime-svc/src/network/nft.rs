//! nftables rules, in a table of berth's own (`ip <table>`, "berth" by default); no other table is
//! ever read or changed. Applied with `nft -f -`, one atomic transaction per change.
//!
//! ```text
//! table ip berth {
//!   set bridges { type ifname; }                      # every berth bridge
//!   chain prerouting  { type nat hook prerouting priority dstnat; fib daddr type local jump ports }
//!   chain output      { type nat hook output priority -100;      fib daddr type local jump ports }
//!   chain ports       { tcp dport 8080 dnat to 172.17.0.2:80 comment "berth <container id>" ... }
//!   chain postrouting { type nat hook postrouting priority srcnat;
//!                       ip saddr 127.0.0.0/8 oifname @bridges masquerade    # published on 127.0.0.1
//!                       iifname @bridges oifname != @bridges masquerade }   # egress NAT
//! }
//! ```
//!
//! The base chains hold only those fixed rules, so they are flushed and refilled in the same
//! transaction (idempotent, safe while packets flow). Per-container DNAT rules carry the
//! comment `berth <id>`, by which they are found (with their handles) and deleted.

use std::io::Write;
use std::process::{Command, Stdio};

/// One DNAT rule: host side → container side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dnat {
    /// "tcp" or "udp".
    pub proto: String,
    /// Host address ("" = any local address).
    pub host_ip: String,
    /// Host port.
    pub host_port: u16,
    /// Container address.
    pub ip: String,
    /// Container port.
    pub port: u16,
}

/// Runs an nft script as one transaction.
pub fn apply(script: &str) -> Result<(), String> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("running nft: {e}"))?;
    child.stdin.take().unwrap().write_all(script.as_bytes()).map_err(|e| format!("writing to nft: {e}"))?;
    let out = child.wait_with_output().map_err(|e| format!("running nft: {e}"))?;
    if !out.status.success() {
        return Err(format!("nft failed: {}\nscript:\n{script}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(())
}

fn list_chain(table: &str, chain: &str) -> Result<String, String> {
    let out = Command::new("nft")
        .args(["-a", "list", "chain", "ip", table, chain])
        .output()
        .map_err(|e| format!("running nft: {e}"))?;
    if !out.status.success() {
        // No table/chain yet: nothing to list.
        return Ok(String::new());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The fixed part: table, set, chains and their rules; adds `bridge` to the bridge set.
pub fn base_script(table: &str, bridges: &[&str]) -> String {
    let mut s = format!(
        "add table ip {table}\n\
         add set ip {table} bridges {{ type ifname; }}\n\
         add chain ip {table} prerouting {{ type nat hook prerouting priority dstnat; policy accept; }}\n\
         add chain ip {table} output {{ type nat hook output priority -100; policy accept; }}\n\
         add chain ip {table} postrouting {{ type nat hook postrouting priority srcnat; policy accept; }}\n\
         add chain ip {table} ports\n\
         flush chain ip {table} prerouting\n\
         flush chain ip {table} output\n\
         flush chain ip {table} postrouting\n\
         add rule ip {table} prerouting fib daddr type local counter jump ports\n\
         add rule ip {table} output fib daddr type local counter jump ports\n\
         add rule ip {table} postrouting ip saddr 127.0.0.0/8 oifname @bridges counter masquerade\n\
         add rule ip {table} postrouting iifname @bridges oifname != @bridges counter masquerade\n"
    );
    for b in bridges {
        s.push_str(&format!("add element ip {table} bridges {{ \"{b}\" }}\n"));
    }
    s
}

/// Makes sure the table exists with its fixed rules and knows these bridges.
pub fn ensure_base(table: &str, bridges: &[&str]) -> Result<(), String> {
    apply(&base_script(table, bridges))
}

/// Removes a bridge from the set (when its network is removed).
pub fn forget_bridge(table: &str, bridge: &str) {
    let _ = apply(&format!("delete element ip {table} bridges {{ \"{bridge}\" }}\n"));
}

fn comment(id: &str) -> String {
    format!("berth {id}")
}

/// The `add rule` lines of one container's published ports.
pub fn add_script(table: &str, id: &str, rules: &[Dnat]) -> String {
    let mut s = String::new();
    for r in rules {
        let daddr = if r.host_ip.is_empty() || r.host_ip == "0.0.0.0" {
            String::new()
        } else {
            format!("ip daddr {} ", r.host_ip)
        };
        s.push_str(&format!(
            "add rule ip {table} ports {daddr}{proto} dport {hp} counter dnat to {ip}:{port} comment \"{c}\"\n",
            proto = r.proto,
            hp = r.host_port,
            ip = r.ip,
            port = r.port,
            c = comment(id)
        ));
    }
    s
}

/// Handles of the rules of container `id` (or, with `id` None, of every container: (id, handle)).
pub fn rules_of(table: &str, id: Option<&str>) -> Result<Vec<(String, u64)>, String> {
    let text = list_chain(table, "ports")?;
    Ok(parse_rules(&text).into_iter().filter(|(cid, _)| id.is_none_or(|i| i == cid)).collect())
}

/// Parses `nft -a list chain` output: (container id, handle) of every commented rule.
pub fn parse_rules(text: &str) -> Vec<(String, u64)> {
    let mut out = vec![];
    for line in text.lines() {
        let Some(start) = line.find("comment \"berth ") else { continue };
        let rest = &line[start + "comment \"berth ".len()..];
        let Some(end) = rest.find('"') else { continue };
        let id = rest[..end].to_string();
        let Some(h) = line.rsplit_once("# handle ").and_then(|(_, h)| h.trim().parse::<u64>().ok()) else { continue };
        out.push((id, h));
    }
    out
}

/// Replaces the rules of container `id` with `rules` in one transaction (idempotent).
pub fn set_rules(table: &str, id: &str, rules: &[Dnat]) -> Result<(), String> {
    let mut s = String::new();
    for (_, h) in rules_of(table, Some(id))? {
        s.push_str(&format!("delete rule ip {table} ports handle {h}\n"));
    }
    s.push_str(&add_script(table, id, rules));
    if s.is_empty() {
        return Ok(());
    }
    apply(&s)
}

/// Deletes the rules of container `id`.
pub fn delete_rules(table: &str, id: &str) -> Result<(), String> {
    set_rules(table, id, &[])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_are_found_by_comment() {
        let text = "table ip berth {\n\tchain ports { # handle 4\n\t\ttcp dport 8080 counter packets 0 bytes 0 dnat to 172.17.0.2:80 comment \"berth abc\" # handle 9\n\t\tip daddr 127.0.0.1 udp dport 53 dnat to 172.17.0.3:53 comment \"berth def\" # handle 12\n\t}\n}\n";
        assert_eq!(parse_rules(text), vec![("abc".to_string(), 9), ("def".to_string(), 12)]);
    }

    #[test]
    fn scripts() {
        let r = Dnat {
            proto: "tcp".into(),
            host_ip: "127.0.0.1".into(),
            host_port: 8080,
            ip: "172.17.0.2".into(),
            port: 80,
        };
        let s = add_script("berth", "abc", &[r]);
        assert_eq!(
            s,
            "add rule ip berth ports ip daddr 127.0.0.1 tcp dport 8080 counter dnat to 172.17.0.2:80 comment \"berth abc\"\n"
        );
        assert!(base_script("berth", &["berth0"]).contains("add element ip berth bridges { \"berth0\" }"));
    }
}
