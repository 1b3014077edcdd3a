//! Unit tests of the snapshotter: hostile tars (built here with raw headers), overlay results of
//! whiteouts, compression formats, concurrency, crash recovery, many-layer mounts. They need root
//! (mknod, chown, trusted.* xattrs, mount), as the engine does.

use super::*;
use async_trait::async_trait;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::sync::atomic::{AtomicUsize, Ordering};
use tar::{EntryType, Header};

// ---- helpers ------------------------------------------------------------------------------

struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let p = std::env::temp_dir().join(format!("berth-snap-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Unmounts on drop so a failing assertion does not leave a mount behind.
struct MountGuard(PathBuf);

impl Drop for MountGuard {
    fn drop(&mut self) {
        let _ = Snapshotter::unmount_rootfs(&self.0);
    }
}

#[derive(Clone, Copy)]
enum Comp {
    None,
    Gzip,
    Zstd,
}

/// A tar under construction with full control over every header field.
struct Tar {
    b: tar::Builder<Vec<u8>>,
}

impl Tar {
    fn new() -> Self {
        Self { b: tar::Builder::new(Vec::new()) }
    }

    /// Appends an entry with a raw name (anything up to 100 bytes, `..` and `/` included).
    #[allow(clippy::too_many_arguments)]
    fn raw(&mut self, name: &[u8], kind: EntryType, link: &[u8], mode: u32, uid: u64, gid: u64, data: &[u8]) {
        let mut h = Header::new_gnu();
        h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name);
        h.as_gnu_mut().unwrap().linkname[..link.len()].copy_from_slice(link);
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_mtime(1_600_000_000);
        h.set_cksum();
        self.b.append(&h, data).unwrap();
    }

    fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        self.raw(name.as_bytes(), EntryType::Regular, b"", 0o644, 0, 0, data);
        self
    }

    fn dir(&mut self, name: &str) -> &mut Self {
        self.raw(name.as_bytes(), EntryType::Directory, b"", 0o755, 0, 0, b"");
        self
    }

    fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.raw(name.as_bytes(), EntryType::Symlink, target.as_bytes(), 0o777, 0, 0, b"");
        self
    }

    fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.raw(name.as_bytes(), EntryType::Link, target.as_bytes(), 0o644, 0, 0, b"");
        self
    }

    /// A PAX extended header applying to the next entry.
    fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
        let mut data = Vec::new();
        for (k, v) in records {
            let body_len = 1 + k.len() + 1 + v.len() + 1; // " k=v\n"
            let mut len = body_len + 1;
            while len.to_string().len() + body_len != len {
                len = len.to_string().len() + body_len;
            }
            data.extend_from_slice(format!("{len} {k}=").as_bytes());
            data.extend_from_slice(v);
            data.push(b'\n');
        }
        self.raw(b"PaxHeader", EntryType::XHeader, b"", 0o644, 0, 0, &data);
        self
    }

    fn bytes(&mut self) -> Vec<u8> {
        self.b.finish().unwrap();
        std::mem::replace(&mut self.b, tar::Builder::new(Vec::new())).into_inner().unwrap()
    }
}

fn compress(tar: &[u8], comp: Comp) -> Vec<u8> {
    match comp {
        Comp::None => tar.to_vec(),
        Comp::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(tar).unwrap();
            e.finish().unwrap()
        }
        Comp::Zstd => zstd::encode_all(tar, 3).unwrap(),
    }
}

fn media_type(comp: Comp) -> &'static str {
    match comp {
        Comp::None => "application/vnd.oci.image.layer.v1.tar",
        Comp::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
        Comp::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
    }
}

/// Writes the compressed layer into `blobs/` and describes it truthfully.
fn put_layer(blobs: &Path, tar: &[u8], comp: Comp) -> Layer {
    let blob = compress(tar, comp);
    let digest = Digest::of(&blob);
    std::fs::create_dir_all(blobs).unwrap();
    std::fs::write(blobs.join(digest.hex()), &blob).unwrap();
    Layer { digest, media_type: media_type(comp).into(), size: blob.len() as i64, diff_id: Digest::of(tar) }
}

struct Env {
    dir: TempDir,
    snap: Snapshotter,
    src: FileLayerSource,
}

impl Env {
    fn new() -> Self {
        Self::with_config(SnapshotConfig::default())
    }
    fn with_config(config: SnapshotConfig) -> Self {
        let dir = TempDir::new();
        let snap = Snapshotter::open_with(dir.path().join("root"), config).unwrap();
        let src = FileLayerSource::new(dir.path().join("blobs"));
        Self { dir, snap, src }
    }
    fn blobs(&self) -> PathBuf {
        self.dir.path().join("blobs")
    }
    fn layer(&self, tar: &[u8], comp: Comp) -> Layer {
        put_layer(&self.blobs(), tar, comp)
    }
    async fn prepare(&self, layers: &[Layer]) -> Result<Vec<PathBuf>, SnapshotError> {
        self.snap.prepare(&self.src, layers, None).await
    }
    /// A directory outside the snapshotter that hostile layers aim at.
    fn sentinel(&self) -> PathBuf {
        let s = self.dir.path().join("sentinel");
        if !s.exists() {
            std::fs::create_dir_all(&s).unwrap();
            std::fs::write(s.join("secret"), b"untouched").unwrap();
        }
        s
    }
    fn assert_sentinel_untouched(&self) {
        let s = self.sentinel();
        let names: Vec<_> = std::fs::read_dir(&s).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("secret")], "something was written into {}", s.display());
        assert_eq!(std::fs::read(s.join("secret")).unwrap(), b"untouched");
        assert_eq!(std::fs::metadata(s.join("secret")).unwrap().nlink(), 1, "secret was hard-linked");
    }
    /// No snapshot and no leftover temp dir after a failed prepare.
    fn assert_nothing_committed(&self) {
        assert!(self.snap.list().unwrap().is_empty());
        let root = self.snap.root();
        assert_eq!(std::fs::read_dir(root.join("snapshots")).unwrap().count(), 0);
        assert_eq!(std::fs::read_dir(root.join("tmp")).unwrap().count(), 0, "temp dir left behind");
    }
}

fn lstat(p: &Path) -> std::fs::Metadata {
    std::fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn getxattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    let cp = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let cn = std::ffi::CString::new(name).unwrap();
    let mut buf = vec![0u8; 256];
    let n = unsafe { libc::lgetxattr(cp.as_ptr(), cn.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return None;
    }
    buf.truncate(n as usize);
    Some(buf)
}

// ---- chain IDs ----------------------------------------------------------------------------

#[test]
fn chain_ids_follow_the_oci_rule() {
    let d: Vec<Digest> = ["a", "b", "c"].iter().map(|s| Digest::of(s.as_bytes())).collect();
    let c = chain_ids(&d);
    assert_eq!(c[0], d[0]);
    assert_eq!(c[1], Digest::of(format!("{} {}", d[0], d[1]).as_bytes()));
    assert_eq!(c[2], Digest::of(format!("{} {}", c[1], d[2]).as_bytes()));
    assert!(chain_ids(&[]).is_empty());
}

// ---- a faithful unpack --------------------------------------------------------------------

#[tokio::test]
async fn unpacks_metadata_as_a_root_engine_keeps_it() {
    let env = Env::new();
    let mut t = Tar::new();
    t.dir("./");
    t.dir("bin/");
    t.raw(b"bin/su", EntryType::Regular, b"", 0o4755, 0, 0, b"#!suid");
    t.raw(b"home/user/", EntryType::Directory, b"", 0o2750, 1234, 5678, b"");
    t.raw(b"home/user/notes", EntryType::Regular, b"", 0o600, 1234, 5678, b"hello");
    t.symlink("bin/sh", "/bin/busybox");
    t.hardlink("bin/su2", "bin/su");
    t.raw(b"dev/null", EntryType::Char, b"", 0o666, 0, 0, b"");
    t.raw(b"run/fifo", EntryType::Fifo, b"", 0o600, 0, 0, b"");
    t.pax(&[
        ("SCHILY.xattr.user.comment", b"kept"),
        ("SCHILY.xattr.trusted.overlay.opaque", b"y"),
        ("SCHILY.xattr.trusted.overlay.redirect", b"/etc"),
        ("uid", b"3000000"),
    ]);
    t.file("tagged", b"x");
    let mut tar = t.bytes();
    // Give dev/null its device numbers (1, 3) by rebuilding that one header.
    let tar = {
        let mut out = tar::Builder::new(Vec::new());
        let mut a = tar::Archive::new(&tar[..]);
        for e in a.entries().unwrap().raw(true) {
            let mut e = e.unwrap();
            let mut h = e.header().clone();
            if e.path_bytes().as_ref() == b"dev/null" {
                h.set_device_major(1).unwrap();
                h.set_device_minor(3).unwrap();
                h.set_cksum();
            }
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut data).unwrap();
            out.append(&h, &data[..]).unwrap();
        }
        tar.clear();
        out.into_inner().unwrap()
    };
    let layer = env.layer(&tar, Comp::Gzip);
    let dirs = env.prepare(std::slice::from_ref(&layer)).await.unwrap();
    let fs = &dirs[0];

    let su = lstat(&fs.join("bin/su"));
    assert_eq!(su.mode() & 0o7777, 0o4755, "setuid bit kept");
    assert_eq!(std::fs::read(fs.join("bin/su")).unwrap(), b"#!suid");
    assert_eq!(su.mtime(), 1_600_000_000);
    assert_eq!(lstat(&fs.join("bin/su2")).ino(), su.ino(), "hard link shares the inode");
    let home = lstat(&fs.join("home/user"));
    assert_eq!((home.uid(), home.gid(), home.mode() & 0o7777), (1234, 5678, 0o2750));
    assert_eq!(home.mtime(), 1_600_000_000, "directory mtime set after its children");
    let notes = lstat(&fs.join("home/user/notes"));
    assert_eq!((notes.uid(), notes.gid(), notes.mode() & 0o7777), (1234, 5678, 0o600));
    assert_eq!(std::fs::read_link(fs.join("bin/sh")).unwrap(), Path::new("/bin/busybox"));
    let null = lstat(&fs.join("dev/null"));
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), libc::makedev(1, 3));
    assert!(lstat(&fs.join("run/fifo")).file_type().is_fifo());
    let tagged = fs.join("tagged");
    assert_eq!(lstat(&tagged).uid(), 3_000_000, "PAX uid beyond the octal field");
    assert_eq!(getxattr(&tagged, "user.comment").as_deref(), Some(&b"kept"[..]));
    assert_eq!(getxattr(&tagged, "trusted.overlay.opaque"), None, "trusted.overlay.* from the tar is dropped");
    assert_eq!(getxattr(&tagged, "trusted.overlay.redirect"), None);

    let list = env.snap.list().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].chain_id, layer.diff_id);
    assert_eq!(list[0].path, *fs);
    assert_eq!(list[0].uncompressed_size, tar.len() as u64);
}

#[tokio::test]
async fn gzip_zstd_and_plain_tar_all_unpack_and_media_type_must_match_the_data() {
    let env = Env::new();
    for (i, comp) in [Comp::None, Comp::Gzip, Comp::Zstd].into_iter().enumerate() {
        let tar = Tar::new().file(&format!("f{i}"), format!("data {i}").as_bytes()).bytes();
        let layer = env.layer(&tar, comp);
        let dirs = env.prepare(&[layer]).await.unwrap();
        assert_eq!(std::fs::read(dirs[0].join(format!("f{i}"))).unwrap(), format!("data {i}").as_bytes());
    }
    // Docker's media type names are understood too; an unknown media type goes by magic bytes.
    let tar = Tar::new().file("docker", b"d").bytes();
    let mut layer = env.layer(&tar, Comp::Gzip);
    layer.media_type = "application/vnd.docker.image.rootfs.diff.tar.gzip".into();
    env.prepare(&[layer]).await.unwrap();
    let tar = Tar::new().file("unknown", b"u").bytes();
    let mut layer = env.layer(&tar, Comp::Zstd);
    layer.media_type = String::new();
    env.prepare(&[layer]).await.unwrap();

    // gzip data under a zstd media type is refused.
    let tar = Tar::new().file("liar", b"l").bytes();
    let mut layer = env.layer(&tar, Comp::Gzip);
    layer.media_type = media_type(Comp::Zstd).into();
    let err = env.prepare(&[layer]).await.unwrap_err();
    assert!(matches!(err, SnapshotError::MediaType { .. }), "{err}");
    assert!(err.to_string().contains("says zstd but the data is gzip"), "{err}");
}

// ---- hostile layers -----------------------------------------------------------------------

#[tokio::test]
async fn dotdot_path_is_refused_and_nothing_lands_outside() {
    let env = Env::new();
    let sentinel = env.sentinel();
    // From <root>/tmp/<id>/fs, enough ".." to reach the test dir, then into the sentinel.
    let name = b"../../../../sentinel/pwned".to_vec();
    let mut t = Tar::new();
    t.file("ok", b"fine");
    t.raw(&name, EntryType::Regular, b"", 0o644, 0, 0, b"pwned");
    let layer = env.layer(&t.bytes(), Comp::Gzip);
    let err = env.prepare(std::slice::from_ref(&layer)).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, SnapshotError::BadEntry { .. }), "{msg}");
    assert!(msg.contains(&layer.digest.to_string()) && msg.contains("sentinel/pwned") && msg.contains(".."), "{msg}");
    assert!(sentinel.exists());
    env.assert_sentinel_untouched();
    env.assert_nothing_committed();
}

#[tokio::test]
async fn absolute_paths_are_contained_in_the_layer() {
    let env = Env::new();
    let sentinel = env.sentinel();
    let abs = format!("{}/pwned", sentinel.display());
    let mut t = Tar::new();
    t.raw(abs.as_bytes(), EntryType::Regular, b"", 0o644, 0, 0, b"contained");
    t.raw(b"/etc/passwd", EntryType::Regular, b"", 0o644, 0, 0, b"root:x:0:0");
    let layer = env.layer(&t.bytes(), Comp::None);
    let dirs = env.prepare(&[layer]).await.unwrap();
    env.assert_sentinel_untouched();
    let inside = dirs[0].join(abs.trim_start_matches('/'));
    assert_eq!(std::fs::read(inside).unwrap(), b"contained");
    assert_eq!(std::fs::read(dirs[0].join("etc/passwd")).unwrap(), b"root:x:0:0");
}

#[tokio::test]
async fn writing_through_a_symlink_is_refused() {
    let env = Env::new();
    let sentinel = env.sentinel();
    let cases: Vec<Vec<u8>> = vec![
        // absolute symlink, then a write through it
        {
            let mut t = Tar::new();
            t.symlink("a", &sentinel.display().to_string());
            t.file("a/pwned", b"x");
            t.bytes()
        },
        // relative symlink climbing out
        {
            let mut t = Tar::new();
            t.symlink("b", "../../../../sentinel");
            t.file("b/pwned", b"x");
            t.bytes()
        },
        // a directory replaced by a symlink, then a write below it
        {
            let mut t = Tar::new();
            t.dir("d/");
            t.file("d/ok", b"x");
            t.symlink("d", &sentinel.display().to_string());
            t.file("d/pwned", b"x");
            t.bytes()
        },
        // a symlink as a deeper parent component
        {
            let mut t = Tar::new();
            t.dir("x/");
            t.symlink("x/y", &sentinel.display().to_string());
            t.dir("x/y/z/");
            t.bytes()
        },
    ];
    for tar in cases {
        let layer = env.layer(&tar, Comp::Gzip);
        let err = env.prepare(&[layer]).await.unwrap_err();
        assert!(matches!(err, SnapshotError::BadEntry { .. }), "{err}");
        assert!(err.to_string().contains("symlink"), "{err}");
        env.assert_sentinel_untouched();
        env.assert_nothing_committed();
    }
}

#[tokio::test]
async fn a_symlink_entry_replacing_a_symlink_is_fine_and_points_anywhere() {
    // Symlinks themselves may point anywhere: they are never followed while unpacking.
    let env = Env::new();
    let sentinel = env.sentinel();
    let mut t = Tar::new();
    t.symlink("s", &sentinel.join("secret").display().to_string());
    t.file("s", b"replaces the link, does not write through it");
    let dirs = env.prepare(&[env.layer(&t.bytes(), Comp::Gzip)]).await.unwrap();
    assert!(lstat(&dirs[0].join("s")).is_file());
    env.assert_sentinel_untouched();
}

#[tokio::test]
async fn hardlinks_pointing_out_are_refused() {
    let env = Env::new();
    let sentinel = env.sentinel();
    let secret_abs = sentinel.join("secret").display().to_string();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (Tar::new().hardlink("h", "../../../../sentinel/secret").bytes(), ".."),
        (Tar::new().hardlink("h", &secret_abs).bytes(), "does not exist in this layer"),
        (
            {
                let mut t = Tar::new();
                t.symlink("l", &sentinel.display().to_string());
                t.hardlink("h", "l/secret");
                t.bytes()
            },
            "symlink",
        ),
    ];
    for (tar, expect) in cases {
        let err = env.prepare(&[env.layer(&tar, Comp::Zstd)]).await.unwrap_err();
        assert!(matches!(err, SnapshotError::BadEntry { .. }), "{err}");
        assert!(err.to_string().contains(expect), "{err} should mention {expect}");
        env.assert_sentinel_untouched();
        env.assert_nothing_committed();
    }
}

#[tokio::test]
async fn whiteouts_outside_the_layer_are_refused() {
    let env = Env::new();
    let sentinel = env.sentinel();
    for name in ["../../../../sentinel/.wh.secret", "../.wh.x", "a/../../.wh..wh..opq"] {
        let mut t = Tar::new();
        t.raw(name.as_bytes(), EntryType::Regular, b"", 0o644, 0, 0, b"");
        let err = env.prepare(&[env.layer(&t.bytes(), Comp::Gzip)]).await.unwrap_err();
        assert!(matches!(err, SnapshotError::BadEntry { .. }), "{name}: {err}");
        env.assert_sentinel_untouched();
        env.assert_nothing_committed();
    }
    // A whiteout through a symlink is refused too.
    let mut t = Tar::new();
    t.symlink("s", &sentinel.display().to_string());
    t.file("s/.wh.secret", b"");
    let err = env.prepare(&[env.layer(&t.bytes(), Comp::Gzip)]).await.unwrap_err();
    assert!(err.to_string().contains("symlink"), "{err}");
    env.assert_sentinel_untouched();
}

#[tokio::test]
async fn wrong_diff_id_digest_or_size_fails_and_leaves_no_snapshot() {
    let env = Env::new();
    let tar = Tar::new().file("f", b"data").bytes();
    let good = env.layer(&tar, Comp::Gzip);

    let mut bad = good.clone();
    bad.diff_id = Digest::of(b"something else");
    let err = env.prepare(&[bad]).await.unwrap_err();
    assert!(matches!(err, SnapshotError::DigestMismatch { what, .. } if what.starts_with("diff_id")), "{err}");
    assert!(err.to_string().contains(&good.digest.to_string()), "names the layer: {err}");
    env.assert_nothing_committed();

    let mut bad = good.clone();
    bad.size += 1;
    let err = env.prepare(&[bad]).await.unwrap_err();
    assert!(matches!(err, SnapshotError::SizeMismatch { .. }), "{err}");
    env.assert_nothing_committed();

    // The blob's content does not hash to its name.
    let other = compress(&Tar::new().file("f", b"evil").bytes(), Comp::Gzip);
    std::fs::write(env.blobs().join(good.digest.hex()), &other).unwrap();
    let mut bad = good.clone();
    bad.size = other.len() as i64;
    let err = env.prepare(&[bad]).await.unwrap_err();
    assert!(matches!(err, SnapshotError::DigestMismatch { what: "compressed digest", .. }), "{err}");
    env.assert_nothing_committed();
}

#[tokio::test]
async fn truncated_gzip_fails_with_a_clear_error() {
    let env = Env::new();
    let mut t = Tar::new();
    for i in 0..50 {
        t.file(&format!("f{i}"), &vec![i as u8; 10_000]);
    }
    let tar = t.bytes();
    let full = compress(&tar, Comp::Gzip);
    let cut = &full[..full.len() / 2];
    let digest = Digest::of(cut);
    std::fs::create_dir_all(env.blobs()).unwrap();
    std::fs::write(env.blobs().join(digest.hex()), cut).unwrap();
    let layer =
        Layer { digest, media_type: media_type(Comp::Gzip).into(), size: cut.len() as i64, diff_id: Digest::of(&tar) };
    let err = env.prepare(&[layer]).await.unwrap_err();
    assert!(matches!(err, SnapshotError::Stream { what: "gzip", .. }), "{err}");
    env.assert_nothing_committed();
}

#[tokio::test]
async fn decompression_bombs_and_entry_floods_are_capped() {
    let env = Env::with_config(SnapshotConfig { max_layer_bytes: 1 << 20, max_layer_entries: 10, max_parallel: 2 });
    let tar = Tar::new().file("zeros", &vec![0u8; 4 << 20]).bytes();
    let err = env.prepare(&[env.layer(&tar, Comp::Gzip)]).await.unwrap_err();
    assert!(matches!(err, SnapshotError::TooLarge { .. }), "{err}");
    env.assert_nothing_committed();

    let mut t = Tar::new();
    for i in 0..20 {
        t.file(&format!("f{i}"), b"");
    }
    let err = env.prepare(&[env.layer(&t.bytes(), Comp::Gzip)]).await.unwrap_err();
    assert!(matches!(err, SnapshotError::TooManyEntries { limit: 10, .. }), "{err}");
    env.assert_nothing_committed();
}

// ---- whiteouts through a real overlay mount -------------------------------------------------

#[tokio::test]
async fn whiteouts_and_opaque_dirs_work_in_an_overlay_mount() {
    let env = Env::new();
    let mut base = Tar::new();
    base.file("keep", b"k").file("gone", b"g").dir("d/").file("d/a", b"a").file("d/b", b"b");
    base.dir("e/").file("e/x", b"x");
    let mut top = Tar::new();
    top.file(".wh.gone", b"");
    top.dir("d/").file("d/.wh..wh..opq", b"").file("d/c", b"c");
    top.file("e/.wh.x", b"");
    let layers = [env.layer(&base.bytes(), Comp::Gzip), env.layer(&top.bytes(), Comp::Zstd)];
    let dirs = env.prepare(&layers).await.unwrap();

    let top_fs = &dirs[1];
    let wh = lstat(&top_fs.join("gone"));
    assert!(wh.file_type().is_char_device() && wh.rdev() == 0, "overlay whiteout is a 0/0 char device");
    assert_eq!(getxattr(&top_fs.join("d"), "trusted.overlay.opaque").as_deref(), Some(&b"y"[..]));
    assert!(!top_fs.join(".wh.gone").exists());

    let c = env.dir.path().join("c");
    let (upper, work, rootfs) = (c.join("upper"), c.join("work"), c.join("rootfs"));
    for d in [&upper, &work, &rootfs] {
        std::fs::create_dir_all(d).unwrap();
    }
    env.snap.mount_rootfs(&dirs, &upper, &work, &rootfs).unwrap();
    let _guard = MountGuard(rootfs.clone());
    assert_eq!(std::fs::read(rootfs.join("keep")).unwrap(), b"k");
    assert!(!rootfs.join("gone").exists(), "whited-out file is gone");
    let mut d: Vec<_> = std::fs::read_dir(rootfs.join("d")).unwrap().map(|e| e.unwrap().file_name()).collect();
    d.sort();
    assert_eq!(d, vec![std::ffi::OsString::from("c")], "opaque dir hides the lower's entries");
    assert_eq!(std::fs::read_dir(rootfs.join("e")).unwrap().count(), 0);
    // Writes go to the container's upper dir, never to the shared layers.
    std::fs::write(rootfs.join("keep"), b"changed").unwrap();
    assert_eq!(std::fs::read(dirs[0].join("keep")).unwrap(), b"k");
    assert_eq!(std::fs::read(upper.join("keep")).unwrap(), b"changed");
    Snapshotter::unmount_rootfs(&rootfs).unwrap();
    Snapshotter::unmount_rootfs(&rootfs).unwrap(); // idempotent
    assert!(!rootfs.join("keep").exists());
}

#[tokio::test]
async fn many_layers_mount_even_with_a_long_root_path() {
    // 45 layers under a long root: the absolute lowerdir list passes one page, so the mount falls
    // back to relative paths.
    let dir = TempDir::new();
    let root = dir.path().join("r".repeat(120));
    let snap = Snapshotter::open(root).unwrap();
    let src = FileLayerSource::new(dir.path().join("blobs"));
    let mut layers = Vec::new();
    for i in 0..45 {
        let mut t = Tar::new();
        t.file(&format!("layer{i}"), format!("{i}").as_bytes());
        t.file("top", format!("{i}").as_bytes());
        if i > 0 {
            t.file(&format!(".wh.layer{}", i - 1), b"");
        }
        layers.push(put_layer(&dir.path().join("blobs"), &t.bytes(), Comp::Gzip));
    }
    let dirs = snap.prepare(&src, &layers, None).await.unwrap();
    assert_eq!(dirs.len(), 45);
    let abs_len: usize = dirs.iter().map(|d| d.as_os_str().len() + 1).sum();
    assert!(abs_len > 4096, "the test must exercise the long-options path ({abs_len})");
    let c = dir.path().join("c");
    let (upper, work, rootfs) = (c.join("upper"), c.join("work"), c.join("rootfs"));
    for d in [&upper, &work, &rootfs] {
        std::fs::create_dir_all(d).unwrap();
    }
    snap.mount_rootfs(&dirs, &upper, &work, &rootfs).unwrap();
    let _guard = MountGuard(rootfs.clone());
    assert_eq!(std::fs::read(rootfs.join("top")).unwrap(), b"44", "top-most layer wins");
    assert_eq!(std::fs::read(rootfs.join("layer44")).unwrap(), b"44");
    assert!(!rootfs.join("layer43").exists() && !rootfs.join("layer0").exists());
    // The daemon's cwd did not move.
    assert_ne!(std::env::current_dir().unwrap(), snap.root().join("snapshots"));
}

// ---- concurrency, progress, crash safety, prune ------------------------------------------------

/// Counts opens and slows each one down so that concurrent callers overlap.
struct CountingSource {
    inner: FileLayerSource,
    opens: AtomicUsize,
}

#[async_trait]
impl LayerSource for CountingSource {
    async fn open(&self, layer: &Layer) -> Result<LayerReader, SnapshotError> {
        self.opens.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        self.inner.open(layer).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_prepares_unpack_each_layer_once() {
    let env = Env::new();
    let mut layers = Vec::new();
    for i in 0..4 {
        let mut t = Tar::new();
        for j in 0..200 {
            t.file(&format!("l{i}/f{j}"), &vec![j as u8; 1000]);
        }
        layers.push(env.layer(&t.bytes(), Comp::Gzip));
    }
    let src = CountingSource { inner: env.src.clone(), opens: AtomicUsize::new(0) };
    let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
    let other = env.snap.clone();
    let (a, b, c) = tokio::join!(
        env.snap.prepare(&src, &layers, Some(tx)),
        env.snap.prepare(&src, &layers, None),
        other.prepare(&src, &layers[..2], None),
    );
    let (a, b, c) = (a.unwrap(), b.unwrap(), c.unwrap());
    assert_eq!(a, b);
    assert_eq!(&a[..2], &c[..]);
    assert_eq!(src.opens.load(Ordering::SeqCst), 4, "each layer fetched and unpacked once");
    assert_eq!(env.snap.list().unwrap().len(), 4);
    let mut done = HashSet::new();
    while let Ok(p) = rx.try_recv() {
        if p.done {
            done.insert(p.layer);
        }
    }
    assert_eq!(done.len(), 4, "a done progress message per layer");
    // A later prepare does not open anything.
    env.snap.prepare(&src, &layers, None).await.unwrap();
    assert_eq!(src.opens.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn reopen_keeps_snapshots_and_removes_crash_leftovers() {
    let env = Env::new();
    let layer = env.layer(&Tar::new().file("f", b"1").bytes(), Comp::Gzip);
    let dirs = env.prepare(std::slice::from_ref(&layer)).await.unwrap();
    let root = env.snap.root().to_path_buf();
    // What a crash mid-unpack leaves, and a snapshot dir with no metadata.
    std::fs::create_dir_all(root.join("tmp/abc/fs/usr/bin")).unwrap();
    std::fs::write(root.join("tmp/abc/fs/usr/bin/half"), b"half").unwrap();
    std::fs::create_dir_all(root.join("snapshots/999/fs")).unwrap();

    let again = Snapshotter::open(root.clone()).unwrap();
    assert_eq!(std::fs::read_dir(root.join("tmp")).unwrap().count(), 0);
    assert!(!root.join("snapshots/999").exists());
    assert_eq!(again.path_of(&layer.diff_id), Some(dirs[0].clone()));
    let list = again.list().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].layer_digest, layer.digest);
    // Nothing is fetched for a layer that is already there.
    struct Failing;
    #[async_trait]
    impl LayerSource for Failing {
        async fn open(&self, layer: &Layer) -> Result<LayerReader, SnapshotError> {
            Err(SnapshotError::Fetch { layer: layer.digest.clone(), reason: "should not be asked".into() })
        }
    }
    assert_eq!(again.prepare(&Failing, &[layer], None).await.unwrap(), dirs);
    // New snapshots get fresh numbers after a reopen.
    let l2 = env.layer(&Tar::new().file("g", b"2").bytes(), Comp::Gzip);
    let d2 = again.prepare(&env.src, &[l2], None).await.unwrap();
    assert_ne!(d2[0], dirs[0]);
}

#[tokio::test]
async fn prune_removes_only_unkept_snapshots() {
    let env = Env::new();
    let a = env.layer(&Tar::new().file("a", b"a").bytes(), Comp::Gzip);
    let b = env.layer(&Tar::new().file("b", b"b").bytes(), Comp::Gzip);
    let dirs = env.prepare(&[a.clone(), b.clone()]).await.unwrap();
    let chains = chain_ids(&[a.diff_id.clone(), b.diff_id.clone()]);
    let keep: HashSet<Digest> = [chains[0].clone()].into();
    let removed = env.snap.prune(&keep).unwrap();
    assert_eq!(removed, vec![chains[1].clone()]);
    assert!(dirs[0].exists() && !dirs[1].exists());
    assert_eq!(env.snap.list().unwrap().len(), 1);
    assert_eq!(std::fs::read_dir(env.snap.root().join("tmp")).unwrap().count(), 0);
    assert!(env.snap.prune(&keep).unwrap().is_empty());
    // The pruned layer comes back when needed.
    let again = env.prepare(&[a, b]).await.unwrap();
    assert!(again[1].join("b").exists());
}

#[tokio::test]
async fn a_layer_unpacks_the_same_under_any_parent() {
    // The same diff under two different parents gives two chain IDs, two snapshots.
    let env = Env::new();
    let base1 = env.layer(&Tar::new().file("x", b"1").bytes(), Comp::Gzip);
    let base2 = env.layer(&Tar::new().file("x", b"2").bytes(), Comp::Gzip);
    let shared = env.layer(&Tar::new().file("y", b"y").bytes(), Comp::Gzip);
    let d1 = env.prepare(&[base1, shared.clone()]).await.unwrap();
    let d2 = env.prepare(&[base2, shared]).await.unwrap();
    assert_ne!(d1[1], d2[1]);
    assert_eq!(env.snap.list().unwrap().len(), 4);
    let perms = std::fs::metadata(&d1[1]).unwrap().permissions();
    assert_eq!(perms.mode() & 0o777, 0o755, "layer root without an entry of its own is 0755");
}

// ---- StoreLayerSource against a flaky in-process Content server --------------------------------

mod flaky_store {
    use super::*;
    use berth_proto::store::v1 as pb;
    use berth_proto::store::v1::content_server::{Content, ContentServer};
    use bytes::Bytes;
    use futures::Stream;
    use std::pin::Pin;
    use tonic::{Request, Response, Status};

    /// Serves one blob; the first `drops` reads fail part-way with `fail_code`.
    struct Flaky {
        blob: Bytes,
        reads: Arc<AtomicUsize>,
        drops: usize,
        fail_code: tonic::Code,
    }

    type Stream2<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

    #[tonic::async_trait]
    impl Content for Flaky {
        type ReadStream = Stream2<pb::ReadResponse>;
        type ListStream = Stream2<pb::ListResponse>;

        async fn read(&self, req: Request<pb::ReadRequest>) -> Result<Response<Self::ReadStream>, Status> {
            let n = self.reads.fetch_add(1, Ordering::SeqCst);
            let mut off = req.into_inner().offset as usize;
            let mut msgs = Vec::new();
            while off < self.blob.len() {
                if n < self.drops && msgs.len() == 3 {
                    msgs.push(Err(Status::new(self.fail_code, "connection dropped")));
                    break;
                }
                let end = (off + 16 * 1024).min(self.blob.len());
                msgs.push(Ok(pb::ReadResponse { offset: off as i64, data: self.blob.slice(off..end) }));
                off = end;
            }
            Ok(Response::new(Box::pin(futures::stream::iter(msgs))))
        }
        async fn stat(&self, _: Request<pb::StatRequest>) -> Result<Response<pb::StatResponse>, Status> {
            Err(Status::unimplemented("test"))
        }
        async fn stat_many(&self, _: Request<pb::StatManyRequest>) -> Result<Response<pb::StatManyResponse>, Status> {
            Err(Status::unimplemented("test"))
        }
        async fn write(
            &self,
            _: Request<tonic::Streaming<pb::WriteRequest>>,
        ) -> Result<Response<pb::WriteResponse>, Status> {
            Err(Status::unimplemented("test"))
        }
        async fn write_status(
            &self,
            _: Request<pb::WriteStatusRequest>,
        ) -> Result<Response<pb::WriteStatusResponse>, Status> {
            Err(Status::unimplemented("test"))
        }
        async fn list_writes(
            &self,
            _: Request<pb::ListWritesRequest>,
        ) -> Result<Response<pb::ListWritesResponse>, Status> {
            Err(Status::unimplemented("test"))
        }
        async fn abort_write(
            &self,
            _: Request<pb::AbortWriteRequest>,
        ) -> Result<Response<pb::AbortWriteResponse>, Status> {
            Err(Status::unimplemented("test"))
        }
        async fn delete(&self, _: Request<pb::DeleteRequest>) -> Result<Response<pb::DeleteResponse>, Status> {
            Err(Status::unimplemented("test"))
        }
        async fn list(&self, _: Request<pb::ListRequest>) -> Result<Response<Self::ListStream>, Status> {
            Err(Status::unimplemented("test"))
        }
    }

    async fn serve(flaky: Flaky) -> tonic::transport::Channel {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(ContentServer::new(flaky))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap()
    }

    fn big_layer() -> (Bytes, Layer) {
        let mut t = Tar::new();
        for i in 0..40 {
            let data: Vec<u8> = (0..20_000u32).map(|j| (j.wrapping_mul(2_654_435_761) >> (i % 24)) as u8).collect();
            t.file(&format!("f{i}"), &data);
        }
        let tar = t.bytes();
        let blob = compress(&tar, Comp::Gzip);
        let layer = Layer {
            digest: Digest::of(&blob),
            media_type: media_type(Comp::Gzip).into(),
            size: blob.len() as i64,
            diff_id: Digest::of(&tar),
        };
        assert!(blob.len() > 4 * 16 * 1024, "the blob must outlast the dropped stream");
        (Bytes::from(blob), layer)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dropped_read_stream_resumes_from_its_offset() {
        let (blob, layer) = big_layer();
        let reads = Arc::new(AtomicUsize::new(0));
        let ch = serve(Flaky { blob, reads: reads.clone(), drops: 2, fail_code: tonic::Code::Unavailable }).await;
        let env = Env::new();
        let dirs = env.snap.prepare(&StoreLayerSource::new(ch), &[layer], None).await.unwrap();
        assert!(dirs[0].join("f39").is_file());
        assert_eq!(reads.load(Ordering::SeqCst), 3, "two drops, two resumes");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_permanent_store_error_fails_the_layer() {
        let (blob, layer) = big_layer();
        let reads = Arc::new(AtomicUsize::new(0));
        let ch = serve(Flaky { blob, reads: reads.clone(), drops: 1, fail_code: tonic::Code::DataLoss }).await;
        let env = Env::new();
        let err = env.snap.prepare(&StoreLayerSource::new(ch), &[layer], None).await.unwrap_err();
        assert!(matches!(err, SnapshotError::Stream { what: "layer blob", .. }), "{err}");
        assert!(err.to_string().contains("DataLoss"), "{err}");
        assert_eq!(reads.load(Ordering::SeqCst), 1);
        env.assert_nothing_committed();
    }
}

#[tokio::test]
async fn long_names_and_link_targets_survive() {
    // GNU long-name/long-link records and PAX paths past the 100-byte header fields.
    let env = Env::new();
    let deep = format!("{}/file", (0..12).map(|i| format!("directory-{i:02}")).collect::<Vec<_>>().join("/"));
    assert!(deep.len() > 100);
    let long_target = format!("/{}", "t".repeat(150));
    let mut b = tar::Builder::new(Vec::new());
    let mut h = Header::new_gnu();
    h.set_size(4);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1);
    b.append_data(&mut h, &deep, &b"deep"[..]).unwrap();
    let mut h = Header::new_gnu();
    h.set_entry_type(EntryType::Symlink);
    h.set_size(0);
    h.set_mode(0o777);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1);
    b.append_link(&mut h, "long-link", &long_target).unwrap();
    let mut h = Header::new_gnu();
    h.set_entry_type(EntryType::Link);
    h.set_size(0);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1);
    b.append_link(&mut h, "hard-to-deep", &deep).unwrap();
    let tar = b.into_inner().unwrap();
    let dirs = env.prepare(&[env.layer(&tar, Comp::Gzip)]).await.unwrap();
    assert_eq!(std::fs::read(dirs[0].join(&deep)).unwrap(), b"deep");
    assert_eq!(std::fs::read_link(dirs[0].join("long-link")).unwrap(), Path::new(&long_target));
    assert_eq!(lstat(&dirs[0].join("hard-to-deep")).ino(), lstat(&dirs[0].join(&deep)).ino());
}

#[tokio::test]
async fn paths_longer_than_path_max_are_refused() {
    let env = Env::new();
    let deep = "d/".repeat(2100) + "f";
    let mut b = tar::Builder::new(Vec::new());
    let mut h = Header::new_gnu();
    h.set_size(1);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1);
    b.append_data(&mut h, &deep, &b"x"[..]).unwrap();
    let err = env.prepare(&[env.layer(&b.into_inner().unwrap(), Comp::Gzip)]).await.unwrap_err();
    assert!(err.to_string().contains("PATH_MAX"), "{err}");
    env.assert_nothing_committed();
}

// ---- layers unpacked ahead of their config (prefetch), deferred sync ------------------------

fn blob_of(l: &Layer) -> Blob {
    Blob { digest: l.digest.clone(), media_type: l.media_type.clone(), size: l.size }
}

fn many_files(tag: &str, n: usize) -> Vec<u8> {
    let mut t = Tar::new();
    for j in 0..n {
        t.file(&format!("{tag}/f{j}"), &vec![j as u8; 500]);
    }
    t.bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layers_staged_during_a_pull_become_snapshots_at_prepare_without_a_second_fetch() {
    let env = Env::new();
    let layers: Vec<Layer> = (0..3).map(|i| env.layer(&many_files(&format!("l{i}"), 100), Comp::Gzip)).collect();
    let src = Arc::new(CountingSource { inner: env.src.clone(), opens: AtomicUsize::new(0) });
    let mut pf = env.snap.prefetch();
    for l in &layers {
        pf.stage(src.clone(), blob_of(l), None);
        pf.stage(src.clone(), blob_of(l), None); // twice: still one unpack
    }
    pf.settle().await;
    // Staged layers are not snapshots yet: nothing is visible before the config is known.
    assert!(env.snap.list().unwrap().is_empty());
    assert_eq!(std::fs::read_dir(env.snap.root().join("tmp")).unwrap().count(), 3);
    let dirs = env.snap.prepare(&*src, &layers, None).await.unwrap();
    assert_eq!(src.opens.load(Ordering::SeqCst), 3, "each layer fetched once");
    assert_eq!(env.snap.list().unwrap().len(), 3);
    assert_eq!(std::fs::read(dirs[2].join("l2/f7")).unwrap(), vec![7u8; 500]);
    drop(pf);
    assert!(dirs.iter().all(|d| d.exists()), "committed snapshots stay after the prefetch ends");
    assert_eq!(std::fs::read_dir(env.snap.root().join("tmp")).unwrap().count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_prefetch_leaves_nothing_even_with_unpacks_running() {
    let env = Env::new();
    let layers: Vec<Layer> = (0..3).map(|i| env.layer(&many_files(&format!("l{i}"), 300), Comp::Gzip)).collect();
    let src = Arc::new(CountingSource { inner: env.src.clone(), opens: AtomicUsize::new(0) });
    let mut done = env.snap.prefetch();
    done.stage(src.clone(), blob_of(&layers[0]), None);
    done.settle().await;
    let mut running = env.snap.prefetch();
    for l in &layers[1..] {
        running.stage(src.clone(), blob_of(l), None);
    }
    drop(done);
    drop(running); // the two still being unpacked (the source sleeps 50 ms) are removed when they end
    let tmp = env.snap.root().join("tmp");
    for _ in 0..100 {
        if std::fs::read_dir(&tmp).unwrap().count() == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    env.assert_nothing_committed();
    // A later prepare of the same layers fetches them again and works.
    env.prepare(&layers).await.unwrap();
    assert_eq!(env.snap.list().unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_staged_layer_is_checked_against_the_config_diff_id() {
    let env = Env::new();
    let good = env.layer(&many_files("x", 10), Comp::Gzip);
    let mut pf = env.snap.prefetch();
    pf.stage(Arc::new(env.src.clone()), blob_of(&good), None);
    pf.settle().await;
    let lie = Layer { diff_id: Digest::of(b"another tar"), ..good.clone() };
    let e = env.snap.prepare(&env.src, std::slice::from_ref(&lie), None).await.unwrap_err();
    assert!(e.to_string().contains("diff_id"), "{e}");
    drop(pf);
    env.assert_nothing_committed();
    // A hostile staged layer fails like any other and leaves nothing.
    env.sentinel();
    let mut t = Tar::new();
    t.file("ok", b"fine");
    t.raw(b"../../../../sentinel/pwned", EntryType::Regular, b"", 0o644, 0, 0, b"pwned");
    let bad = env.layer(&t.bytes(), Comp::Gzip);
    let mut pf = env.snap.prefetch();
    pf.stage(Arc::new(env.src.clone()), blob_of(&bad), None);
    pf.settle().await;
    assert!(env.prepare(&[bad]).await.is_err());
    drop(pf);
    env.assert_nothing_committed();
    env.assert_sentinel_untouched();
}

#[tokio::test]
async fn unsynced_snapshots_of_an_earlier_boot_are_unpacked_again() {
    let env = Env::new();
    let a = env.layer(&Tar::new().file("a", b"a").bytes(), Comp::Gzip);
    let b = env.layer(&Tar::new().file("b", b"b").bytes(), Comp::Gzip);
    env.prepare(std::slice::from_ref(&a)).await.unwrap();
    env.snap.sync().unwrap(); // a is on disk
    let dirs = env.prepare(&[a.clone(), b.clone()]).await.unwrap(); // b is not (yet)
    let root = env.snap.root().to_path_buf();
    // Pretend the machine restarted: both snapshots were written during another boot.
    for d in &dirs {
        let meta = d.parent().unwrap().join("meta.json");
        let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap();
        v["boot_id"] = "an-earlier-boot".into();
        std::fs::write(&meta, serde_json::to_vec(&v).unwrap()).unwrap();
    }
    let again = Snapshotter::open(root.clone()).unwrap();
    let chains = chain_ids(&[a.diff_id.clone(), b.diff_id.clone()]);
    assert_eq!(again.path_of(&chains[0]), Some(dirs[0].clone()), "the synced snapshot is kept");
    assert_eq!(again.path_of(&chains[1]), None, "the unsynced one is gone");
    assert!(!dirs[1].exists());
    let redone = again.prepare(&env.src, &[a, b], None).await.unwrap();
    assert!(redone[1].join("b").exists());
    assert_ne!(redone[1], dirs[1], "IDs are not reused");
    // Same boot (a crash of the process only): nothing is removed.
    let third = Snapshotter::open(root).unwrap();
    assert_eq!(third.list().unwrap().len(), 2);
}

#[tokio::test]
async fn owner_and_mode_are_right_when_creation_alone_would_get_them_wrong() {
    let env = Env::new();
    let mut t = Tar::new();
    // A setgid directory of group 50: a file created in it takes group 50, but the tar says 0.
    t.raw(b"sg/", EntryType::Directory, b"", 0o2775, 0, 50, b"");
    t.raw(b"sg/root-group", EntryType::Regular, b"", 0o644, 0, 0, b"x");
    t.raw(b"sg/its-group", EntryType::Regular, b"", 0o644, 0, 50, b"x");
    // Group/other-writable (beyond the umask) and special bits, and a plain file.
    t.raw(b"wide", EntryType::Regular, b"", 0o666, 0, 0, b"x");
    t.raw(b"suid", EntryType::Regular, b"", 0o4755, 0, 0, b"x");
    t.raw(b"plain", EntryType::Regular, b"", 0o640, 0, 0, b"x");
    t.raw(b"owned", EntryType::Regular, b"", 0o600, 1000, 1000, b"x");
    let layer = env.layer(&t.bytes(), Comp::Gzip);
    let fs = env.prepare(std::slice::from_ref(&layer)).await.unwrap().remove(0);
    let check = |p: &str, mode: u32, uid: u32, gid: u32| {
        let m = lstat(&fs.join(p));
        assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (mode, uid, gid), "{p}");
    };
    check("sg", 0o2775, 0, 50);
    check("sg/root-group", 0o644, 0, 0);
    check("sg/its-group", 0o644, 0, 50);
    check("wide", 0o666, 0, 0);
    check("suid", 0o4755, 0, 0);
    check("plain", 0o640, 0, 0);
    check("owned", 0o600, 1000, 1000);
}
