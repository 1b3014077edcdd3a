//! overlayfs mounts of snapshots.
//!
//! The kernel takes mount options in one page (4096 bytes including the NUL). With many layers the
//! absolute `lowerdir=` list can pass that, so when it would, the mount is made from a helper thread
//! that unshares its filesystem context (`unshare(CLONE_FS)`, so the daemon's cwd is untouched),
//! changes into the snapshots directory and names the layers relatively (`12/fs:7/fs:...`), as
//! containerd does.

use super::SnapshotError;
use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Largest option string the kernel accepts (one page, with its NUL).
const MAX_OPTIONS: usize = 4095;

/// Most lower layers overlayfs stacks (OVL_MAX_STACK).
pub(crate) const MAX_LOWERS: usize = 500;

fn check_path(p: &Path) -> Result<&str, SnapshotError> {
    let s = p.to_str().ok_or_else(|| SnapshotError::Invalid(format!("overlay path {} is not UTF-8", p.display())))?;
    if s.contains([',', ':', '\\', '\n']) {
        return Err(SnapshotError::Invalid(format!(
            "overlay path {s:?} contains ',', ':' or '\\', which overlayfs options cannot carry"
        )));
    }
    Ok(s)
}

/// Mounts overlayfs at `target`; `lowers` bottom-most first. Lowers under `rel_base` may be named
/// relative to it when the absolute option string would be too long.
pub(crate) fn mount_overlay(
    rel_base: &Path,
    lowers: &[PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
) -> Result<(), SnapshotError> {
    if lowers.is_empty() {
        return Err(SnapshotError::Invalid("an overlay needs at least one lower directory".into()));
    }
    if lowers.len() > MAX_LOWERS {
        return Err(SnapshotError::Invalid(format!(
            "{} layers is more than overlayfs can stack ({MAX_LOWERS})",
            lowers.len()
        )));
    }
    let upper_s = check_path(upper)?;
    let work_s = check_path(work)?;
    // overlayfs lists the top-most lower first.
    let mut abs = Vec::with_capacity(lowers.len());
    for l in lowers.iter().rev() {
        abs.push(check_path(l)?.to_string());
    }
    let options = format!("lowerdir={},upperdir={upper_s},workdir={work_s}", abs.join(":"));
    if options.len() <= MAX_OPTIONS {
        return mount_raw(target, &options).map_err(|source| SnapshotError::Mount {
            target: target.to_path_buf(),
            options,
            source,
        });
    }

    let mut rel = Vec::with_capacity(lowers.len());
    for l in lowers.iter().rev() {
        match l.strip_prefix(rel_base) {
            Ok(r) => rel.push(check_path(r)?.to_string()),
            Err(_) => rel.push(check_path(l)?.to_string()),
        }
    }
    let options = format!("lowerdir={},upperdir={upper_s},workdir={work_s}", rel.join(":"));
    if options.len() > MAX_OPTIONS {
        return Err(SnapshotError::Mount {
            target: target.to_path_buf(),
            options: format!("{}...", &options[..200]),
            source: io::Error::other(format!("overlay options are {} bytes even with relative paths", options.len())),
        });
    }
    let base = rel_base.to_path_buf();
    let target_buf = target.to_path_buf();
    let opts = options.clone();
    let res = std::thread::Builder::new()
        .name("overlay-mount".into())
        .spawn(move || -> io::Result<()> {
            // Give this thread its own cwd so that chdir does not move the whole process.
            if unsafe { libc::unshare(libc::CLONE_FS) } != 0 {
                return Err(io::Error::last_os_error());
            }
            std::env::set_current_dir(&base)?;
            mount_raw(&target_buf, &opts)
        })
        .map_err(|source| SnapshotError::Mount { target: target.to_path_buf(), options: options.clone(), source })?
        .join()
        .map_err(|_| SnapshotError::Mount {
            target: target.to_path_buf(),
            options: options.clone(),
            source: io::Error::other("mount helper thread panicked"),
        })?;
    res.map_err(|source| SnapshotError::Mount { target: target.to_path_buf(), options, source })
}

fn mount_raw(target: &Path, options: &str) -> io::Result<()> {
    let t = CString::new(target.as_os_str().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let o = CString::new(options).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let rc = unsafe { libc::mount(c"overlay".as_ptr(), t.as_ptr(), c"overlay".as_ptr(), 0, o.as_ptr().cast()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Unmounts `target`; a target that is not mounted (or does not exist) is fine. A busy mount is
/// detached lazily.
pub(crate) fn unmount(target: &Path) -> Result<(), SnapshotError> {
    let t = CString::new(target.as_os_str().as_bytes())
        .map_err(|_| SnapshotError::Invalid(format!("path {} contains NUL", target.display())))?;
    let err = |source| SnapshotError::Unmount { target: target.to_path_buf(), source };
    if unsafe { libc::umount2(t.as_ptr(), libc::UMOUNT_NOFOLLOW) } == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EINVAL) | Some(libc::ENOENT) => Ok(()),
        Some(libc::EBUSY) => {
            if unsafe { libc::umount2(t.as_ptr(), libc::MNT_DETACH | libc::UMOUNT_NOFOLLOW) } == 0 {
                Ok(())
            } else {
                Err(err(io::Error::last_os_error()))
            }
        }
        _ => Err(err(e)),
    }
}
