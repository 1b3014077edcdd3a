//! `berth ps --filter KEY=VALUE`, as docker's: values of one key are alternatives (any may
//! match), different keys must all match. Keys: id (prefix), name (substring, as docker's
//! regexp-less common use), status, label (KEY or KEY=VALUE), ancestor (image reference, with
//! docker's defaults, or image digest prefix), exited (exit code of an exited container).

use std::collections::BTreeMap;

use anyhow::{anyhow, bail, Result};
use berth_proto::runtime::v1 as pb;

const STATUSES: [&str; 7] = ["created", "restarting", "running", "removing", "paused", "exited", "dead"];

/// Parsed `--filter` flags.
#[derive(Debug, Default)]
pub struct Filters(BTreeMap<String, Vec<String>>);

impl Filters {
    /// Parses `KEY=VALUE` flags; an unknown key or a bad value is an error naming it.
    pub fn parse(flags: &[String]) -> Result<Self> {
        let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for f in flags {
            let (k, v) =
                f.split_once('=').ok_or_else(|| anyhow!("bad format of filter (expected name=value): {f:?}"))?;
            let key = k.trim().to_ascii_lowercase();
            match key.as_str() {
                "id" | "name" | "label" | "ancestor" => {}
                "status" if !STATUSES.contains(&v) => {
                    bail!("invalid filter 'status={v}': use one of {}", STATUSES.join(", "))
                }
                "exited" if v.parse::<i32>().is_err() => bail!("invalid filter 'exited={v}': not an exit code"),
                "status" | "exited" => {}
                other => bail!("invalid filter '{other}': use id, name, status, label, ancestor or exited"),
            }
            map.entry(key).or_default().push(v.to_string());
        }
        Ok(Filters(map))
    }

    /// Filters on status or exit code look at stopped containers too, as docker's.
    pub fn wants_all(&self) -> bool {
        self.0.get("status").is_some_and(|v| v.iter().any(|s| s != "running")) || self.0.contains_key("exited")
    }

    /// Whether `c` (whose docker state is `state`) passes every filter.
    pub fn matches(&self, c: &pb::Container, state: &str) -> bool {
        self.0.iter().all(|(key, values)| values.iter().any(|v| one(key, v, c, state)))
    }
}

fn one(key: &str, v: &str, c: &pb::Container, state: &str) -> bool {
    match key {
        "id" => c.id.starts_with(v),
        "name" => c.name.contains(v.trim_start_matches('/')),
        "status" => state == v,
        "exited" => state == "exited" && v.parse::<i32>().ok() == Some(c.exit_code),
        "label" => {
            let labels = c.config.as_ref().map(|k| &k.labels);
            match (labels, v.split_once('=')) {
                (Some(l), Some((k, val))) => l.get(k).is_some_and(|x| x == val),
                (Some(l), None) => l.contains_key(v),
                (None, _) => false,
            }
        }
        "ancestor" => {
            let want = normalize(v);
            normalize(&c.image) == want
                || c.image_digest == v
                || (v.len() >= 12
                    && c.image_digest.trim_start_matches("sha256:").starts_with(v.trim_start_matches("sha256:")))
        }
        _ => false,
    }
}

/// Docker's reference normalization, or the text itself when it is not a reference.
fn normalize(r: &str) -> String {
    berth_common::reference::Reference::parse(r).map(|x| x.to_string()).unwrap_or_else(|_| r.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctr(name: &str, image: &str, code: i32) -> pb::Container {
        let mut labels = std::collections::HashMap::new();
        labels.insert("tier".to_string(), "web".to_string());
        pb::Container {
            id: "abcdef0123".into(),
            name: name.into(),
            image: image.into(),
            exit_code: code,
            config: Some(pb::ContainerConfig { labels, ..Default::default() }),
            ..Default::default()
        }
    }

    #[test]
    fn keys_and_alternatives() {
        let f = Filters::parse(&["name=we".into(), "name=db".into(), "status=running".into()]).unwrap();
        assert!(f.matches(&ctr("web", "busybox", 0), "running"));
        assert!(!f.matches(&ctr("web", "busybox", 0), "exited"));
        assert!(!f.matches(&ctr("cache", "busybox", 0), "running"));
        let f = Filters::parse(&["label=tier=web".into(), "ancestor=busybox:latest".into()]).unwrap();
        assert!(f.matches(&ctr("x", "docker.io/library/busybox", 0), "running"));
        assert!(!Filters::parse(&["label=tier=db".into()]).unwrap().matches(&ctr("x", "busybox", 0), "running"));
        let f = Filters::parse(&["exited=3".into()]).unwrap();
        assert!(f.wants_all());
        assert!(f.matches(&ctr("x", "busybox", 3), "exited"));
        assert!(!f.matches(&ctr("x", "busybox", 0), "exited"));
    }

    #[test]
    fn bad_filters_say_what_is_wrong() {
        let e = Filters::parse(&["colour=red".into()]).unwrap_err().to_string();
        assert!(e.contains("invalid filter 'colour'"), "{e}");
        let e = Filters::parse(&["status=sleepy".into()]).unwrap_err().to_string();
        assert!(e.contains("status=sleepy"), "{e}");
        assert!(Filters::parse(&["name".into()]).is_err());
    }
}
