//! Snapshots from a real store-svc: fixture images (gzip and zstd, layers with whiteouts and an
//! opaque directory) are written into store-svc, streamed out of it by runtime-svc's snapshotter,
//! unpacked, mounted as overlayfs and run with chroot; a hostile layer in the store fails with a
//! clear error and writes nothing outside its snapshot. Needs root (mount, mknod, chown).

use berth_common::Digest;
use berth_proto::store::v1 as pb;
use berth_proto::store::v1::content_client::ContentClient;
use berth_tests::fixtures::{self, Fixture};
use berth_tests::layers::{file, hardlink, layout_layers, raw_tar, symlink, Entry};
use berth_tests::stack::Service;
use bytes::Bytes;
use runtime_svc::snapshot::{Layer, SnapshotError, Snapshotter, StoreLayerSource, UnpackProgress};
use std::path::{Path, PathBuf};
use tonic::transport::Channel;

/// Writes `data` into store-svc as a committed blob.
async fn put_blob(ch: Channel, data: Bytes) -> Digest {
    let mut c = ContentClient::new(ch).max_encoding_message_size(64 << 20);
    let d = Digest::of(&data);
    let mut msgs = Vec::new();
    let mut off = 0usize;
    loop {
        let end = (off + (1 << 20)).min(data.len());
        msgs.push(pb::WriteRequest {
            r#ref: if off == 0 { format!("snapshot-test-{}", d.hex()) } else { String::new() },
            expected: if off == 0 { d.to_string() } else { String::new() },
            total: if off == 0 { data.len() as i64 } else { 0 },
            offset: off as i64,
            data: data.slice(off..end),
            commit: end == data.len(),
            lease: String::new(),
        });
        off = end;
        if off >= data.len() {
            break;
        }
    }
    c.write(futures::stream::iter(msgs)).await.expect("store write");
    d
}

struct Rootfs {
    target: PathBuf,
}

impl Drop for Rootfs {
    fn drop(&mut self) {
        let _ = Snapshotter::unmount_rootfs(&self.target);
    }
}

fn mount(snap: &Snapshotter, lowers: &[PathBuf], dir: &Path) -> Rootfs {
    let (upper, work, target) = (dir.join("upper"), dir.join("work"), dir.join("rootfs"));
    for d in [&upper, &work, &target] {
        std::fs::create_dir_all(d).unwrap();
    }
    snap.mount_rootfs(lowers, &upper, &work, &target).unwrap();
    Rootfs { target }
}

fn chroot_sh(root: &Path, script: &str) -> String {
    let out = std::process::Command::new("chroot")
        .arg(root)
        .args(["/bin/sh", "-c", script])
        .output()
        .expect("running chroot");
    assert!(out.status.success(), "chroot {script:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layers_streamed_from_store_svc_unpack_mount_and_run() {
    let store = Service::start("store-svc").await;
    let ch = store.channel().await;
    let tmp = tempfile::tempdir().unwrap();
    let snap = Snapshotter::open(tmp.path().join("runtime")).unwrap();
    let src = StoreLayerSource::new(ch.clone());

    let built = fixtures::cached(Fixture::Layered).unwrap();
    let layers = layout_layers(&built.dir);
    assert_eq!(layers.len(), 3);
    for (layer, path) in &layers {
        let d = put_blob(ch.clone(), Bytes::from(std::fs::read(path).unwrap())).await;
        assert_eq!(d, layer.digest);
    }
    let layers: Vec<Layer> = layers.into_iter().map(|(l, _)| l).collect();

    let (tx, mut rx) = tokio::sync::mpsc::channel::<UnpackProgress>(256);
    let dirs = snap.prepare(&src, &layers, Some(tx)).await.unwrap();
    assert_eq!(dirs.len(), 3);
    let mut done = Vec::new();
    while let Some(p) = rx.recv().await {
        if p.done {
            done.push(p.layer);
        }
    }
    assert_eq!(done.len(), 3, "progress reports every layer done");

    let fs = mount(&snap, &dirs, &tmp.path().join("c1"));
    let r = &fs.target;
    // The image runs: busybox from layer 1, the third layer's changes on top.
    assert_eq!(chroot_sh(r, "echo hello from the snapshot"), "hello from the snapshot\n");
    assert_eq!(chroot_sh(r, "cat /etc/motd"), "layer three\n");
    assert_eq!(chroot_sh(r, "ls /data"), "a\nc\n", "whiteout of /data/b");
    assert_eq!(chroot_sh(r, "ls /cache"), "new\n", "opaque /cache hides cache/old");
    assert!(!r.join("etc/removed").exists() && !r.join("opt/gone").exists());
    assert!(r.join("etc/passwd").exists());

    // A second container of the same image shares the layers and sees nothing of the first's writes.
    chroot_sh(r, "echo mine > /tmp/only-c1");
    let again = snap.prepare(&src, &layers, None).await.unwrap();
    assert_eq!(again, dirs, "layers are unpacked once and shared");
    let fs2 = mount(&snap, &again, &tmp.path().join("c2"));
    assert!(!fs2.target.join("tmp/only-c1").exists());
    for d in &dirs {
        assert!(!d.join("tmp/only-c1").exists(), "the image's layers are unchanged");
    }

    // zstd layers stream and unpack as well.
    let z = fixtures::cached(Fixture::Zstd).unwrap();
    let zl = layout_layers(&z.dir);
    assert!(zl[0].0.media_type.ends_with("+zstd"));
    put_blob(ch.clone(), Bytes::from(std::fs::read(&zl[0].1).unwrap())).await;
    // (Its tar equals the gzip busybox layer's, so use a fresh snapshotter to really unpack it.)
    let zsnap = Snapshotter::open(tmp.path().join("runtime-zstd")).unwrap();
    let zdirs = zsnap.prepare(&src, &[zl[0].0.clone()], None).await.unwrap();
    assert!(zdirs[0].join("bin/busybox").is_file());
    assert_eq!(zsnap.list().unwrap()[0].layer_digest, zl[0].0.digest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_or_missing_layers_in_the_store_fail_cleanly() {
    let store = Service::start("store-svc").await;
    let ch = store.channel().await;
    let tmp = tempfile::tempdir().unwrap();
    let snap = Snapshotter::open(tmp.path().join("runtime")).unwrap();
    let src = StoreLayerSource::new(ch.clone());
    let sentinel = tmp.path().join("sentinel");
    std::fs::create_dir_all(&sentinel).unwrap();

    std::fs::write(sentinel.join("secret"), b"untouched").unwrap();
    let s = sentinel.display().to_string();
    // The four kinds of item 5, each a good entry first and then the hostile one(s).
    let cases: Vec<(&str, Vec<Entry>, &str)> = vec![
        ("path traversal", vec![file("ok", b"ok"), file("../../../sentinel/pwned", b"x")], ".."),
        ("symlink escape", vec![symlink("escape", &s), file("escape/pwned", b"x")], "symlink"),
        ("hardlink out (absolute)", vec![hardlink("h", &format!("{s}/secret"))], "does not exist in this layer"),
        ("hardlink out (..)", vec![hardlink("h", "../../../sentinel/secret")], ".."),
        ("whiteout outside", vec![file("../../../sentinel/.wh.secret", b"")], ".."),
    ];
    for (what, entries, expect) in cases {
        let tar = raw_tar(&entries);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &tar).unwrap();
        let blob = Bytes::from(gz.finish().unwrap());
        let digest = put_blob(ch.clone(), blob.clone()).await;
        let layer = Layer {
            digest: digest.clone(),
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
            size: blob.len() as i64,
            diff_id: Digest::of(&tar),
        };
        let err = snap.prepare(&src, &[layer], None).await.unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, SnapshotError::BadEntry { .. }), "{what}: {msg}");
        assert!(msg.contains(&digest.to_string()) && msg.contains(expect), "{what}: {msg}");
        let names: Vec<_> = std::fs::read_dir(&sentinel).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["secret"], "{what}: nothing written outside the snapshot");
        assert_eq!(std::fs::read(sentinel.join("secret")).unwrap(), b"untouched", "{what}");
        assert_eq!(std::os::unix::fs::MetadataExt::nlink(&std::fs::metadata(sentinel.join("secret")).unwrap()), 1);
        assert!(snap.list().unwrap().is_empty(), "{what}: no snapshot committed");
        assert_eq!(std::fs::read_dir(tmp.path().join("runtime/tmp")).unwrap().count(), 0, "{what}: no temp dir left");
    }

    // A layer the store does not have.
    let missing = Layer {
        digest: Digest::of(b"not in the store"),
        media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
        size: 10,
        diff_id: Digest::of(b"x"),
    };
    let err = snap.prepare(&src, &[missing], None).await.unwrap_err();
    assert!(matches!(err, SnapshotError::Fetch { .. }), "{err}");
    assert!(err.to_string().contains("does not have"), "{err}");
}
