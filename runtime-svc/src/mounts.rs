//! Container mounts: `-v`, `--mount`, `--tmpfs`, the image's VOLUMEs and `--read-only`.
//!
//! At create, [`plan`] turns the user's flags and the image's VOLUMEs into [`MountSpec`]s
//! (anonymous volumes for VOLUMEs no user mount covers; duplicate targets refused) and
//! [`Manager`](crate::manager::Manager) creates what they need (named volumes, `-v` host
//! directories). At start, [`setup`] makes every mount point inside the mounted rootfs with
//! `openat2(RESOLVE_IN_ROOT)` — so a symlink in the image (even `/data -> /etc`) resolves inside
//! the container's root and never on the host — copies the image's content into a new volume
//! (docker's copy-up), and returns the OCI mounts with the resolved destinations for
//! [`apply`] to add to the runtime spec.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// What is mounted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MountKind {
    /// A host path.
    #[default]
    Bind,
    /// A local volume.
    Volume,
    /// A tmpfs.
    Tmpfs,
}

impl MountKind {
    /// docker's name.
    pub fn as_str(self) -> &'static str {
        match self {
            MountKind::Bind => "bind",
            MountKind::Volume => "volume",
            MountKind::Tmpfs => "tmpfs",
        }
    }
}

/// One mount of a container.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountSpec {
    /// Kind.
    pub kind: MountKind,
    /// Host path (bind) or volume name (volume; "" until an anonymous one is made).
    pub source: String,
    /// Absolute, clean path in the container.
    pub target: String,
    /// Read-only.
    pub readonly: bool,
    /// Options as given (docker's `Mode`, e.g. "ro,z").
    #[serde(default)]
    pub mode: String,
    /// Volumes: no copy-up.
    #[serde(default)]
    pub nocopy: bool,
    /// Bind propagation ("" = rprivate).
    #[serde(default)]
    pub propagation: String,
    /// tmpfs mount options (size=, mode=, ...).
    #[serde(default)]
    pub tmpfs_options: Vec<String>,
    /// An anonymous volume (removed with the container by `rm -v` / `--rm`).
    #[serde(default)]
    pub anonymous: bool,
    /// `-v` host path: created when missing (docker's -v; `--mount` refuses instead).
    #[serde(default)]
    pub create_source: bool,
    /// Host path mounted (set at create for binds and volumes).
    #[serde(default)]
    pub host_path: String,
}

impl MountSpec {
    /// Propagation to use.
    pub fn propagation(&self) -> &str {
        if self.propagation.is_empty() {
            "rprivate"
        } else {
            &self.propagation
        }
    }
}

const PROPAGATIONS: &[&str] = &["private", "rprivate", "shared", "rshared", "slave", "rslave"];

/// Cleans an absolute container path ("/a//b/../c/" → "/a/c"); errors when not absolute or "/".
pub fn clean_target(p: &str) -> Result<String, String> {
    if !p.starts_with('/') {
        return Err(format!("invalid mount config: mount path must be absolute: {p}"));
    }
    let mut parts: Vec<&str> = vec![];
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    if parts.is_empty() {
        return Err("invalid specification: destination can't be '/'".into());
    }
    Ok(format!("/{}", parts.join("/")))
}

/// Parses docker's `-v` forms: `/ctr` (anonymous volume), `name:/ctr[:opts]` (named volume),
/// `/host:/ctr[:opts]` (bind; created when missing). Options: ro, rw, z, Z, nocopy and a
/// propagation mode.
pub fn parse_bind(spec: &str) -> Result<MountSpec, String> {
    let parts: Vec<&str> = spec.split(':').collect();
    let (src, dst, mode) = match parts.as_slice() {
        [d] => ("", *d, ""),
        [s, d] => (*s, *d, ""),
        [s, d, m] => (*s, *d, *m),
        _ => return Err(format!("invalid volume specification: '{spec}'")),
    };
    if src.is_empty() && parts.len() > 1 {
        return Err(format!("invalid volume specification: '{spec}'"));
    }
    let target = clean_target(dst).map_err(|e| format!("invalid volume specification: '{spec}': {e}"))?;
    let mut m = MountSpec { target, mode: mode.to_string(), ..Default::default() };
    for o in mode.split(',').filter(|o| !o.is_empty()) {
        match o {
            "ro" => m.readonly = true,
            "rw" => m.readonly = false,
            "z" | "Z" => {}
            "nocopy" => m.nocopy = true,
            p if PROPAGATIONS.contains(&p) => m.propagation = p.to_string(),
            _ => return Err(format!("invalid mode: {o}")),
        }
    }
    if src.is_empty() {
        m.kind = MountKind::Volume;
        m.anonymous = true;
    } else if src.starts_with('/') {
        if m.nocopy {
            return Err(format!("invalid mode: nocopy (only for volumes): '{spec}'"));
        }
        m.kind = MountKind::Bind;
        m.source = clean_target(src).unwrap_or_else(|_| "/".into());
        m.create_source = true;
    } else {
        if !crate::volume::valid_volume_name(src) {
            return Err(format!(
                "create {src}: \"{src}\" includes invalid characters for a local volume name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed. If you intended to pass a host directory, use absolute path"
            ));
        }
        m.kind = MountKind::Volume;
        m.source = src.to_string();
    }
    Ok(m)
}

/// A `--mount` entry as received.
#[derive(Clone, Debug, Default)]
pub struct MountRequest {
    /// "bind", "volume" or "tmpfs".
    pub kind: String,
    /// Source.
    pub source: String,
    /// Target.
    pub target: String,
    /// Read-only.
    pub readonly: bool,
    /// No copy-up.
    pub nocopy: bool,
    /// tmpfs size in bytes.
    pub tmpfs_size: i64,
    /// tmpfs mode bits.
    pub tmpfs_mode: u32,
    /// Propagation.
    pub propagation: String,
}

/// Validates a `--mount` entry (a bind source must exist, as docker's --mount).
pub fn from_request(r: &MountRequest) -> Result<MountSpec, String> {
    let target = clean_target(&r.target).map_err(|e| format!("invalid mount config for type \"{}\": {e}", r.kind))?;
    let mut m = MountSpec { target, readonly: r.readonly, mode: String::new(), ..Default::default() };
    match r.kind.as_str() {
        "bind" => {
            if r.source.is_empty() {
                return Err("invalid mount config for type \"bind\": field Source must not be empty".into());
            }
            if !r.source.starts_with('/') {
                return Err(format!(
                    "invalid mount config for type \"bind\": invalid mount path: '{}' mount path must be absolute",
                    r.source
                ));
            }
            if std::fs::metadata(&r.source).is_err() {
                return Err(format!(
                    "invalid mount config for type \"bind\": bind source path does not exist: {}",
                    r.source
                ));
            }
            if !r.propagation.is_empty() && !PROPAGATIONS.contains(&r.propagation.as_str()) {
                return Err(format!("invalid propagation mode: {}", r.propagation));
            }
            m.kind = MountKind::Bind;
            m.source = r.source.clone();
            m.propagation = r.propagation.clone();
        }
        "volume" => {
            m.kind = MountKind::Volume;
            if r.source.is_empty() {
                m.anonymous = true;
            } else if !crate::volume::valid_volume_name(&r.source) {
                return Err(format!("invalid mount config for type \"volume\": invalid volume name {:?}", r.source));
            } else {
                m.source = r.source.clone();
            }
            m.nocopy = r.nocopy;
        }
        "tmpfs" => {
            if !r.source.is_empty() {
                return Err("invalid mount config for type \"tmpfs\": field Source must not be specified".into());
            }
            m.kind = MountKind::Tmpfs;
            if r.tmpfs_size > 0 {
                m.tmpfs_options.push(format!("size={}", r.tmpfs_size));
            }
            if r.tmpfs_mode > 0 {
                m.tmpfs_options.push(format!("mode={:o}", r.tmpfs_mode));
            }
        }
        "" => return Err("invalid mount config: type is required".into()),
        other => return Err(format!("invalid mount config: mount type unknown: {other:?}")),
    }
    if m.readonly {
        m.mode = "ro".into();
    }
    Ok(m)
}

/// `--tmpfs PATH[:OPTS]` (as the map docker's HostConfig.Tmpfs has).
pub fn from_tmpfs(path: &str, opts: &str) -> Result<MountSpec, String> {
    let target = clean_target(path)?;
    let mut m = MountSpec { kind: MountKind::Tmpfs, target, mode: opts.to_string(), ..Default::default() };
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        match o {
            "ro" => m.readonly = true,
            "rw" => m.readonly = false,
            o => m.tmpfs_options.push(o.to_string()),
        }
    }
    Ok(m)
}

/// Every mount of a new container: the user's (`-v`, `--mount`, `--tmpfs`), then an anonymous
/// volume for each image VOLUME no user mount covers. Duplicate targets are refused.
pub fn plan(
    binds: &[String],
    mounts: &[MountSpec],
    tmpfs: &BTreeMap<String, String>,
    image_volumes: &[String],
) -> Result<Vec<MountSpec>, String> {
    let mut out: Vec<MountSpec> = vec![];
    let add = |m: MountSpec, out: &mut Vec<MountSpec>| {
        if out.iter().any(|o| o.target == m.target) {
            return Err(format!("Duplicate mount point: {}", m.target));
        }
        out.push(m);
        Ok(())
    };
    for b in binds {
        add(parse_bind(b)?, &mut out)?;
    }
    for m in mounts {
        add(m.clone(), &mut out)?;
    }
    for (p, o) in tmpfs {
        add(from_tmpfs(p, o)?, &mut out)?;
    }
    for v in image_volumes {
        let Ok(target) = clean_target(v) else { continue };
        if out.iter().any(|o| o.target == target) {
            continue;
        }
        out.push(MountSpec { kind: MountKind::Volume, target, anonymous: true, ..Default::default() });
    }
    Ok(out)
}

fn cstr(p: &str) -> io::Result<CString> {
    CString::new(p).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// openat2(dirfd, path, flags, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS).
fn open_in_root(root: &OwnedFd, rel: &str, flags: i32) -> io::Result<OwnedFd> {
    let rel = if rel.is_empty() { "." } else { rel };
    let c = cstr(rel)?;
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            c.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    } as i32;
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn fd_path(fd: &OwnedFd) -> io::Result<PathBuf> {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// Creates the mount point `target` inside `rootfs` (a directory, or an empty file when `dir`
/// is false), resolving every component with RESOLVE_IN_ROOT so symlinks in the image stay
/// inside the root. Returns the resolved path inside the container (what the runtime mounts
/// on) and an O_PATH fd of it.
pub fn ensure_mountpoint(rootfs: &Path, target: &str, dir: bool) -> io::Result<(String, OwnedFd)> {
    ensure_mountpoint_at(rootfs, target, dir, 0)
}

/// Lexically cleans an absolute path, `..` stopping at `/`.
fn clean_in_root(p: &str) -> String {
    let mut parts: Vec<&str> = vec![];
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

fn ensure_mountpoint_at(rootfs: &Path, target: &str, dir: bool, depth: u32) -> io::Result<(String, OwnedFd)> {
    if depth > 40 {
        return Err(io::Error::other(format!("too many levels of symbolic links in {target}")));
    }
    let root_c = cstr(&rootfs.to_string_lossy())?;
    let rfd = unsafe { libc::open(root_c.as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) };
    if rfd < 0 {
        return Err(io::Error::last_os_error());
    }
    let root = unsafe { OwnedFd::from_raw_fd(rfd) };
    let comps: Vec<&str> = target.split('/').filter(|c| !c.is_empty() && *c != ".").collect();
    let mut prefix = String::new();
    for (i, c) in comps.iter().enumerate() {
        if *c == ".." {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "mount target with .."));
        }
        let path = if prefix.is_empty() { c.to_string() } else { format!("{prefix}/{c}") };
        match open_in_root(&root, &path, libc::O_PATH) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                let parent = open_in_root(&root, &prefix, libc::O_PATH | libc::O_DIRECTORY)?;
                let name = cstr(c)?;
                // A dangling symlink: follow it inside the root (as runc's securejoin does) and
                // create what it points at there.
                let mut buf = [0u8; 4096];
                let n =
                    unsafe { libc::readlinkat(parent.as_raw_fd(), name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
                if n > 0 {
                    let link = String::from_utf8_lossy(&buf[..n as usize]).into_owned();
                    let rest = comps[i + 1..].join("/");
                    let base = if link.starts_with('/') { String::new() } else { format!("/{prefix}") };
                    let next = clean_in_root(&format!("{base}/{link}/{rest}"));
                    return ensure_mountpoint_at(rootfs, &next, dir, depth + 1);
                }
                let last = i + 1 == comps.len();
                let r = unsafe {
                    if last && !dir {
                        // O_PATH fds cannot create files: reopen the directory for that.
                        let pdir = open_in_root(&root, &prefix, libc::O_RDONLY | libc::O_DIRECTORY)?;
                        let fd = libc::openat(
                            pdir.as_raw_fd(),
                            name.as_ptr(),
                            libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                            0o644,
                        );
                        if fd >= 0 {
                            libc::close(fd);
                            0
                        } else {
                            -1
                        }
                    } else {
                        libc::mkdirat(parent.as_raw_fd(), name.as_ptr(), 0o755)
                    }
                };
                if r != 0 {
                    let e = io::Error::last_os_error();
                    // EEXIST here is a dangling symlink in the image: refuse rather than guess.
                    return Err(io::Error::new(e.kind(), format!("creating mount point /{path}: {e}")));
                }
            }
            Err(e) => return Err(io::Error::new(e.kind(), format!("resolving /{path} in the container: {e}"))),
        }
        prefix = path;
    }
    let fd = open_in_root(&root, &prefix, libc::O_PATH)?;
    let real = fd_path(&fd)?;
    let root_real = fd_path(&root)?;
    let inside = real
        .strip_prefix(&root_real)
        .map_err(|_| io::Error::other(format!("mount point {target} resolves outside the container")))?;
    Ok((format!("/{}", inside.display()), fd))
}

/// A mount ready for the runtime spec.
#[derive(Clone, Debug)]
pub struct Prepared {
    /// The OCI mount entry (destination already resolved).
    pub oci: Value,
}

/// Where a mount's data is on the host.
pub trait VolumePaths {
    /// Host path of a volume's data.
    fn data_path(&self, name: &str) -> PathBuf;
    /// Whether the image content was already copied in.
    fn populated(&self, name: &str) -> bool;
    /// Records the copy-up.
    fn set_populated(&self, name: &str);
}

impl VolumePaths for crate::volume::Volumes {
    fn data_path(&self, name: &str) -> PathBuf {
        crate::volume::Volumes::data_path(self, name)
    }
    fn populated(&self, name: &str) -> bool {
        self.get(name).is_some_and(|v| v.populated)
    }
    fn set_populated(&self, name: &str) {
        crate::volume::Volumes::set_populated(self, name)
    }
}

/// Makes every mount point inside the mounted `rootfs` and copies image content into new
/// volumes; returns the OCI mounts, parents before children.
pub fn setup(rootfs: &Path, mounts: &[MountSpec], vols: &dyn VolumePaths) -> Result<Vec<Prepared>, String> {
    let mut sorted: Vec<&MountSpec> = mounts.iter().collect();
    sorted.sort_by_key(|m| m.target.matches('/').count());
    let mut out = vec![];
    for m in sorted {
        let (source, dir) = match m.kind {
            MountKind::Bind => {
                let md = std::fs::metadata(&m.source).map_err(|e| {
                    format!("invalid mount config for type \"bind\": bind source path {}: {e}", m.source)
                })?;
                (m.source.clone(), md.is_dir())
            }
            MountKind::Volume => (vols.data_path(&m.source).to_string_lossy().into_owned(), true),
            MountKind::Tmpfs => ("tmpfs".to_string(), true),
        };
        let (dest, fd) =
            ensure_mountpoint(rootfs, &m.target, dir).map_err(|e| format!("mount point {}: {e}", m.target))?;
        if m.kind == MountKind::Volume && !m.nocopy && !vols.populated(&m.source) {
            let data = PathBuf::from(&source);
            let empty = std::fs::read_dir(&data).map(|mut d| d.next().is_none()).unwrap_or(false);
            if empty {
                let from = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
                copy_tree(&from, &data, true)
                    .map_err(|e| format!("copying image content into volume {}: {e}", m.source))?;
            }
            vols.set_populated(&m.source);
        }
        drop(fd);
        let oci = match m.kind {
            MountKind::Tmpfs => {
                let mut opts = vec!["nosuid".to_string(), "nodev".into(), "noexec".into()];
                opts.extend(m.tmpfs_options.iter().cloned());
                if m.readonly {
                    opts.push("ro".into());
                }
                json!({"destination": dest, "type": "tmpfs", "source": "tmpfs", "options": opts})
            }
            _ => {
                let mut opts = vec!["rbind".to_string(), m.propagation().to_string()];
                if m.readonly {
                    opts.push("ro".into());
                }
                json!({"destination": dest, "type": "bind", "source": source, "options": opts})
            }
        };
        out.push(Prepared { oci });
    }
    Ok(out)
}

/// Copies `from` (a directory) into `to` without following symlinks, keeping modes and owners.
/// With `top`, `to` exists and takes `from`'s mode and owner.
fn copy_tree(from: &Path, to: &Path, top: bool) -> io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let md = std::fs::metadata(from)?;
    if !md.is_dir() {
        return Ok(());
    }
    if top {
        std::fs::set_permissions(to, std::fs::Permissions::from_mode(md.mode() & 0o7777))?;
        std::os::unix::fs::lchown(to, Some(md.uid()), Some(md.gid()))?;
    }
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let src = e.path();
        let dst = to.join(e.file_name());
        let md = std::fs::symlink_metadata(&src)?;
        let ft = md.file_type();
        if ft.is_dir() {
            std::fs::create_dir(&dst)?;
            copy_tree(&src, &dst, false)?;
            std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(md.mode() & 0o7777))?;
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&src)?, &dst)?;
        } else if ft.is_file() {
            std::fs::copy(&src, &dst)?;
            std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(md.mode() & 0o7777))?;
        } else {
            continue;
        }
        std::os::unix::fs::lchown(&dst, Some(md.uid()), Some(md.gid()))?;
    }
    Ok(())
}

/// Adds the prepared mounts (after the defaults, so they win) and `--read-only` to the spec.
pub fn apply(
    spec: oci_spec::runtime::Spec,
    mounts: &[Prepared],
    readonly_rootfs: bool,
) -> Result<oci_spec::runtime::Spec, String> {
    if mounts.is_empty() && !readonly_rootfs {
        return Ok(spec);
    }
    let mut v = serde_json::to_value(&spec).map_err(|e| e.to_string())?;
    if let Some(list) = v["mounts"].as_array_mut() {
        // A user mount replaces a default one at the same destination (e.g. --tmpfs /dev/shm).
        let dests: Vec<&Value> = mounts.iter().map(|m| &m.oci["destination"]).collect();
        list.retain(|m| !dests.contains(&&m["destination"]));
        list.extend(mounts.iter().map(|m| m.oci.clone()));
    } else {
        v["mounts"] = Value::Array(mounts.iter().map(|m| m.oci.clone()).collect());
    }
    if readonly_rootfs {
        v["root"]["readonly"] = Value::Bool(true);
    }
    serde_json::from_value(v).map_err(|e| format!("building the runtime spec: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_parse_like_docker() {
        let m = parse_bind("/srv/data:/data:ro").unwrap();
        assert_eq!(
            (m.kind, m.source.as_str(), m.target.as_str(), m.readonly),
            (MountKind::Bind, "/srv/data", "/data", true)
        );
        assert!(m.create_source);
        let m = parse_bind("cache:/var/cache/").unwrap();
        assert_eq!((m.kind, m.source.as_str(), m.target.as_str()), (MountKind::Volume, "cache", "/var/cache"));
        let m = parse_bind("/anon").unwrap();
        assert!(m.anonymous && m.kind == MountKind::Volume);
        assert!(parse_bind("x:/y:bogus").unwrap_err().contains("invalid mode"));
        assert!(parse_bind("rel/path:/y").is_err());
        assert!(parse_bind("/a:/").is_err());
        assert!(parse_bind("/a:b").is_err());
    }

    #[test]
    fn mount_requests_validate() {
        let r = MountRequest {
            kind: "bind".into(),
            source: "/no/such/dir".into(),
            target: "/x".into(),
            ..Default::default()
        };
        assert_eq!(
            from_request(&r).unwrap_err(),
            "invalid mount config for type \"bind\": bind source path does not exist: /no/such/dir"
        );
        let r = MountRequest { kind: "tmpfs".into(), target: "/t".into(), tmpfs_size: 1 << 20, ..Default::default() };
        assert_eq!(from_request(&r).unwrap().tmpfs_options, vec!["size=1048576"]);
        let plan = plan(
            &["v1:/data".into()],
            &[],
            &BTreeMap::from([("/run".to_string(), "size=1m".to_string())]),
            &["/data".into(), "/vol/".into()],
        )
        .unwrap();
        assert_eq!(plan.len(), 3);
        assert!(plan[2].anonymous && plan[2].target == "/vol");
        assert!(super::plan(&["va:/x".into(), "vb:/x".into()], &[], &BTreeMap::new(), &[])
            .unwrap_err()
            .contains("Duplicate mount point"));
    }

    #[test]
    fn mountpoints_stay_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rootfs");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        // Absolute symlink as images have them: resolves inside the root.
        std::os::unix::fs::symlink("/etc", root.join("data")).unwrap();
        // A symlink that climbs out: clamped to the root as well.
        std::os::unix::fs::symlink("../../outside", root.join("up")).unwrap();
        let (p, _) = ensure_mountpoint(&root, "/data/sub", true).unwrap();
        assert_eq!(p, "/etc/sub");
        assert!(root.join("etc/sub").is_dir());
        let (p, _) = ensure_mountpoint(&root, "/up/x", true).unwrap();
        assert_eq!(p, "/outside/x");
        assert!(root.join("outside/x").is_dir());
        assert!(std::fs::read_dir(&outside).unwrap().next().is_none(), "created outside the root");
        let (p, _) = ensure_mountpoint(&root, "/a/b/file", false).unwrap();
        assert_eq!(p, "/a/b/file");
        assert!(root.join("a/b/file").is_file());
    }

    #[test]
    fn copy_up_fills_an_empty_volume() {
        struct V(PathBuf, std::cell::Cell<bool>);
        impl VolumePaths for V {
            fn data_path(&self, _: &str) -> PathBuf {
                self.0.clone()
            }
            fn populated(&self, _: &str) -> bool {
                self.1.get()
            }
            fn set_populated(&self, _: &str) {
                self.1.set(true)
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rootfs");
        std::fs::create_dir_all(root.join("vol/sub")).unwrap();
        std::fs::write(root.join("vol/sub/seed"), b"seed").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("vol/link")).unwrap();
        let data = dir.path().join("_data");
        std::fs::create_dir(&data).unwrap();
        let v = V(data.clone(), Default::default());
        let m = MountSpec { kind: MountKind::Volume, source: "x".into(), target: "/vol".into(), ..Default::default() };
        let p = setup(&root, &[m], &v).unwrap();
        assert_eq!(p[0].oci["destination"], "/vol");
        assert_eq!(std::fs::read(data.join("sub/seed")).unwrap(), b"seed");
        assert_eq!(std::fs::read_link(data.join("link")).unwrap(), PathBuf::from("/etc/passwd"));
        assert!(v.1.get());
    }
}
