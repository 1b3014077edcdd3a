//! The overlay rootfs of a container that is removed when it exits (`--rm`), mounted with
//! overlayfs' `volatile` option.
//!
//! Unmounting an overlay without `volatile` syncs the whole upper filesystem (`ovl_sync_fs`):
//! 5–100 ms on this machine's shared disk, on the critical path of every `run --rm` (the shim
//! unmounts before it reports the exit, and the CLI waits for the removal). A `--rm` container's
//! writable layer is deleted at exit anyway, so its writes never need to reach the disk: with
//! `volatile` a crash can lose nothing a user could keep (podman does the same for `--rm`).
//! Containers that outlive their process keep the ordinary, synced mount.
//!
//! Only the plain case is handled here (absolute layer paths that fit in one option string);
//! `false` tells the caller to mount through the snapshotter as usual.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// `p` as an overlay option value: absolute, UTF-8, none of the separators.
fn plain(p: &Path) -> Option<&str> {
    p.to_str().filter(|s| p.is_absolute() && !s.contains([',', ':', '\\', '\n']))
}

/// Mounts `lowers` (bottom-most first) + `upper`/`work` at `target` with `volatile`. False
/// when the plain case does not apply or the kernel refuses (older than 5.10): nothing is
/// mounted then.
pub fn mount_volatile(lowers: &[PathBuf], upper: &Path, work: &Path, target: &Path) -> bool {
    if lowers.is_empty() || lowers.len() > 500 {
        return false;
    }
    let mut abs = Vec::with_capacity(lowers.len());
    for l in lowers.iter().rev() {
        match plain(l) {
            Some(s) => abs.push(s),
            None => return false,
        }
    }
    let (Some(u), Some(w)) = (plain(upper), plain(work)) else { return false };
    let options = format!("lowerdir={},upperdir={u},workdir={w},volatile", abs.join(":"));
    if options.len() > 4000 {
        return false;
    }
    // The kernel leaves work/work/incompat/volatile behind and refuses a later volatile mount
    // of the same dirs while it exists; this layer is thrown away at exit, so drop the marker.
    let _ = std::fs::remove_dir_all(work.join("work").join("incompat"));
    let (Ok(t), Ok(o)) = (CString::new(target.as_os_str().as_bytes()), CString::new(options)) else { return false };
    let rc = unsafe { libc::mount(c"overlay".as_ptr(), t.as_ptr(), c"overlay".as_ptr(), 0, o.as_ptr().cast()) };
    rc == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_paths_are_left_to_the_snapshotter() {
        let d = Path::new("/nonexistent-berth-test");
        assert!(!mount_volatile(&[], d, d, d));
        assert!(!mount_volatile(&[PathBuf::from("relative")], d, d, d));
        assert!(!mount_volatile(&[PathBuf::from("/a,b")], d, d, d));
        assert!(!mount_volatile(&[PathBuf::from("/a")], Path::new("/u:x"), d, d));
    }

    #[test]
    fn mounts_with_volatile_and_remounts_after_the_marker() {
        if unsafe { libc::geteuid() } != 0 {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| {
            let x = dir.path().join(n);
            std::fs::create_dir_all(&x).unwrap();
            x
        };
        let (l, u, w, m) = (p("l"), p("u"), p("w"), p("m"));
        std::fs::write(l.join("f"), "lower").unwrap();
        for _ in 0..2 {
            if !mount_volatile(std::slice::from_ref(&l), &u, &w, &m) {
                return; // kernel without volatile: the caller falls back, nothing to test
            }
            assert_eq!(std::fs::read_to_string(m.join("f")).unwrap(), "lower");
            let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
            assert!(mounts.lines().any(|l| l.contains(m.to_str().unwrap()) && l.contains("volatile")));
            std::fs::write(m.join("g"), "upper").unwrap();
            let t = CString::new(m.as_os_str().as_bytes()).unwrap();
            assert_eq!(unsafe { libc::umount2(t.as_ptr(), libc::MNT_DETACH) }, 0);
        }
        assert_eq!(std::fs::read_to_string(u.join("g")).unwrap(), "upper");
    }
}
