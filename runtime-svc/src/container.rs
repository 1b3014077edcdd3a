//! A container's record (saved as `<root>/containers/<id>/container.json` after every
//! transition), its state machine guards, and names.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Lifecycle status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Made, never started.
    Created,
    /// Its process runs (under its shim).
    Running,
    /// Its process exited.
    Exited,
    /// Being removed.
    Removing,
}

impl Status {
    /// Start is allowed from here.
    pub fn can_start(self) -> bool {
        matches!(self, Status::Created | Status::Exited)
    }
    /// Kill/stop have something to signal.
    pub fn can_kill(self) -> bool {
        self == Status::Running
    }
    /// Remove without force is allowed.
    pub fn can_remove(self) -> bool {
        matches!(self, Status::Created | Status::Exited)
    }
}

/// What the container runs: the image config merged with the user's overrides.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSettings {
    /// Entrypoint after overrides.
    pub entrypoint: Vec<String>,
    /// Cmd after overrides.
    pub cmd: Vec<String>,
    /// Environment "K=V".
    pub env: Vec<String>,
    /// Working directory ("" = "/").
    pub working_dir: String,
    /// User spec ("" = root).
    pub user: String,
    /// Host name ("" = short ID).
    pub hostname: String,
    /// Stdin is a pipe fed by attach.
    pub open_stdin: bool,
    /// A pty (not yet supported).
    pub tty: bool,
    /// Stop signal ("" = SIGTERM).
    pub stop_signal: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
}

impl RunSettings {
    /// argv: entrypoint then cmd.
    pub fn argv(&self) -> Vec<String> {
        self.entrypoint.iter().chain(self.cmd.iter()).cloned().collect()
    }
}

/// Host-side settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostSettings {
    /// Memory limit in bytes (0 = none).
    pub memory_bytes: i64,
    /// CPU limit in 1e-9 CPUs (0 = none).
    pub nano_cpus: i64,
    /// Max processes (0 = none).
    pub pids_limit: i64,
    /// Remove on exit.
    pub auto_remove: bool,
    /// json-file log options in effect (`max-size`, `max-file`; docker's names).
    #[serde(default)]
    pub log_opts: BTreeMap<String, String>,
    /// `-v` specs as given.
    #[serde(default)]
    pub binds: Vec<String>,
    /// `--mount` entries as given (validated).
    #[serde(default)]
    pub mounts: Vec<crate::mounts::MountSpec>,
    /// `--read-only`.
    #[serde(default)]
    pub readonly_rootfs: bool,
    /// `--tmpfs` path -> options.
    #[serde(default)]
    pub tmpfs: BTreeMap<String, String>,
    /// `--restart`.
    #[serde(default)]
    pub restart: crate::restart::RestartPolicy,
}

/// Everything runtime-svc knows about a container, persisted.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Record {
    /// 64 hex.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// Image as given.
    pub image: String,
    /// Manifest digest.
    pub image_digest: String,
    /// Merged run settings.
    pub run: RunSettings,
    /// Host settings.
    pub host: HostSettings,
    /// Layer directories, bottom-most first.
    pub lowers: Vec<PathBuf>,
    /// Snapshot chain IDs in use (kept from pruning).
    pub chain_ids: Vec<String>,
    /// Status.
    pub status: Status,
    /// ns since epoch.
    pub created_at: i64,
    /// ns since epoch (0 = never).
    pub started_at: i64,
    /// ns since epoch (0 = never).
    pub finished_at: i64,
    /// Exit code of the last run.
    pub exit_code: i32,
    /// Start failure message.
    pub error: String,
    /// OOM killed in the last run.
    pub oom_killed: bool,
    /// Container init pid while running.
    pub pid: i32,
    /// Shim pid while running.
    pub shim_pid: i32,
    /// Times started.
    pub start_count: i32,
    /// Image ID ("sha256:<config digest>").
    #[serde(default)]
    pub image_id: String,
    /// Every mount (user's and the image's VOLUMEs), volumes named (see `mounts`).
    #[serde(default)]
    pub mount_points: Vec<crate::mounts::MountSpec>,
    /// Restarts made by the restart policy.
    #[serde(default)]
    pub restart_count: i32,
    /// Waiting for the restart policy to start it again.
    #[serde(default)]
    pub restarting: bool,
    /// Last restart delay (ms), for the backoff.
    #[serde(default)]
    pub restart_delay_ms: u64,
    /// Stopped or killed by the user (restart policies leave it alone).
    #[serde(default)]
    pub manually_stopped: bool,
    /// Network request and, while running, the attachment.
    #[serde(default)]
    pub net: crate::network::ContainerNet,
}

impl Record {
    /// Saves atomically as `<dir>/container.json`.
    pub fn save(&self, dir: &Path) -> std::io::Result<()> {
        let tmp = dir.join("container.json.tmp");
        let data = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(&tmp, data)?;
        std::fs::rename(&tmp, dir.join("container.json"))
    }

    /// Loads `<dir>/container.json`.
    pub fn load(dir: &Path) -> std::io::Result<Record> {
        let data = std::fs::read(dir.join("container.json"))?;
        serde_json::from_slice(&data).map_err(std::io::Error::other)
    }
}

/// Nanoseconds since the Unix epoch.
pub fn now_nanos() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}

/// A new random 64-hex container ID.
pub fn new_id() -> String {
    let mut buf = [0u8; 32];
    let mut filled = 0;
    while filled < buf.len() {
        let n = unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), buf.len() - filled, 0) };
        if n > 0 {
            filled += n as usize;
        }
    }
    hex::encode(buf)
}

/// A name is `[a-zA-Z0-9][a-zA-Z0-9_.-]*` (docker's rule), at most 128 characters.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        && name.len() <= 128
}

const ADJECTIVES: &[&str] = &[
    "admiring",
    "agitated",
    "amazing",
    "angry",
    "awesome",
    "blissful",
    "bold",
    "boring",
    "brave",
    "busy",
    "charming",
    "clever",
    "cool",
    "compassionate",
    "competent",
    "confident",
    "crazy",
    "dazzling",
    "determined",
    "distracted",
    "dreamy",
    "eager",
    "ecstatic",
    "elastic",
    "elated",
    "elegant",
    "epic",
    "festive",
    "focused",
    "friendly",
    "frosty",
    "gallant",
    "gifted",
    "goofy",
    "gracious",
    "happy",
    "hardcore",
    "heuristic",
    "hopeful",
    "hungry",
    "infallible",
    "inspiring",
    "jolly",
    "jovial",
    "keen",
    "kind",
    "laughing",
    "loving",
    "lucid",
    "magical",
    "modest",
    "musing",
    "naughty",
    "nervous",
    "nice",
    "nifty",
    "nostalgic",
    "objective",
    "optimistic",
    "peaceful",
    "pedantic",
    "pensive",
    "practical",
    "priceless",
    "quirky",
    "quizzical",
    "relaxed",
    "reverent",
    "romantic",
    "serene",
    "sharp",
    "silly",
    "sleepy",
    "stoic",
    "strange",
    "sweet",
    "tender",
    "thirsty",
    "trusting",
    "upbeat",
    "vibrant",
    "vigilant",
    "vigorous",
    "wizardly",
    "wonderful",
    "youthful",
    "zealous",
    "zen",
];

const SURNAMES: &[&str] = &[
    "albattani",
    "allen",
    "archimedes",
    "babbage",
    "banach",
    "bardeen",
    "bassi",
    "bell",
    "bhabha",
    "bohr",
    "booth",
    "borg",
    "bose",
    "brahmagupta",
    "brown",
    "carson",
    "cerf",
    "chandrasekhar",
    "clarke",
    "curie",
    "darwin",
    "davinci",
    "dijkstra",
    "einstein",
    "elion",
    "engelbart",
    "euclid",
    "euler",
    "fermat",
    "fermi",
    "feynman",
    "franklin",
    "galileo",
    "gates",
    "goldberg",
    "goodall",
    "hamilton",
    "hawking",
    "heisenberg",
    "hopper",
    "hypatia",
    "jang",
    "jennings",
    "johnson",
    "kalam",
    "keller",
    "kepler",
    "knuth",
    "kowalevski",
    "lamarr",
    "leakey",
    "liskov",
    "lovelace",
    "lumiere",
    "mayer",
    "mccarthy",
    "mcclintock",
    "meitner",
    "mendel",
    "morse",
    "newton",
    "nobel",
    "noether",
    "pare",
    "pascal",
    "pasteur",
    "perlman",
    "pike",
    "poincare",
    "ptolemy",
    "raman",
    "ritchie",
    "rosalind",
    "sammet",
    "shannon",
    "shockley",
    "sinoussi",
    "stallman",
    "swanson",
    "tesla",
    "thompson",
    "torvalds",
    "turing",
    "volhard",
    "wilbur",
    "williams",
    "wozniak",
    "wright",
    "yalow",
    "yonath",
];

/// A random adjective_surname name.
pub fn random_name() -> String {
    let id = new_id();
    let n = u64::from_str_radix(&id[..16], 16).unwrap_or(0);
    let a = ADJECTIVES[(n % ADJECTIVES.len() as u64) as usize];
    let s = SURNAMES[((n >> 32) % SURNAMES.len() as u64) as usize];
    format!("{a}_{s}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards() {
        assert!(Status::Created.can_start() && Status::Exited.can_start());
        assert!(!Status::Running.can_start() && !Status::Removing.can_start());
        assert!(Status::Running.can_kill() && !Status::Exited.can_kill());
        assert!(!Status::Running.can_remove() && Status::Exited.can_remove());
    }

    #[test]
    fn names_and_ids() {
        assert!(valid_name("web-1.a_b") && !valid_name("-x") && !valid_name("") && !valid_name("a/b"));
        let n = random_name();
        assert!(n.contains('_') && valid_name(&n));
        let id = new_id();
        assert_eq!(id.len(), 64);
        assert_ne!(id, new_id());
    }

    #[test]
    fn record_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let r = Record {
            id: new_id(),
            name: "x".into(),
            image: "busybox".into(),
            image_digest: String::new(),
            run: RunSettings { cmd: vec!["true".into()], ..Default::default() },
            host: HostSettings::default(),
            lowers: vec![],
            chain_ids: vec![],
            status: Status::Created,
            created_at: now_nanos(),
            started_at: 0,
            finished_at: 0,
            exit_code: 0,
            error: String::new(),
            oom_killed: false,
            pid: 0,
            shim_pid: 0,
            start_count: 0,
            image_id: String::new(),
            mount_points: vec![],
            restart_count: 0,
            restarting: false,
            restart_delay_ms: 0,
            manually_stopped: false,
            net: Default::default(),
        };
        r.save(dir.path()).unwrap();
        let back = Record::load(dir.path()).unwrap();
        assert_eq!(back.id, r.id);
        assert_eq!(back.run, r.run);
    }
}
