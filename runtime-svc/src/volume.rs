//! Local volumes: `<runtime root>/volumes/<name>/_data` holds the data, `volume.json` beside it
//! the metadata. Named volumes outlive the containers that use them; anonymous ones (an image's
//! VOLUME, or `-v /path`) are removed with `rm -v` and by `run --rm`, as docker does. A volume
//! used by any container (running or not) cannot be removed.

use crate::container::now_nanos;
use crate::error::{IoContext, RuntimeError};
use crate::manager::Manager;
use crate::mounts::MountKind;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A volume's metadata.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Volume {
    /// Name.
    pub name: String,
    /// ns since epoch.
    pub created_at: i64,
    /// Labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Made for an image VOLUME or an unnamed -v.
    #[serde(default)]
    pub anonymous: bool,
    /// Image content was copied in (done once, on the first mount).
    #[serde(default)]
    pub populated: bool,
}

/// The volumes directory.
pub struct Volumes {
    root: PathBuf,
    lock: std::sync::Mutex<()>,
}

/// Volume names: docker's `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
pub fn valid_volume_name(name: &str) -> bool {
    let mut c = name.chars();
    name.len() >= 2
        && name.len() <= 255
        && matches!(c.next(), Some(x) if x.is_ascii_alphanumeric())
        && c.all(|x| x.is_ascii_alphanumeric() || "_.-".contains(x))
}

impl Volumes {
    /// Opens (creating) `<root>`.
    pub fn open(root: PathBuf) -> Result<Volumes, RuntimeError> {
        std::fs::create_dir_all(&root).ctx(|| format!("creating {}", root.display()))?;
        Ok(Volumes { root, lock: std::sync::Mutex::new(()) })
    }

    /// Host path of a volume's data.
    pub fn data_path(&self, name: &str) -> PathBuf {
        self.root.join(name).join("_data")
    }

    fn meta_path(&self, name: &str) -> PathBuf {
        self.root.join(name).join("volume.json")
    }

    /// One volume.
    pub fn get(&self, name: &str) -> Option<Volume> {
        if !valid_volume_name(name) {
            return None;
        }
        let data = std::fs::read(self.meta_path(name)).ok()?;
        serde_json::from_slice(&data).ok()
    }

    fn save(&self, v: &Volume) -> Result<(), RuntimeError> {
        let p = self.meta_path(&v.name);
        let tmp = p.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(v).map_err(std::io::Error::other).ctx(|| "volume".into())?)
            .ctx(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &p).ctx(|| format!("writing {}", p.display()))
    }

    /// Creates a volume, or returns the existing one of that name. An empty name makes an
    /// anonymous volume with a random 64-hex name.
    pub fn create(
        &self,
        name: &str,
        labels: BTreeMap<String, String>,
        anonymous: bool,
    ) -> Result<Volume, RuntimeError> {
        let name = if name.is_empty() { crate::container::new_id() } else { name.to_string() };
        if !valid_volume_name(&name) {
            return Err(RuntimeError::Invalid(format!(
                "create {name}: \"{name}\" includes invalid characters for a local volume name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed. If you intended to pass a host directory, use absolute path"
            )));
        }
        let _g = self.lock.lock().unwrap();
        if let Some(v) = self.get(&name) {
            return Ok(v);
        }
        let data = self.data_path(&name);
        std::fs::create_dir_all(&data).ctx(|| format!("creating {}", data.display()))?;
        let v = Volume { name, created_at: now_nanos(), labels, anonymous, populated: false };
        self.save(&v)?;
        Ok(v)
    }

    /// Every volume, by name.
    pub fn list(&self) -> Vec<Volume> {
        let mut v: Vec<Volume> = std::fs::read_dir(&self.root)
            .map(|rd| rd.flatten().filter_map(|d| self.get(&d.file_name().to_string_lossy())).collect())
            .unwrap_or_default();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Marks the image content as copied in.
    pub fn set_populated(&self, name: &str) {
        let _g = self.lock.lock().unwrap();
        if let Some(mut v) = self.get(name) {
            v.populated = true;
            let _ = self.save(&v);
        }
    }

    /// Deletes a volume and its data (the caller checked it is unused).
    fn delete(&self, name: &str) -> Result<u64, RuntimeError> {
        let dir = self.root.join(name);
        let size = dir_size(&dir.join("_data"));
        std::fs::remove_dir_all(&dir).ctx(|| format!("removing {}", dir.display()))?;
        Ok(size)
    }
}

/// Bytes of the regular files under `p` (symlinks not followed).
pub fn dir_size(p: &Path) -> u64 {
    let Ok(md) = std::fs::symlink_metadata(p) else { return 0 };
    if md.is_dir() {
        std::fs::read_dir(p).map(|rd| rd.flatten().map(|e| dir_size(&e.path())).sum()).unwrap_or(0)
    } else if md.is_file() {
        md.len()
    } else {
        0
    }
}

impl Manager {
    /// The containers (IDs) that mount volume `name`.
    pub fn volume_users(&self, name: &str) -> Vec<String> {
        self.list(true)
            .into_iter()
            .filter(|r| r.mount_points.iter().any(|m| m.kind == MountKind::Volume && m.source == name))
            .map(|r| r.id)
            .collect()
    }

    /// `volume create`.
    pub fn volume_create(&self, name: &str, labels: BTreeMap<String, String>) -> Result<Volume, RuntimeError> {
        self.volumes.create(name, labels, false)
    }

    /// `volume inspect`.
    pub fn volume_get(&self, name: &str) -> Result<Volume, RuntimeError> {
        self.volumes.get(name).ok_or_else(|| RuntimeError::NoSuchVolume(name.to_string()))
    }

    /// `volume ls`.
    pub fn volume_list(&self) -> Vec<Volume> {
        self.volumes.list()
    }

    /// Host path of a volume's data.
    pub fn volume_path(&self, name: &str) -> PathBuf {
        self.volumes.data_path(name)
    }

    /// `volume rm`: refused while any container uses it.
    pub fn volume_remove(&self, name: &str) -> Result<(), RuntimeError> {
        self.volume_get(name)?;
        let users = self.volume_users(name);
        if !users.is_empty() {
            return Err(RuntimeError::State(format!("remove {name}: volume is in use - [{}]", users.join(", "))));
        }
        self.volumes.delete(name).map(|_| ())
    }

    /// `volume prune`: unused anonymous volumes (all unused ones with `all`); returns the names
    /// removed and the bytes freed.
    pub fn volume_prune(&self, all: bool) -> (Vec<String>, u64) {
        let mut removed = vec![];
        let mut bytes = 0;
        for v in self.volumes.list() {
            if (all || v.anonymous) && self.volume_users(&v.name).is_empty() {
                if let Ok(n) = self.volumes.delete(&v.name) {
                    bytes += n;
                    removed.push(v.name);
                }
            }
        }
        (removed, bytes)
    }

    /// At create: every mount of the new container, with the volumes it names (or needs)
    /// created and `-v` host directories made.
    pub(crate) fn prepare_mounts(
        &self,
        host: &crate::container::HostSettings,
        image_volumes: &[String],
    ) -> Result<Vec<crate::mounts::MountSpec>, RuntimeError> {
        let mut planned = crate::mounts::plan(&host.binds, &host.mounts, &host.tmpfs, image_volumes)
            .map_err(RuntimeError::Invalid)?;
        let mut made = vec![];
        let res = (|| {
            for m in planned.iter_mut() {
                match m.kind {
                    MountKind::Volume if m.anonymous => {
                        m.source = self.volumes.create("", BTreeMap::new(), true)?.name;
                        made.push(m.clone());
                    }
                    MountKind::Volume => {
                        self.volumes.create(&m.source, BTreeMap::new(), false)?;
                    }
                    MountKind::Bind => {
                        if m.create_source && std::fs::metadata(&m.source).is_err() {
                            std::fs::create_dir_all(&m.source).ctx(|| format!("creating bind source {}", m.source))?;
                        }
                        m.host_path = m.source.clone();
                    }
                    MountKind::Tmpfs => {}
                }
                if m.kind == MountKind::Volume {
                    m.host_path = self.volumes.data_path(&m.source).display().to_string();
                }
            }
            Ok(())
        })();
        if let Err(e) = res {
            self.remove_anonymous_volumes(&made);
            return Err(e);
        }
        Ok(planned)
    }

    /// Removes the anonymous volumes of a removed container (`rm -v`, `run --rm`) that no other
    /// container uses.
    pub(crate) fn remove_anonymous_volumes(&self, mounts: &[crate::mounts::MountSpec]) {
        for m in mounts {
            if m.kind == MountKind::Volume && m.anonymous && self.volume_users(&m.source).is_empty() {
                if let Err(e) = self.volumes.delete(&m.source) {
                    tracing::warn!(volume = %m.source, error = %e, "could not remove anonymous volume");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_get_list_delete() {
        let dir = tempfile::tempdir().unwrap();
        let vols = Volumes::open(dir.path().join("volumes")).unwrap();
        let v = vols.create("data", BTreeMap::new(), false).unwrap();
        assert!(vols.data_path("data").is_dir());
        std::fs::write(vols.data_path("data").join("f"), b"12345").unwrap();
        // Creating again returns the same volume, data kept.
        let again = vols.create("data", BTreeMap::new(), false).unwrap();
        assert_eq!(again.created_at, v.created_at);
        let anon = vols.create("", BTreeMap::new(), true).unwrap();
        assert_eq!(anon.name.len(), 64);
        assert_eq!(vols.list().len(), 2);
        assert_eq!(vols.delete("data").unwrap(), 5);
        assert!(vols.get("data").is_none());
        assert!(vols.create("../x", BTreeMap::new(), false).is_err());
        assert!(vols.get("../volumes").is_none());
    }
}
