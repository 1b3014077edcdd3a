//! Parsing of `--mount`, `--tmpfs` and `--restart` (docker's syntax) for `run`/`create`.

use crate::output::parse_size;
use anyhow::{anyhow, bail, Result};
use berth_proto::runtime::v1 as pb;
use std::collections::HashMap;

/// `--mount type=bind|volume|tmpfs,source=…,target=…[,readonly][,volume-nocopy]
/// [,tmpfs-size=64m][,tmpfs-mode=1770][,bind-propagation=rshared]`.
pub fn parse_mount(s: &str) -> Result<pb::Mount> {
    let mut m = pb::Mount { r#type: "volume".into(), ..Default::default() };
    for field in s.split(',').filter(|f| !f.is_empty()) {
        let (k, v) = match field.split_once('=') {
            Some((k, v)) => (k.trim().to_ascii_lowercase(), Some(v.trim())),
            None => (field.trim().to_ascii_lowercase(), None),
        };
        let flag = |v: Option<&str>| -> Result<bool> {
            match v.map(|x| x.to_ascii_lowercase()).as_deref() {
                None | Some("1") | Some("true") => Ok(true),
                Some("0") | Some("false") => Ok(false),
                Some(o) => bail!("invalid value for {k}: {o}"),
            }
        };
        let need = |v: Option<&str>| {
            v.map(str::to_string).ok_or_else(|| anyhow!("invalid field '{field}' must be a key=value pair"))
        };
        match k.as_str() {
            "type" => m.r#type = need(v)?,
            "source" | "src" => m.source = need(v)?,
            "target" | "destination" | "dst" => m.target = need(v)?,
            "readonly" | "ro" => m.read_only = flag(v)?,
            "volume-nocopy" => m.volume_nocopy = flag(v)?,
            "tmpfs-size" => m.tmpfs_size_bytes = parse_size(&need(v)?).map_err(anyhow::Error::msg)? as i64,
            "tmpfs-mode" => {
                m.tmpfs_mode = u32::from_str_radix(&need(v)?, 8).map_err(|_| anyhow!("invalid tmpfs-mode {field}"))?
            }
            "bind-propagation" => m.bind_propagation = need(v)?,
            "consistency" | "volume-driver" | "volume-label" | "volume-opt" | "bind-nonrecursive" => {}
            _ => bail!("unexpected key '{k}' in '{field}'"),
        }
    }
    if m.target.is_empty() {
        bail!("invalid argument \"{s}\" for \"--mount\" flag: target is required");
    }
    Ok(m)
}

/// `--tmpfs /path[:opts]` entries as docker's HostConfig.Tmpfs map.
pub fn parse_tmpfs(list: &[String]) -> HashMap<String, String> {
    list.iter()
        .map(|t| match t.split_once(':') {
            Some((p, o)) => (p.to_string(), o.to_string()),
            None => (t.to_string(), String::new()),
        })
        .collect()
}

/// `--restart no|always|unless-stopped|on-failure[:N]`.
pub fn parse_restart(s: &str) -> Result<pb::RestartPolicy> {
    let (name, max) = match s.split_once(':') {
        Some((n, m)) => (
            n,
            m.parse::<i32>()
                .map_err(|_| anyhow!("invalid restart policy format: maximum retry count must be an integer"))?,
        ),
        None => (s, 0),
    };
    match name {
        "no" | "always" | "unless-stopped" | "on-failure" => {}
        _ => bail!(
            "invalid restart policy format: unknown policy '{name}'; use no, always, unless-stopped or on-failure"
        ),
    }
    if max != 0 && name != "on-failure" {
        bail!("invalid restart policy format: maximum retry count can only be used with 'on-failure'");
    }
    Ok(pb::RestartPolicy { name: name.to_string(), maximum_retry_count: max })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_and_policies_parse() {
        let m = parse_mount("type=bind,source=/x,target=/y,readonly").unwrap();
        assert_eq!((m.r#type.as_str(), m.source.as_str(), m.target.as_str(), m.read_only), ("bind", "/x", "/y", true));
        let m = parse_mount("type=tmpfs,dst=/t,tmpfs-size=1m,tmpfs-mode=1770").unwrap();
        assert_eq!((m.tmpfs_size_bytes, m.tmpfs_mode), (1 << 20, 0o1770));
        assert!(parse_mount("type=bind,source=/x").is_err());
        assert_eq!(parse_restart("on-failure:2").unwrap().maximum_retry_count, 2);
        assert!(parse_restart("always:2").is_err() && parse_restart("sometimes").is_err());
        assert_eq!(parse_tmpfs(&["/run:size=1m".into()])["/run"], "size=1m");
    }
}
