//! Volumes and mounts: named volumes (kept across removal, shared, refused removal while in
//! use), binds (`:ro` refuses writes, -v creates a missing host path, --mount refuses it),
//! --read-only and --tmpfs, anonymous volumes from an image's VOLUME (copy-up, removed by
//! `rm -v` and `run --rm`), and a mount through an image symlink (`/data -> /etc`) that lands
//! inside the container's root (root only; each scenario once per OCI runtime: builtin:: and runc::).

mod run_env;

crate::per_runtime!(named_volumes_binds_tmpfs_readonly, image_volumes_and_symlinks_stay_inside);

use berth_tests::fixtures::{self, Fixture};
use berth_tests::layers;
use run_env::{can_run, Env, Runtime};
use serde_json::Value;
use std::path::Path;
use std::process::Command;

fn out(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
fn err(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn sh(cmd: &mut Command) {
    let o = cmd.output().expect("running a fixture tool");
    assert!(o.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&o.stderr));
}

/// busybox plus a layer with `/vol/seed`, `/vol/sub/deep` and the symlink `/data -> /etc`,
/// and `VOLUME /vol` in its config; pushed to the test's registry.
fn push_volume_image(env: &Env, dir: &Path) -> String {
    let base = fixtures::cached(Fixture::Busybox).expect("busybox fixture");
    let layout = dir.join("layout");
    sh(Command::new("cp").arg("-a").arg(&base.dir).arg(&layout));
    let tar = layers::raw_tar(&[
        layers::dir("vol"),
        layers::file("vol/seed", b"seed\n"),
        layers::dir("vol/sub"),
        layers::file("vol/sub/deep", b"deep\n"),
        layers::symlink("data", "/etc"),
    ]);
    let tar_path = dir.join("layer.tar");
    std::fs::write(&tar_path, tar).unwrap();
    let image = format!("{}:{}", layout.display(), fixtures::TAG);
    sh(Command::new("umoci").args(["raw", "add-layer", "--image", &image]).arg(&tar_path));
    sh(Command::new("umoci").args(["config", "--image", &image, "--config.volume", "/vol"]));
    env.registry.push_layout(&layout, "volimg").expect("pushing the volume image")
}

async fn named_volumes_binds_tmpfs_readonly(rt: Runtime) {
    if !can_run() {
        return;
    }
    let env = Env::with_busybox_on(rt).await;
    let bb = env.busybox.clone();

    // A named volume outlives its container.
    assert_eq!(env.ok(&["volume", "create", "data"]).await, "data\n");
    env.ok(&[
        "run",
        "--network",
        "none",
        "--name",
        "writer",
        "-v",
        "data:/data",
        &bb,
        "sh",
        "-c",
        "echo one > /data/f",
    ])
    .await;
    let m: Value = serde_json::from_str(&env.ok(&["inspect", "--format", "{{json .Mounts}}", "writer"]).await).unwrap();
    assert_eq!(m[0]["Type"], "volume");
    assert_eq!(m[0]["Name"], "data");
    assert_eq!(m[0]["Destination"], "/data");
    assert_eq!(m[0]["RW"], true);
    let source = m[0]["Source"].as_str().unwrap().to_string();
    assert!(source.ends_with("/volumes/data/_data"), "{source}");
    env.ok(&["rm", "-v", "writer"]).await;
    assert!(env.ok(&["volume", "ls", "-q"]).await.lines().any(|l| l == "data"));
    assert_eq!(env.ok(&["run", "--network", "none", "--rm", "-v", "data:/data", &bb, "cat", "/data/f"]).await, "one\n");
    let vi: Value = serde_json::from_str(&env.ok(&["volume", "inspect", "data"]).await).unwrap();
    assert_eq!(vi[0]["Name"], "data");
    assert_eq!(vi[0]["Driver"], "local");
    assert_eq!(vi[0]["Mountpoint"], source.as_str());

    // Two containers share it at the same time: each sees what the other wrote.
    env.ok(&[
        "run",
        "--network",
        "none",
        "-d",
        "--name",
        "a",
        "-v",
        "data:/shared",
        &bb,
        "sh",
        "-c",
        "while [ ! -e /shared/from-b ]; do sleep 0.1; done; cat /shared/from-b > /shared/from-a",
    ])
    .await;
    env.ok(&[
        "run",
        "--network",
        "none",
        "--rm",
        "--name",
        "b",
        "-v",
        "data:/data",
        &bb,
        "sh",
        "-c",
        "echo hello-from-b > /data/from-b",
    ])
    .await;
    assert_eq!(env.ok(&["wait", "a"]).await.trim(), "0");
    assert_eq!(std::fs::read_to_string(Path::new(&source).join("from-a")).unwrap(), "hello-from-b\n");

    // rm of a volume in use (even by a stopped container) is refused; after rm it works.
    let o = env.berth(&["volume", "rm", "data"]).await;
    assert_ne!(o.status.code(), Some(0));
    assert!(err(&o).contains("volume is in use"), "{}", err(&o));
    env.ok(&["rm", "a"]).await;
    assert_eq!(env.ok(&["volume", "rm", "data"]).await, "data\n");
    assert!(!Path::new(&source).exists());
    let o = env.berth(&["volume", "inspect", "data"]).await;
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("no such volume"), "{}", err(&o));

    // Bind mounts: :ro refuses writes, rw writes reach the host.
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("in.txt"), "from the host\n").unwrap();
    let hp = host.path().to_str().unwrap().to_string();
    let o = env
        .berth(&[
            "run",
            "--network",
            "none",
            "--rm",
            "-v",
            &format!("{hp}:/h:ro"),
            &bb,
            "sh",
            "-c",
            "cat /h/in.txt; echo x > /h/new",
        ])
        .await;
    assert_ne!(o.status.code(), Some(0));
    assert_eq!(out(&o), "from the host\n");
    assert!(err(&o).contains("Read-only file system"), "{}", err(&o));
    assert!(!host.path().join("new").exists());
    env.ok(&["run", "--network", "none", "--rm", "-v", &format!("{hp}:/h"), &bb, "sh", "-c", "echo x > /h/new"]).await;
    assert_eq!(std::fs::read_to_string(host.path().join("new")).unwrap(), "x\n");
    // -v creates a missing host path (docker's -v) ...
    env.ok(&["run", "--network", "none", "--rm", "-v", &format!("{hp}/made/here:/m"), &bb, "true"]).await;
    assert!(host.path().join("made/here").is_dir());
    // ... while --mount refuses it with docker's message.
    let o = env
        .berth(&["run", "--network", "none", "--rm", "--mount", "type=bind,source=/no/such/dir,target=/x", &bb, "true"])
        .await;
    assert_eq!(o.status.code(), Some(125), "{}", err(&o));
    assert!(
        err(&o).contains("invalid mount config for type \"bind\": bind source path does not exist: /no/such/dir"),
        "{}",
        err(&o)
    );
    let o = env
        .berth(&[
            "run",
            "--network",
            "none",
            "--rm",
            "--mount",
            &format!("type=bind,source={hp},target=/b,readonly"),
            &bb,
            "sh",
            "-c",
            "cat /b/in.txt && touch /b/nope",
        ])
        .await;
    assert_eq!(out(&o), "from the host\n");
    assert!(err(&o).contains("Read-only file system"), "{}", err(&o));

    // --read-only root with a --tmpfs scratch directory and a --mount tmpfs.
    let o = env.berth(&["run", "--network", "none", "--rm", "--read-only", &bb, "sh", "-c", "echo x > /f"]).await;
    assert_ne!(o.status.code(), Some(0));
    assert!(err(&o).contains("Read-only file system"), "{}", err(&o));
    let o = env
        .ok(&[
            "run",
            "--network",
            "none",
            "--rm",
            "--read-only",
            "--tmpfs",
            "/scratch:size=1m",
            "--mount",
            "type=tmpfs,target=/t2",
            &bb,
            "sh",
            "-c",
            "echo ok > /scratch/f && cat /scratch/f && echo ok2 > /t2/g && grep -E ' /(scratch|t2) ' /proc/mounts",
        ])
        .await;
    let lines: Vec<&str> = o.lines().collect();
    assert_eq!(lines[0], "ok");
    assert!(lines.iter().any(|l| l.starts_with("tmpfs /scratch tmpfs") && l.contains("size=1024k")), "{o}");
    assert!(lines.iter().any(|l| l.starts_with("tmpfs /t2 tmpfs")), "{o}");
    let ro = env.ok(&["create", "--network", "none", "--read-only", "--tmpfs", "/run", &bb]).await;
    assert_eq!(
        env.ok(&["inspect", "-f", "{{.HostConfig.ReadonlyRootfs}} {{json .HostConfig.Tmpfs}}", ro.trim()]).await,
        "true {\"/run\":\"\"}\n"
    );
    env.ok(&["rm", ro.trim()]).await;

    // Bad specs are clear errors.
    let o = env.berth(&["run", "--network", "none", "--rm", "-v", "data:/d:bogus", &bb, "true"]).await;
    assert!(err(&o).contains("invalid mode: bogus"), "{}", err(&o));
    let o = env.berth(&["run", "--network", "none", "--rm", "-v", "va:/x", "-v", "vb:/x", &bb, "true"]).await;
    assert!(err(&o).contains("Duplicate mount point: /x"), "{}", err(&o));
}

async fn image_volumes_and_symlinks_stay_inside(rt: Runtime) {
    if !can_run() {
        return;
    }
    let env = Env::with_busybox_on(rt).await;
    let work = tempfile::tempdir().unwrap();
    let img = push_volume_image(&env, work.path());
    env.pull(&img).await;

    // VOLUME /vol: an anonymous volume filled with the image's content (copy-up).
    let before: Vec<String> = env.ok(&["volume", "ls", "-q"]).await.lines().map(String::from).collect();
    let o = env
        .ok(&[
            "run",
            "--network",
            "none",
            "--name",
            "anon",
            &img,
            "sh",
            "-c",
            "cat /vol/seed /vol/sub/deep; echo more > /vol/extra",
        ])
        .await;
    assert_eq!(o, "seed\ndeep\n");
    let c: Value = serde_json::from_str(&env.ok(&["inspect", "anon"]).await).unwrap();
    let m = &c[0]["Mounts"][0];
    assert_eq!(m["Type"], "volume");
    assert_eq!(m["Destination"], "/vol");
    let name = m["Name"].as_str().unwrap().to_string();
    assert_eq!(name.len(), 64, "{m}");
    assert!(c[0]["Config"]["Volumes"]["/vol"].is_object(), "{}", c[0]["Config"]);
    let src = Path::new(m["Source"].as_str().unwrap()).to_path_buf();
    assert_eq!(std::fs::read_to_string(src.join("seed")).unwrap(), "seed\n");
    assert_eq!(std::fs::read_to_string(src.join("extra")).unwrap(), "more\n");
    // Its data is kept across runs of the container, and `rm -v` removes it.
    env.ok(&["start", "-a", "anon"]).await;
    assert_eq!(std::fs::read_to_string(src.join("extra")).unwrap(), "more\n");
    env.ok(&["rm", "-v", "anon"]).await;
    assert!(!src.exists(), "rm -v left the anonymous volume");
    assert_eq!(env.ok(&["volume", "ls", "-q"]).await.lines().map(String::from).collect::<Vec<_>>(), before);
    // run --rm removes it too; a named volume over the VOLUME path gets the copy-up instead.
    env.ok(&["run", "--network", "none", "--rm", &img, "true"]).await;
    assert_eq!(env.ok(&["volume", "ls", "-q"]).await.lines().map(String::from).collect::<Vec<_>>(), before);
    assert_eq!(
        env.ok(&["run", "--network", "none", "--rm", "-v", "seeded:/vol", &img, "cat", "/vol/seed"]).await,
        "seed\n"
    );
    env.ok(&["volume", "rm", "seeded"]).await;
    // Unused anonymous volumes go with `volume prune`.
    env.ok(&["run", "--network", "none", "--name", "keep", &img, "true"]).await;
    env.ok(&["rm", "keep"]).await;
    let pruned = env.ok(&["volume", "prune", "-f"]).await;
    assert!(pruned.starts_with("Deleted Volumes:"), "{pruned}");
    assert_eq!(env.ok(&["volume", "ls", "-q"]).await.lines().map(String::from).collect::<Vec<_>>(), before);

    // /data is a symlink to /etc in the image: mounts through it land on the container's /etc,
    // never on the host's.
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("marker"), "bind content\n").unwrap();
    let hp = host.path().to_str().unwrap();
    let marker = format!("berth-test-{}", std::process::id());
    let o = env
        .ok(&[
            "run",
            "--network",
            "none",
            "--rm",
            "-v",
            &format!("{hp}:/data"),
            "-v",
            &format!("sub-{marker}:/data/{marker}"),
            &img,
            "sh",
            "-c",
            &format!("cat /etc/marker; echo in > /data/written; test -d /etc/{marker} && echo nested-ok"),
        ])
        .await;
    assert_eq!(o, "bind content\nnested-ok\n");
    assert_eq!(std::fs::read_to_string(host.path().join("written")).unwrap(), "in\n");
    assert!(!Path::new("/etc/written").exists() && !Path::new("/etc/marker").exists());
    assert!(!Path::new("/etc").join(&marker).exists(), "a mount point was made in the host's /etc");
    let insp: Value = serde_json::from_str(&env.ok(&["volume", "inspect", &format!("sub-{marker}")]).await).unwrap();
    assert!(insp[0]["Mountpoint"].as_str().unwrap().contains("/volumes/"));
    env.ok(&["volume", "rm", &format!("sub-{marker}")]).await;
}
