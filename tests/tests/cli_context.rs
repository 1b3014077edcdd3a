//! How `berth` finds the services, as `docker context` does: flags beat the environment, which
//! beats the config file's context, which beats the local stack; `berth context` manages the
//! file; a broken config file is refused with a message naming the problem.

use berth_tests::stack::bin_path;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Self {
        Self { dir: tempfile::tempdir().unwrap() }
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("cfg/config.toml")
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// `berth` with this test's config file and no BERTH_* from the outside.
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin_path("berth"));
        c.args(args).env("BERTH_CONFIG", self.config()).stdin(Stdio::null());
        for v in ["BERTH_ROOT", "BERTH_STORE", "BERTH_REGISTRY", "BERTH_RUNTIME", "BERTH_CONTEXT"] {
            c.env_remove(v);
        }
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(o.status.success(), "berth {args:?} failed: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}

fn sock(dir: &Path, name: &str) -> String {
    format!("unix://{}/{name}.sock", dir.display())
}

fn sources(info: &Value) -> Vec<(String, String)> {
    info["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["source"].as_str().unwrap().to_string(), s["endpoint"].as_str().unwrap().to_string()))
        .collect()
}

fn info_of(out: &Output) -> Value {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn flags_beat_env_beat_context() {
    let e = Env::new();
    let d = e.dir.path();
    // A context whose endpoints lead nowhere: nothing is started, every service shows as down.
    std::fs::create_dir_all(e.config().parent().unwrap()).unwrap();
    std::fs::write(
        e.config(),
        format!(
            "current_context = \"far\"\n[contexts.far]\nstore = \"{}\"\nregistry = \"{}\"\nruntime = \"{}\"\n",
            sock(d, "ctx-store"),
            sock(d, "ctx-registry"),
            sock(d, "ctx-runtime")
        ),
    )
    .unwrap();

    let info = info_of(&e.run(&["system", "info", "--format", "json"]));
    assert_eq!(info["context"], "far");
    for (i, (src, _)) in sources(&info).iter().enumerate() {
        assert_eq!(src, "context far", "service {i}: {info}");
    }
    assert!(info["services"].as_array().unwrap().iter().all(|s| s["status"] == "DOWN"), "{info}");

    let info = info_of(
        &e.command(&["--registry", &sock(d, "flag-registry"), "system", "info", "--format", "json"])
            .env("BERTH_STORE", sock(d, "env-store"))
            .env("BERTH_REGISTRY", sock(d, "env-registry"))
            .output()
            .unwrap(),
    );
    let s = sources(&info);
    assert_eq!(s[0], ("env BERTH_STORE".to_string(), sock(d, "env-store")));
    assert_eq!(s[1], ("flag".to_string(), sock(d, "flag-registry")));
    assert_eq!(s[2], ("context far".to_string(), sock(d, "ctx-runtime")));

    // BERTH_ROOT means "the local stack there" unless a context is named explicitly.
    let root = e.path("root");
    let all_flags = [
        "--store",
        &sock(d, "a"),
        "--registry",
        &sock(d, "b"),
        "--runtime",
        &sock(d, "c"),
        "system",
        "info",
        "--format",
        "json",
    ]
    .map(str::to_string);
    let args: Vec<&str> = all_flags.iter().map(String::as_str).collect();
    let info = info_of(&e.command(&args).env("BERTH_ROOT", &root).output().unwrap());
    assert_eq!(info["context"], "default");
    assert_eq!(info["root"], root.display().to_string());
    let info = info_of(
        &e.command(&["--context", "far", "system", "info", "--format", "json"])
            .env("BERTH_ROOT", &root)
            .output()
            .unwrap(),
    );
    assert_eq!(info["context"], "far");
    assert!(!root.exists(), "a configured context started a local stack");
}

#[test]
fn context_commands_manage_the_config_file() {
    let e = Env::new();
    assert_eq!(e.ok(&["context", "show"]).trim(), "default");
    let ls = e.ok(&["context", "ls"]);
    assert!(ls.starts_with("NAME") && ls.contains("default *"), "{ls}");

    let scratch = e.path("scratch-root");
    e.ok(&[
        "--store",
        "https://store.example:7443",
        "context",
        "create",
        "prod",
        "--description",
        "split deployment",
        "--tls-ca",
        "/etc/berth/ca.pem",
    ]);
    e.ok(&["--root", scratch.to_str().unwrap(), "context", "create", "scratch"]);
    let o = e.run(&["context", "create", "prod"]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("already exists"));

    let ls = e.ok(&["context", "ls"]);
    assert!(
        ls.contains("prod") && ls.contains("split deployment") && ls.contains("https://store.example:7443"),
        "{ls}"
    );
    assert!(ls.contains(&format!("Local stack in {}", scratch.display())), "{ls}");

    e.ok(&["context", "use", "prod"]);
    assert_eq!(e.ok(&["context", "show"]).trim(), "prod");
    let text = std::fs::read_to_string(e.config()).unwrap();
    assert!(text.contains("current_context = \"prod\"") && text.contains("/etc/berth/ca.pem"), "{text}");

    let o = e.run(&["context", "use", "nope"]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("does not exist"));

    e.ok(&["context", "rm", "prod"]);
    assert_eq!(e.ok(&["context", "show"]).trim(), "default", "removing the current context falls back to default");
    assert!(!e.ok(&["context", "ls"]).contains("prod"));
}

#[test]
fn a_context_with_a_root_starts_its_own_local_stack() {
    let e = Env::new();
    let scratch = e.path("scratch-root");
    e.ok(&["--root", scratch.to_str().unwrap(), "context", "create", "scratch"]);
    let df = e.run(&["--context", "scratch", "--registry", "unix:///nonexistent.sock", "system", "df"]);
    let err = String::from_utf8_lossy(&df.stderr);
    assert!(df.status.success(), "{err}");
    assert!(err.contains(&format!("Starting the local Berth stack in {}", scratch.display())), "{err}");
    let out = e.ok(&["--context", "scratch", "system", "stop"]);
    assert!(out.contains("Stopped store-svc"), "{out}");
}

#[test]
fn a_broken_config_file_is_refused_clearly() {
    let e = Env::new();
    std::fs::create_dir_all(e.config().parent().unwrap()).unwrap();
    std::fs::write(e.config(), "[contexts.a]\nstroe = \"unix:///x.sock\"\n").unwrap();
    let o = e.run(&["system", "df"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(125), "{err}");
    assert!(err.contains("stroe") && err.contains(&e.config().display().to_string()), "{err}");

    std::fs::write(e.config(), "current_context = \"ghost\"\n").unwrap();
    let err = String::from_utf8_lossy(&e.run(&["version"]).stderr).into_owned();
    assert!(err.contains("ghost"), "{err}");

    std::fs::write(e.config(), "[contexts.a]\nstore = \"ftp://x:1\"\n").unwrap();
    let err = String::from_utf8_lossy(&e.run(&["version"]).stderr).into_owned();
    assert!(err.contains("ftp://x:1"), "{err}");
}
