//! Split deployment from the CLI's side: store-svc listening on TCP with mutual TLS, `berth`
//! reaching it through a context of its config file that names the endpoint and the client's
//! certificates — and failing clearly without them. Nothing is started locally.

use berth_tests::stack::{bin_path, free_port, Service};
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn berth(dir: &Path, args: &[&str]) -> Output {
    let mut c = Command::new(bin_path("berth"));
    c.args(args).env("BERTH_CONFIG", dir.join("config.toml")).stdin(Stdio::null());
    // No BERTH_ROOT: it would select the local stack over the config file's context.
    for v in ["BERTH_ROOT", "BERTH_STORE", "BERTH_REGISTRY", "BERTH_RUNTIME", "BERTH_CONTEXT"] {
        c.env_remove(v);
    }
    c.output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_reaches_a_store_over_mutual_tls_through_a_context() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    if !berth_tests::certs::make_certs(d, "store") {
        eprintln!("SKIPPED: openssl is not installed (apt-get install openssl)");
        return;
    }
    let port = free_port();
    let store_cfg = d.join("store.toml");
    std::fs::write(
        &store_cfg,
        format!(
            "[tls]\ncert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{}\"\n",
            d.join("store.pem").display(),
            d.join("store-key.pem").display(),
            d.join("ca.pem").display()
        ),
    )
    .unwrap();
    let _store = Service::builder("store-svc")
        .arg("--listen")
        .arg(format!("https://127.0.0.1:{port}"))
        .arg("--config")
        .arg(store_cfg.display().to_string())
        .start()
        .await;

    let nowhere = format!("unix://{}/nowhere.sock", d.display());
    let ctx = |name: &str, with_cert: bool| {
        let cert = if with_cert {
            format!("cert = \"{}\"\nkey = \"{}\"\n", d.join("client.pem").display(), d.join("client-key.pem").display())
        } else {
            String::new()
        };
        format!(
            "[contexts.{name}]\nstore = \"https://127.0.0.1:{port}\"\nregistry = \"{nowhere}\"\nruntime = \"{nowhere}\"\n\
             [contexts.{name}.tls]\nca = \"{}\"\n{cert}",
            d.join("ca.pem").display()
        )
    };
    std::fs::write(
        d.join("config.toml"),
        format!("current_context = \"prod\"\n{}\n{}", ctx("prod", true), ctx("nocert", false)),
    )
    .unwrap();

    let o = berth(d, &["system", "df"]);
    let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "df over mTLS failed:\n{out}\n{err}");
    assert!(out.contains("RECLAIMABLE") && out.contains("Blobs"), "{out}");
    assert!(!err.contains("Starting the local Berth stack"), "{err}");

    let o = berth(d, &["system", "info", "--format", "json"]);
    let info: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let store = &info["services"][0];
    assert_eq!(store["status"], "SERVING", "{info}");
    assert_eq!(store["source"], "context prod");
    assert_eq!(store["endpoint"], format!("https://127.0.0.1:{port}"));
    assert_eq!(info["services"][1]["status"], "DOWN");

    // Without a client certificate the store does not serve us, and berth says which endpoint.
    let o = berth(d, &["--context", "nocert", "system", "df"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(125), "{err}");
    assert!(err.contains(&format!("https://127.0.0.1:{port}")), "{err}");
    assert!(!err.contains("Starting the local Berth stack"), "{err}");
}

/// Split deployment end to end: store-svc and runtime-svc listen on TCP with mutual TLS,
/// registry-svc and runtime-svc reach the store with client certificates from their config
/// files (`store_tls`), and `berth` pulls and runs busybox through a context — nothing plain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_reach_each_other_over_mutual_tls() {
    if unsafe { libc::geteuid() } != 0 || !Path::new("/usr/sbin/runc").exists() {
        eprintln!("SKIPPED: needs root and /usr/sbin/runc");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    if !berth_tests::certs::make_certs(d, "store") {
        eprintln!("SKIPPED: openssl is not installed (apt-get install openssl)");
        return;
    }
    let registry = berth_tests::registry::Registry::start().expect("starting docker-registry");
    let busybox = registry.push_fixture(berth_tests::fixtures::Fixture::Busybox, "busybox").expect("pushing busybox");
    let p = |f: &str| d.join(f).display().to_string();
    let server_tls = format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{}\"\n",
        p("store.pem"),
        p("store-key.pem"),
        p("ca.pem")
    );
    let store_tls = format!(
        "[store_tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
        p("ca.pem"),
        p("client.pem"),
        p("client-key.pem")
    );

    let store_port = free_port();
    std::fs::write(d.join("store.toml"), &server_tls).unwrap();
    let _store = Service::builder("store-svc")
        .arg("--listen")
        .arg(format!("https://127.0.0.1:{store_port}"))
        .arg("--config")
        .arg(p("store.toml"))
        .start()
        .await;
    let store_ep = format!("https://127.0.0.1:{store_port}");

    std::fs::write(d.join("registry.toml"), &store_tls).unwrap();
    let registry_svc =
        Service::builder("registry-svc").args(["--store", &store_ep, "--config", &p("registry.toml")]).start().await;

    let runtime_port = free_port();
    std::fs::write(d.join("runtime.toml"), format!("{server_tls}{store_tls}")).unwrap();
    let _runtime = Service::builder("runtime-svc")
        .arg("--listen")
        .arg(format!("https://127.0.0.1:{runtime_port}"))
        .args(["--store", &store_ep, "--config", &p("runtime.toml")])
        .start()
        .await;

    std::fs::write(
        d.join("config.toml"),
        format!(
            "current_context = \"split\"\n[contexts.split]\nstore = \"{store_ep}\"\nregistry = \"{}\"\n\
             runtime = \"https://127.0.0.1:{runtime_port}\"\n[contexts.split.tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
            registry_svc.endpoint(),
            p("ca.pem"),
            p("client.pem"),
            p("client-key.pem")
        ),
    )
    .unwrap();

    let o = berth(d, &["run", "--rm", &busybox, "echo", "hello over mtls"]);
    let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(
        o.status.success(),
        "run through the split stack failed:\n{out}\n{err}\nregistry-svc:\n{}",
        registry_svc.log()
    );
    assert_eq!(out, "hello over mtls\n");
    assert!(err.contains("Unable to find image"), "the image was pulled through registry-svc first: {err}");
    let o = berth(d, &["images", "-q"]);
    assert!(o.status.success() && !o.stdout.is_empty(), "{}", String::from_utf8_lossy(&o.stderr));
}
