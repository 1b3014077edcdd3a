//! The first `berth run` of an image the store lacks: runtime-svc unpacks each layer while the
//! image is still being pulled (the Prefetch call), and the run behaves exactly as before: right
//! output, every layer a snapshot. A pull that fails part-way leaves no snapshot, no unpack debris
//! and no container, and the next run of a good image works (root only; real services).

mod run_env;

use berth_tests::fixtures::{self, Fixture};
use run_env::{can_run, Env};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn out(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
fn err(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// runtime-svc's snapshot dirs (`<root>/snapshots/snapshots/*`) and unpacks in progress (`tmp/*`).
fn snapshot_dirs(env: &Env) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let root = env.runtime.root().join("snapshots");
    let list = |d: &Path| -> Vec<PathBuf> {
        std::fs::read_dir(d).map(|r| r.flatten().map(|e| e.path()).collect()).unwrap_or_default()
    };
    (list(&root.join("snapshots")), list(&root.join("tmp")))
}

#[tokio::test(flavor = "multi_thread")]
async fn first_run_of_a_multi_layer_image_unpacks_while_pulling() {
    if !can_run() {
        return;
    }
    let env = Env::start().await;
    let img = env.registry.push_fixture(Fixture::Layered, "layered").unwrap();
    let o = env.berth(&["run", "--rm", &img, "sh", "-c", "cat /etc/motd; ls /data; ls /cache; ls /opt"]).await;
    assert_eq!(o.status.code(), Some(0), "stderr: {}\nruntime-svc log:\n{}", err(&o), env.runtime.log());
    eprintln!("berth run's stderr:\n{}", err(&o));
    // The top layer's file, the whiteouts of the third layer and its opaque directory.
    assert_eq!(out(&o), "layer three\na\nc\nnew\n", "stderr: {}", err(&o));
    assert!(err(&o).contains("Unable to find image"), "{}", err(&o));
    assert!(err(&o).contains("Pull complete"), "{}", err(&o));
    // Each of the three layers was unpacked during the pull and committed after it.
    let log = env.runtime.log();
    assert_eq!(log.matches("committing a layer unpacked while the image was pulled").count(), 3, "{log}");
    let (snaps, tmp) = snapshot_dirs(&env);
    assert_eq!(snaps.len(), 3, "{snaps:?}");
    assert!(tmp.is_empty(), "unpack debris: {tmp:?}");
    assert!(env.ps_all().await.is_empty());
    // The image is in the store as after a plain pull, and a second run needs no pull.
    let o = env.berth(&["run", "--rm", &img, "cat", "/etc/motd"]).await;
    assert_eq!((o.status.code(), out(&o).as_str()), (Some(0), "layer three\n"), "{}", err(&o));
    assert!(!err(&o).contains("Unable to find image"), "{}", err(&o));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pull_failing_part_way_leaves_no_snapshot_and_no_container() {
    if !can_run() {
        return;
    }
    let env = Env::start().await;
    let img = env.registry.push_fixture(Fixture::Layered, "broken").unwrap();
    // The registry serves the top layer with one byte changed: registry-svc refuses it after
    // the other layers may already have landed (and been unpacked ahead).
    let top = top_layer_hex(&fixtures::cached(Fixture::Layered).unwrap().dir);
    let blob = find_blob(&env.registry.data_dir(), &top).expect("the top layer in the registry's storage");
    let mut data = std::fs::read(&blob).unwrap();
    let last = data.len() - 1;
    data[last] ^= 0xff;
    std::fs::write(&blob, &data).unwrap();

    let o = env.berth(&["run", "--rm", "--name", "never", &img, "true"]).await;
    assert_eq!(o.status.code(), Some(125), "stdout: {}\nstderr: {}", out(&o), err(&o));
    assert!(err(&o).contains("Unable to find image"), "{}", err(&o));
    assert!(env.ps_all().await.is_empty(), "a container was left");
    // Whatever was unpacked ahead is removed (unpacks still running go when they end).
    env.eventually("no snapshot and no unpack debris", Duration::from_secs(20), || async {
        let (snaps, tmp) = snapshot_dirs(&env);
        snaps.is_empty() && tmp.is_empty()
    })
    .await;
    let images = env.ok(&["images", "-q"]).await;
    assert!(images.trim().is_empty(), "an image record was left: {images}");

    // A good image of the same layers runs afterwards.
    std::fs::write(&blob, {
        data[last] ^= 0xff;
        &data
    })
    .unwrap();
    let o = env.berth(&["run", "--rm", &img, "cat", "/etc/motd"]).await;
    assert_eq!((o.status.code(), out(&o).as_str()), (Some(0), "layer three\n"), "{}", err(&o));
}

/// Hex digest of the last layer of a layout's single manifest.
fn top_layer_hex(layout: &Path) -> String {
    let read = |digest: &str| -> serde_json::Value {
        let hex = digest.trim_start_matches("sha256:");
        serde_json::from_slice(&std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap()).unwrap()
    };
    let idx: serde_json::Value = serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let m = read(idx["manifests"][0]["digest"].as_str().unwrap());
    let layers = m["layers"].as_array().unwrap();
    layers.last().unwrap()["digest"].as_str().unwrap().trim_start_matches("sha256:").to_string()
}

/// distribution's file for a blob: `.../blobs/sha256/<2 hex>/<hex>/data`.
fn find_blob(dir: &Path, hex: &str) -> Option<PathBuf> {
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let p = e.path();
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n == hex) && p.join("data").is_file() {
                return Some(p.join("data"));
            }
            if let Some(f) = find_blob(&p, hex) {
                return Some(f);
            }
        }
    }
    None
}
