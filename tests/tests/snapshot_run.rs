//! Hostile layers end to end (issue 4, item 5): images whose top layer tries to escape (path
//! traversal, symlink escape, hard link out, whiteout outside) are pushed to a real registry,
//! pulled through registry-svc and run with `berth run`; each run fails with a clear error
//! (exit 125) and nothing is written outside the snapshot; an absolute path is contained in the
//! container's rootfs; the engine keeps working afterwards. Root only.

mod run_env;

use berth_tests::fixtures::{self, Fixture};
use berth_tests::layers::{dir, file, hardlink, raw_tar, symlink, Entry};
use run_env::{can_run, Env};
use sha2::{Digest as _, Sha256};
use std::path::{Path, PathBuf};

fn sha(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// An OCI layout: the busybox fixture with `top` (a tar) added as a gzip layer on top.
fn layout_with_top_layer(dest: &Path, top: &[u8]) -> PathBuf {
    let base = fixtures::cached(Fixture::Busybox).unwrap();
    let blobs = dest.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    for e in std::fs::read_dir(base.dir.join("blobs/sha256")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), blobs.join(e.file_name())).unwrap();
    }
    std::fs::copy(base.dir.join("oci-layout"), dest.join("oci-layout")).unwrap();
    let put = |data: &[u8]| -> (String, usize) {
        let d = sha(data);
        std::fs::write(blobs.join(d.trim_start_matches("sha256:")), data).unwrap();
        (d, data.len())
    };
    let read = |d: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(blobs.join(d.trim_start_matches("sha256:"))).unwrap()).unwrap()
    };
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(base.dir.join("index.json")).unwrap()).unwrap();
    let mut manifest = read(index["manifests"][0]["digest"].as_str().unwrap());
    let mut config = read(manifest["config"]["digest"].as_str().unwrap());

    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, top).unwrap();
    let (ld, ls) = put(&gz.finish().unwrap());
    config["rootfs"]["diff_ids"].as_array_mut().unwrap().push(sha(top).into());
    if let Some(h) = config["history"].as_array_mut() {
        h.push(serde_json::json!({"created_by": "hostile layer"}));
    }
    let (cd, cs) = put(&serde_json::to_vec(&config).unwrap());
    manifest["config"]["digest"] = cd.into();
    manifest["config"]["size"] = cs.into();
    manifest["layers"].as_array_mut().unwrap().push(serde_json::json!({
        "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": ld, "size": ls
    }));
    let (md, ms) = put(&serde_json::to_vec(&manifest).unwrap());
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": ms,
            "annotations": {"org.opencontainers.image.ref.name": fixtures::TAG}
        }]
    });
    std::fs::write(dest.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    dest.to_path_buf()
}

fn untouched(sentinel: &Path, what: &str) {
    let names: Vec<_> = std::fs::read_dir(sentinel).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, ["secret"], "{what}: something was written outside the snapshot");
    assert_eq!(std::fs::read(sentinel.join("secret")).unwrap(), b"untouched", "{what}");
    let nlink = std::os::unix::fs::MetadataExt::nlink(&std::fs::metadata(sentinel.join("secret")).unwrap());
    assert_eq!(nlink, 1, "{what}: the secret was hard-linked");
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_layers_fail_the_run_or_are_contained() {
    if !can_run() {
        return;
    }
    let env = Env::start().await;
    let work = tempfile::tempdir().unwrap();
    let sentinel = work.path().join("sentinel");
    std::fs::create_dir_all(&sentinel).unwrap();
    std::fs::write(sentinel.join("secret"), b"untouched").unwrap();
    let s = sentinel.display().to_string();
    let up = format!("{}{}", "../".repeat(16), s.trim_start_matches('/'));

    let cases: Vec<(&str, Vec<Entry>, &str)> = vec![
        ("path traversal", vec![file("ok", b"ok"), file(&format!("{up}/pwned"), b"x")], ".."),
        ("symlink escape", vec![symlink("escape", &s), file("escape/pwned", b"x")], "symlink"),
        ("symlink escape (parent dir)", vec![dir("etc/"), symlink("etc/x", &s), dir("etc/x/y/")], "symlink"),
        ("hardlink out", vec![hardlink("h", &format!("{s}/secret"))], "does not exist in this layer"),
        ("whiteout outside", vec![file(&format!("{up}/.wh.secret"), b"")], ".."),
    ];
    for (i, (what, entries, expect)) in cases.into_iter().enumerate() {
        let layout = layout_with_top_layer(&work.path().join(format!("img{i}")), &raw_tar(&entries));
        let reference = env.registry.push_layout(&layout, &format!("hostile{i}")).unwrap();
        env.pull(&reference).await;
        let o = env.berth(&["run", "--rm", &reference, "true"]).await;
        let stderr = String::from_utf8_lossy(&o.stderr);
        eprintln!("{what}: berth run said: {}", stderr.trim());
        assert_eq!(o.status.code(), Some(125), "{what}: stderr: {stderr}");
        assert!(stderr.contains(expect) && stderr.contains("layer sha256:"), "{what}: unclear error: {stderr}");
        untouched(&sentinel, what);
    }

    // An absolute path is contained: it lands inside the container's rootfs.
    let layout = layout_with_top_layer(
        &work.path().join("contained"),
        &raw_tar(&[file(&format!("{s}/pwned"), b"contained\n"), file("/etc/motd", b"hello\n")]),
    );
    let reference = env.registry.push_layout(&layout, "contained").unwrap();
    env.pull(&reference).await;
    let o = env.berth(&["run", "--rm", &reference, "cat", &format!("{s}/pwned"), "/etc/motd"]).await;
    assert_eq!(o.status.code(), Some(0), "stderr: {}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "contained\nhello\n");
    untouched(&sentinel, "absolute path");

    // Failed unpacks left nothing half-done, and the engine still runs containers.
    let tmp = env.runtime.root().join("snapshots/tmp");
    if tmp.exists() {
        assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0, "half-unpacked layers left in {}", tmp.display());
    }
    env.pull(&env.busybox.clone()).await;
    let o = env.berth(&["run", "--rm", &env.busybox, "echo", "still fine"]).await;
    assert_eq!(String::from_utf8_lossy(&o.stdout), "still fine\n", "{}", String::from_utf8_lossy(&o.stderr));
}
