//! `berth rmi` against a real runtime-svc: an image a container uses is refused with docker's
//! message; `rmi -f` untags it (and, as docker, keeps the image while the container runs).

mod run_env;

use run_env::{can_run, Env};

#[tokio::test(flavor = "multi_thread")]
async fn rmi_refuses_an_image_a_container_uses_unless_forced() {
    if !can_run() {
        return;
    }
    let env = Env::with_busybox().await;
    // Name it as a user would have it after `docker pull busybox`, and drop the registry name so
    // "busybox" is the image's only tag.
    env.ok(&["tag", &env.busybox, "busybox"]).await;
    let untag = env.ok(&["rmi", &env.busybox]).await;
    assert!(untag.starts_with("Untagged: ") && !untag.contains("Deleted"), "{untag}");
    let image_id = env.ok(&["images", "-q", "busybox"]).await.trim().to_string();
    assert_eq!(image_id.len(), 12, "{image_id}");

    let cid = env
        .ok(&["run", "-d", "--network", "none", "--name", "user", "busybox", "sleep", "1000"])
        .await
        .trim()
        .to_string();
    assert_eq!(cid.len(), 64, "{cid}");

    let o = env.berth(&["rmi", "busybox"]).await;
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(
        stderr.trim_end(),
        format!(
            "Error response from daemon: conflict: unable to remove repository reference \"busybox\" (must force) - container {} is using its referenced image {image_id}",
            &cid[..12]
        )
    );
    assert!(env.ok(&["images"]).await.lines().any(|l| l.starts_with("busybox ")), "the image went away");

    // Forced: untagged; the running container keeps the image (no "Deleted:"), as docker.
    let forced = env.ok(&["rmi", "-f", "busybox"]).await;
    assert_eq!(forced.trim_end(), "Untagged: busybox:latest");
    assert!(!env.ok(&["images"]).await.lines().any(|l| l.starts_with("busybox ")));
    // The container is still there and running.
    let ps = env.ok(&["ps"]).await;
    assert!(ps.lines().any(|l| l.starts_with(&cid[..12]) && l.ends_with("user")), "{ps}");
    env.ok(&["rm", "-f", "user"]).await;
}
