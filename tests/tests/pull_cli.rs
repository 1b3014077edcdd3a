//! `berth pull / images / image inspect / tag / rmi` as a user runs them, against store-svc and
//! registry-svc on temp sockets and a real distribution registry.

use berth_tests::fixtures::Fixture;
use berth_tests::registry::{PullStack, Registry};
use berth_tests::stack::bin_path;
use std::process::Command;

struct Cli<'a> {
    stack: &'a PullStack,
}

impl Cli<'_> {
    fn run(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(bin_path("berth"))
            .arg("--store")
            .arg(self.stack.store.endpoint().to_string())
            .arg("--registry")
            .arg(self.stack.registry.endpoint().to_string())
            .arg("--runtime")
            .arg(format!("unix://{}/no-runtime.sock", self.stack.store.dir().display()))
            .args(args)
            .output()
            .expect("running berth");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_images_inspect_tag_rmi() {
    let reg = Registry::start().unwrap();
    let r = reg.push_fixture(Fixture::Busybox, "library/busybox:1.0").unwrap();
    let stack = PullStack::start("").await;
    let cli = Cli { stack: &stack };

    let (code, out, err) = cli.run(&["pull", &r]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("1.0: Pulling from"), "{out}");
    assert!(out.contains(": Pull complete"), "{out}");
    assert!(out.contains("Digest: sha256:"), "{out}");
    assert!(out.contains(&format!("Status: Downloaded newer image for {r}")), "{out}");
    assert_eq!(out.lines().last(), Some(r.as_str()));

    let (code, out, _) = cli.run(&["pull", &r]);
    assert_eq!(code, 0);
    assert!(out.contains("Already exists") && out.contains(&format!("Status: Image is up to date for {r}")), "{out}");

    let (code, out, _) = cli.run(&["pull", "-q", &r]);
    assert_eq!((code, out.trim()), (0, r.as_str()));

    let (_, out, _) = cli.run(&["images"]);
    let header = out.lines().next().unwrap();
    for col in ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"] {
        assert!(header.contains(col), "{header}");
    }
    let repo = format!("{}/library/busybox", reg.addr());
    assert!(out.lines().any(|l| l.starts_with(&repo) && l.contains("1.0")), "{out}");

    let (_, out, _) = cli.run(&["images", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(v["Repository"], repo.as_str());
    assert_eq!(v["Tag"], "1.0");
    let short = v["ID"].as_str().unwrap().to_string();
    assert_eq!(short.len(), 12);

    let (_, out, _) = cli.run(&["images", "-q"]);
    assert_eq!(out.trim(), short);
    let (_, out, _) = cli.run(&["images", "--digests"]);
    assert!(out.contains("DIGEST") && out.contains("sha256:"), "{out}");

    let (code, _, err) = cli.run(&["tag", &r, "mybox:v2"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = cli.run(&["image", "inspect", "mybox:v2", &short]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let a = v.as_array().unwrap();
    assert_eq!(a.len(), 2);
    assert_eq!(a[0]["Id"], a[1]["Id"]);
    assert!(a[0]["Id"].as_str().unwrap().contains(&short));
    let tags: Vec<&str> = a[0]["RepoTags"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    assert!(tags.contains(&"mybox:v2") && tags.contains(&r.as_str()), "{tags:?}");
    assert_eq!(a[0]["Config"]["Cmd"][0], "sh");
    assert_eq!(a[0]["Os"], "linux");
    assert_eq!(a[0]["RootFS"]["Type"], "layers");
    assert_eq!(a[0]["RootFS"]["Layers"].as_array().unwrap().len(), 1);
    assert!(a[0]["Config"]["ExposedPorts"]["8080/tcp"].is_object());

    let (code, out, err) = cli.run(&["image", "inspect", "nosuch"]);
    assert_eq!(code, 1);
    assert_eq!(out.trim(), "[]");
    assert!(err.contains("No such image: nosuch"), "{err}");

    // By ID with two tags: refused without -f.
    let (code, _, err) = cli.run(&["rmi", &short]);
    assert_eq!(code, 1);
    assert!(err.contains("must be forced") && err.contains("multiple repositories"), "{err}");
    let (code, out, err) = cli.run(&["rmi", "mybox:v2"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "Untagged: mybox:v2");
    let (code, out, err) = cli.run(&["rmi", &r]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("Untagged: {r}")) && out.contains("Deleted: sha256:"), "{out}");
    let (_, out, _) = cli.run(&["images", "-q"]);
    assert!(out.trim().is_empty(), "{out}");
    assert!(stack.image_names().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_platform_and_bad_references() {
    let reg = Registry::start().unwrap();
    let r = reg.push_fixture(Fixture::MultiArch, "multi").unwrap();
    let stack = PullStack::start("").await;
    let cli = Cli { stack: &stack };
    let (code, out, err) = cli.run(&["pull", "--platform", "linux/arm64", &r]);
    assert_eq!(code, 0, "{out}{err}");
    let (_, out, _) = cli.run(&["image", "inspect", &r]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["Architecture"], "arm64");
    let (code, _, err) = cli.run(&["pull", "--platform", "linux/riscv64", &r]);
    assert_eq!(code, 125);
    assert!(err.contains("linux/riscv64") && err.contains("linux/amd64, linux/arm64"), "{err}");
    let (code, _, err) = cli.run(&["pull", "Busy:box:1"]);
    assert_eq!(code, 125);
    assert!(err.contains("invalid reference format"), "{err}");
    let (code, _, err) = cli.run(&["pull", &format!("{}/nothing:here", reg.addr())]);
    assert_eq!(code, 125);
    assert!(err.contains("not found"), "{err}");
}
