//! OCI / Docker schema2 image documents (descriptors, manifests, indexes, configs), platform
//! matching, and reading an image out of store-svc by name or ID.
//!
//! [`load`] is what runtime-svc and the CLI use: name or ID → image record → (index → platform)
//! → manifest → config, every document read from store-svc, size-limited and digest-checked.
//! registry-svc shares the document types and [`Platform`] choice.

use crate::digest::Digest;
use crate::reference::{Reference, ReferenceError};
use berth_proto::store::v1 as spb;
use berth_proto::types::v1 as tpb;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use tonic::transport::Channel;

/// OCI image manifest.
pub const MT_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const MT_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image config.
pub const MT_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Docker schema2 manifest.
pub const MT_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker schema2 manifest list.
pub const MT_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker schema2 image config.
pub const MT_DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Docker gzip layer.
pub const MT_DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// OCI uncompressed layer.
pub const MT_OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
/// OCI gzip layer.
pub const MT_OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// OCI zstd layer.
pub const MT_OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// Largest manifest, index or config accepted (hostile input guard).
pub const MAX_DOCUMENT_BYTES: usize = 4 * 1024 * 1024;

/// Is this the media type of an index (OCI index or Docker manifest list)?
pub fn is_index(media_type: &str) -> bool {
    media_type == MT_OCI_INDEX || media_type == MT_DOCKER_LIST
}

/// Is this the media type of an image manifest (OCI or Docker schema2)?
pub fn is_manifest(media_type: &str) -> bool {
    media_type == MT_OCI_MANIFEST || media_type == MT_DOCKER_MANIFEST
}

/// How a layer blob is compressed, from its media type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

impl Compression {
    /// The compression a layer media type implies; `None` for unknown layer types.
    pub fn of_media_type(mt: &str) -> Option<Self> {
        match mt {
            MT_OCI_LAYER | "application/vnd.oci.image.layer.nondistributable.v1.tar" => Some(Self::None),
            MT_OCI_LAYER_GZIP
            | MT_DOCKER_LAYER_GZIP
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Some(Self::Gzip),
            MT_OCI_LAYER_ZSTD | "application/vnd.docker.image.rootfs.diff.tar.zstd" => Some(Self::Zstd),
            _ => None,
        }
    }
}

/// An OS/architecture[/variant] pair.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Platform {
    /// CPU architecture in GOARCH spelling (amd64, arm64, arm, 386, ppc64le, s390x, riscv64).
    #[serde(default)]
    pub architecture: String,
    /// Operating system (linux).
    #[serde(default)]
    pub os: String,
    /// Architecture variant (v8, v7, ...).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub variant: String,
    /// OS version (Windows).
    #[serde(default, rename = "os.version", skip_serializing_if = "String::is_empty")]
    pub os_version: String,
}

impl Platform {
    /// The platform of this host (linux + the GOARCH name of the CPU).
    pub fn host() -> Self {
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", ""),
            "aarch64" => ("arm64", ""),
            "arm" => ("arm", "v7"),
            "x86" => ("386", ""),
            "powerpc64" => ("ppc64le", ""),
            "s390x" => ("s390x", ""),
            "riscv64" => ("riscv64", ""),
            other => (other, ""),
        };
        Self {
            architecture: architecture.into(),
            os: "linux".into(),
            variant: variant.into(),
            os_version: String::new(),
        }
    }

    /// Parses `os/arch[/variant]` as `--platform` takes it (e.g. `linux/arm64`, `linux/arm/v7`).
    /// A bare `arch` means linux/arch.
    pub fn parse(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split('/').collect();
        let norm_arch = |a: &str| match a {
            "x86_64" | "x86-64" => "amd64".to_string(),
            "aarch64" => "arm64".to_string(),
            "i386" => "386".to_string(),
            other => other.to_string(),
        };
        let p = match parts.as_slice() {
            [arch] if !arch.is_empty() => {
                Self { os: "linux".into(), architecture: norm_arch(arch), ..Default::default() }
            }
            [os, arch] if !os.is_empty() && !arch.is_empty() => {
                Self { os: os.to_string(), architecture: norm_arch(arch), ..Default::default() }
            }
            [os, arch, variant] if !os.is_empty() && !arch.is_empty() && !variant.is_empty() => Self {
                os: os.to_string(),
                architecture: norm_arch(arch),
                variant: variant.to_string(),
                ..Default::default()
            },
            _ => return Err(format!("invalid platform {s:?}: expected os/arch[/variant], e.g. linux/amd64")),
        };
        if !p.os.bytes().chain(p.architecture.bytes()).chain(p.variant.bytes()).all(|b| b.is_ascii_alphanumeric()) {
            return Err(format!("invalid platform {s:?}: only letters and digits are allowed in each part"));
        }
        Ok(p)
    }

    /// Whether an index entry for `candidate` can run where `self` is wanted. An empty variant on
    /// either side matches any variant; arm64's default variant is v8.
    pub fn matches(&self, candidate: &Platform) -> bool {
        if self.os != candidate.os || self.architecture != candidate.architecture {
            return false;
        }
        let norm = |v: &str| if self.architecture == "arm64" && v == "v8" { String::new() } else { v.to_string() };
        let (a, b) = (norm(&self.variant), norm(&candidate.variant));
        a.is_empty() || b.is_empty() || a == b
    }

    /// Converts from the proto type.
    pub fn from_proto(p: &tpb::Platform) -> Self {
        Self {
            architecture: p.architecture.clone(),
            os: p.os.clone(),
            variant: p.variant.clone(),
            os_version: p.os_version.clone(),
        }
    }

    /// Converts to the proto type.
    pub fn to_proto(&self) -> tpb::Platform {
        tpb::Platform {
            os: self.os.clone(),
            architecture: self.architecture.clone(),
            variant: self.variant.clone(),
            os_version: self.os_version.clone(),
        }
    }
}

/// `os/arch[/variant]`.
impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if !self.variant.is_empty() {
            write!(f, "/{}", self.variant)?;
        }
        Ok(())
    }
}

/// A content descriptor (OCI JSON spelling).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type of the content.
    #[serde(default)]
    pub media_type: String,
    /// Digest of the content.
    pub digest: Digest,
    /// Size in bytes.
    pub size: i64,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Platform (index entries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// URLs (foreign layers); kept so documents round-trip.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
}

impl Descriptor {
    /// Converts from the proto type, validating the digest.
    pub fn from_proto(d: &tpb::Descriptor) -> Result<Self, crate::DigestError> {
        Ok(Self {
            media_type: d.media_type.clone(),
            digest: d.digest.parse()?,
            size: d.size,
            annotations: d.annotations.clone().into_iter().collect(),
            platform: d.platform.as_ref().map(Platform::from_proto),
            urls: Vec::new(),
        })
    }

    /// Converts to the proto type.
    pub fn to_proto(&self) -> tpb::Descriptor {
        tpb::Descriptor {
            media_type: self.media_type.clone(),
            digest: self.digest.to_string(),
            size: self.size,
            annotations: self.annotations.clone().into_iter().collect(),
            platform: self.platform.as_ref().map(Platform::to_proto),
        }
    }
}

/// An image manifest (OCI or Docker schema2: the same shape).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Always 2.
    pub schema_version: u32,
    /// Media type (required by Docker schema2, optional in OCI).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub media_type: String,
    /// The config blob.
    pub config: Descriptor,
    /// Layers, base first.
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// An image index / Docker manifest list.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    /// Always 2.
    pub schema_version: u32,
    /// Media type.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub media_type: String,
    /// One entry per platform (and possibly attestations with platform unknown/unknown).
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Index {
    /// The entry for `want`: the first manifest whose platform matches. An error lists the
    /// platforms that are available.
    pub fn select(&self, want: &Platform) -> Result<&Descriptor, ImageError> {
        self.manifests
            .iter()
            .filter(|d| is_manifest(&d.media_type) || d.media_type.is_empty())
            .find(|d| d.platform.as_ref().is_some_and(|p| want.matches(p)))
            .ok_or_else(|| ImageError::NoMatchingPlatform { wanted: want.to_string(), available: self.platforms() })
    }

    /// The platforms the index offers, e.g. `["linux/amd64", "linux/arm64/v8"]` (attestation
    /// entries with `unknown/unknown` left out).
    pub fn platforms(&self) -> Vec<String> {
        self.manifests
            .iter()
            .filter_map(|d| d.platform.as_ref())
            .filter(|p| p.os != "unknown")
            .map(|p| p.to_string())
            .collect()
    }
}

/// Either document a manifest digest may point at, told apart by media type (or shape when the
/// media type is missing, as OCI allows).
#[derive(Clone, Debug)]
pub enum ManifestOrIndex {
    /// An image manifest.
    Manifest(Manifest),
    /// An index.
    Index(Index),
}

impl ManifestOrIndex {
    /// Parses a manifest or index; `media_type` is what the registry or descriptor said it is.
    pub fn parse(media_type: &str, data: &[u8]) -> Result<Self, String> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Probe {
            #[serde(default)]
            media_type: String,
            #[serde(default)]
            manifests: Option<serde_json::Value>,
            #[serde(default)]
            schema_version: Option<u32>,
        }
        let probe: Probe = serde_json::from_slice(data).map_err(|e| format!("not valid JSON: {e}"))?;
        if probe.schema_version == Some(1) {
            return Err("Docker schema1 manifests are not supported (deprecated since 2017)".into());
        }
        let mt = if !probe.media_type.is_empty() { probe.media_type.as_str() } else { media_type };
        let index =
            if mt.is_empty() || !(is_index(mt) || is_manifest(mt)) { probe.manifests.is_some() } else { is_index(mt) };
        if index {
            let i: Index = serde_json::from_slice(data).map_err(|e| format!("invalid image index: {e}"))?;
            Ok(Self::Index(i))
        } else {
            let m: Manifest = serde_json::from_slice(data).map_err(|e| format!("invalid image manifest: {e}"))?;
            if m.schema_version != 2 {
                return Err(format!("unsupported manifest schemaVersion {}", m.schema_version));
            }
            Ok(Self::Manifest(m))
        }
    }
}

/// The runtime defaults an image carries (`config` in the image config), Docker spelling.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct RunConfig {
    /// User (name or uid[:gid]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Exposed ports, e.g. {"80/tcp": {}}.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    /// Environment, KEY=VALUE.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    /// Entrypoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// Default command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    /// Volumes, e.g. {"/data": {}}.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<BTreeMap<String, serde_json::Value>>,
    /// Working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// Labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// Stop signal, e.g. SIGTERM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    /// Healthcheck etc. are kept verbatim.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

/// The rootfs section of an image config.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct RootFs {
    /// Always "layers".
    #[serde(rename = "type", default)]
    pub kind: String,
    /// Digests of the uncompressed layer tars, base first.
    #[serde(default)]
    pub diff_ids: Vec<Digest>,
}

/// One history entry.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct History {
    /// When the step ran (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// The command of the step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// Author.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// Comment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// True when the step made no layer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub empty_layer: Option<bool>,
}

/// An image config (OCI / Docker schema2 config JSON).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ImageConfig {
    /// When the image was created (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// Author.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// CPU architecture.
    #[serde(default)]
    pub architecture: String,
    /// Operating system.
    #[serde(default)]
    pub os: String,
    /// Architecture variant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// Runtime defaults.
    #[serde(default)]
    pub config: RunConfig,
    /// Layer diff IDs.
    #[serde(default)]
    pub rootfs: RootFs,
    /// History.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<History>,
}

/// Why an image could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The name did not parse.
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    /// No image record by that name or ID.
    #[error("No such image: {0}")]
    NotFound(String),
    /// An ID prefix matched several images.
    #[error("image ID prefix {prefix:?} is ambiguous: it matches {count} images")]
    Ambiguous {
        /// The prefix given.
        prefix: String,
        /// How many images matched.
        count: usize,
    },
    /// store-svc failed or was unreachable.
    #[error("store-svc: {0}")]
    Store(String),
    /// A blob the image needs is not in the store.
    #[error("image {image} is incomplete: blob {digest} is missing from the store")]
    MissingBlob {
        /// Image name or ID.
        image: String,
        /// The missing digest.
        digest: Digest,
    },
    /// A document is malformed, too large or does not match its digest.
    #[error("{what} {digest} is invalid: {why}")]
    BadDocument {
        /// manifest, index or config.
        what: &'static str,
        /// Its digest.
        digest: Digest,
        /// What is wrong.
        why: String,
    },
    /// No index entry matches the wanted platform.
    #[error("no matching manifest for {wanted} in the manifest list entries (available: {})", if available.is_empty() { "none".to_string() } else { available.join(", ") })]
    NoMatchingPlatform {
        /// The platform asked for.
        wanted: String,
        /// Platforms the index offers.
        available: Vec<String>,
    },
}

/// An image as stored: the record and every document of the chosen platform.
#[derive(Clone, Debug)]
pub struct Image {
    /// Name of the image record it was found by (normalized), if found by name.
    pub name: Option<String>,
    /// What the record points at (an index or a manifest).
    pub target: Descriptor,
    /// Digest of the index when the record points at one.
    pub index_digest: Option<Digest>,
    /// The manifest of the chosen platform.
    pub manifest_descriptor: Descriptor,
    /// The manifest.
    pub manifest: Manifest,
    /// The parsed config.
    pub config: ImageConfig,
    /// The raw config bytes (what the ID is the digest of).
    pub config_bytes: Vec<u8>,
    /// Layer descriptors, base first.
    pub layers: Vec<Descriptor>,
    /// Diff IDs, base first (same length as `layers`).
    pub diff_ids: Vec<Digest>,
    /// The image ID: the config digest.
    pub id: Digest,
    /// When the record was created (seconds since the epoch), if known.
    pub record_created_unix: Option<i64>,
}

impl Image {
    /// The digest a user pulls by (`repo@digest`): the record's target.
    pub fn repo_digest(&self) -> &Digest {
        &self.target.digest
    }

    /// Total size of the image as Docker shows it: the sum of its layer blobs plus config.
    pub fn size(&self) -> i64 {
        self.layers.iter().map(|l| l.size).sum::<i64>() + self.manifest.config.size
    }

    /// Chain IDs of the layers (what a snapshotter keys unpacked layers by), base first.
    pub fn chain_ids(&self) -> Vec<Digest> {
        chain_ids(&self.diff_ids)
    }
}

/// Chain IDs per the OCI spec: ChainID(L0) = DiffID(L0); ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln)).
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => Digest::of(format!("{prev} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
}

/// Reads a whole blob from store-svc, refusing anything larger than `limit`, and checks its digest.
pub async fn read_blob(channel: Channel, digest: &Digest, limit: usize) -> Result<Vec<u8>, ImageError> {
    let mut client = spb::content_client::ContentClient::new(channel).max_decoding_message_size(32 * 1024 * 1024);
    let mut stream = match client.read(spb::ReadRequest { digest: digest.to_string(), offset: 0, length: 0 }).await {
        Ok(s) => s.into_inner(),
        Err(s) if s.code() == tonic::Code::NotFound => {
            return Err(ImageError::MissingBlob { image: String::new(), digest: digest.clone() })
        }
        Err(s) => return Err(ImageError::Store(s.message().to_string())),
    };
    let mut buf = Vec::new();
    loop {
        match stream.message().await {
            Ok(Some(m)) => {
                if buf.len() + m.data.len() > limit {
                    return Err(ImageError::BadDocument {
                        what: "document",
                        digest: digest.clone(),
                        why: format!("larger than {limit} bytes"),
                    });
                }
                buf.extend_from_slice(&m.data);
            }
            Ok(None) => break,
            Err(s) if s.code() == tonic::Code::NotFound => {
                return Err(ImageError::MissingBlob { image: String::new(), digest: digest.clone() })
            }
            Err(s) => return Err(ImageError::Store(s.message().to_string())),
        }
    }
    if &Digest::of(&buf) != digest {
        return Err(ImageError::BadDocument {
            what: "document",
            digest: digest.clone(),
            why: "digest mismatch".into(),
        });
    }
    Ok(buf)
}

/// Resolves `target` (a manifest or index descriptor) to a full [`Image`], choosing `platform`
/// (the host's by default) from an index.
pub async fn load_target(
    channel: Channel,
    name: Option<String>,
    target: Descriptor,
    platform: Option<&Platform>,
) -> Result<Image, ImageError> {
    let label = name.clone().unwrap_or_else(|| target.digest.to_string());
    let missing = |e: ImageError| match e {
        ImageError::MissingBlob { digest, .. } => ImageError::MissingBlob { image: label.clone(), digest },
        other => other,
    };
    let host = Platform::host();
    let want = platform.unwrap_or(&host);
    let mut desc = target.clone();
    let mut index_digest = None;
    let manifest = loop {
        let data = read_blob(channel.clone(), &desc.digest, MAX_DOCUMENT_BYTES).await.map_err(missing)?;
        let doc = ManifestOrIndex::parse(&desc.media_type, &data).map_err(|why| ImageError::BadDocument {
            what: "manifest",
            digest: desc.digest.clone(),
            why,
        })?;
        match doc {
            ManifestOrIndex::Manifest(m) => break m,
            ManifestOrIndex::Index(i) => {
                if index_digest.is_some() {
                    return Err(ImageError::BadDocument {
                        what: "index",
                        digest: desc.digest.clone(),
                        why: "an index entry points at another index".into(),
                    });
                }
                index_digest = Some(desc.digest.clone());
                desc = i.select(want)?.clone();
                if platform.is_none() {
                    // No platform asked for: the host's if its manifest is here, else the first
                    // platform that was pulled (e.g. `pull --platform linux/arm64`).
                    let mut candidates = vec![desc.clone()];
                    candidates.extend(i.manifests.iter().filter(|d| d.digest != desc.digest).cloned());
                    let digests: Vec<String> = candidates.iter().map(|d| d.digest.to_string()).collect();
                    let mut content = spb::content_client::ContentClient::new(channel.clone());
                    if let Ok(r) = content.stat_many(spb::StatManyRequest { digests }).await {
                        let present: Vec<String> = r.into_inner().present.into_iter().map(|b| b.digest).collect();
                        if let Some(c) = candidates.iter().find(|c| present.contains(&c.digest.to_string())) {
                            desc = c.clone();
                        }
                    }
                }
            }
        }
    };
    let config_bytes =
        read_blob(channel.clone(), &manifest.config.digest, MAX_DOCUMENT_BYTES).await.map_err(missing)?;
    let config: ImageConfig = serde_json::from_slice(&config_bytes).map_err(|e| ImageError::BadDocument {
        what: "config",
        digest: manifest.config.digest.clone(),
        why: e.to_string(),
    })?;
    if config.rootfs.diff_ids.len() != manifest.layers.len() {
        return Err(ImageError::BadDocument {
            what: "config",
            digest: manifest.config.digest.clone(),
            why: format!(
                "it lists {} diff_ids but the manifest has {} layers",
                config.rootfs.diff_ids.len(),
                manifest.layers.len()
            ),
        });
    }
    Ok(Image {
        name,
        target,
        index_digest,
        manifest_descriptor: desc,
        layers: manifest.layers.clone(),
        diff_ids: config.rootfs.diff_ids.clone(),
        id: manifest.config.digest.clone(),
        manifest,
        config,
        config_bytes,
        record_created_unix: None,
    })
}

/// A stored image record, in domain types.
#[derive(Clone, Debug)]
pub struct Record {
    /// Normalized name.
    pub name: String,
    /// What it points at.
    pub target: Descriptor,
    /// When the record was created (seconds since the epoch).
    pub created_unix: Option<i64>,
}

/// Lists every image record.
pub async fn list_records(channel: Channel) -> Result<Vec<Record>, ImageError> {
    let mut images = spb::images_client::ImagesClient::new(channel);
    let list = images
        .list(spb::ListImagesRequest { prefix: String::new() })
        .await
        .map_err(|s| ImageError::Store(s.message().to_string()))?
        .into_inner();
    list.images
        .into_iter()
        .map(|i| {
            let t = i.target.unwrap_or_default();
            let target =
                Descriptor::from_proto(&t).map_err(|e| ImageError::Store(format!("record {}: {e}", i.name)))?;
            Ok(Record { name: i.name, target, created_unix: i.created_at.map(|t| t.seconds) })
        })
        .collect()
}

/// Finds the record for a name (`busybox`, `localhost:5000/a:1`, `name@sha256:…`). `Ok(None)`
/// when there is none.
pub async fn get_record(channel: Channel, name: &str) -> Result<Option<Record>, ImageError> {
    let mut images = spb::images_client::ImagesClient::new(channel);
    match images.get(spb::GetImageRequest { name: name.to_string() }).await {
        Ok(r) => {
            let i = r.into_inner().image.unwrap_or_default();
            let t = i.target.unwrap_or_default();
            let target =
                Descriptor::from_proto(&t).map_err(|e| ImageError::Store(format!("record {}: {e}", i.name)))?;
            Ok(Some(Record { name: i.name, target, created_unix: i.created_at.map(|t| t.seconds) }))
        }
        Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
        Err(s) => Err(ImageError::Store(s.message().to_string())),
    }
}

/// Could `s` be (a prefix of) an image ID: `sha256:<hex>` or at least 4... hex characters?
fn id_prefix(s: &str) -> Option<&str> {
    let hex = s.strip_prefix("sha256:").unwrap_or(s);
    (hex.len() <= 64 && !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        .then_some(hex)
}

/// Loads an image by what a user typed: a reference (normalized as Docker does) or an image ID
/// (full `sha256:…`, 64 hex, or a unique prefix), for the host platform unless `platform` is given.
pub async fn load(channel: Channel, name_or_id: &str, platform: Option<&Platform>) -> Result<Image, ImageError> {
    let parsed = Reference::parse(name_or_id);
    if let Ok(r) = &parsed {
        if let Some(rec) = get_record(channel.clone(), &r.to_string()).await? {
            let mut img = load_target(channel, Some(rec.name), rec.target, platform).await?;
            img.record_created_unix = rec.created_unix;
            return Ok(img);
        }
    }
    let Some(prefix) = id_prefix(name_or_id) else {
        return match parsed {
            Err(e) => Err(e.into()),
            Ok(_) => Err(ImageError::NotFound(name_or_id.to_string())),
        };
    };
    // By ID: the config digest of some record's image.
    let mut found: Vec<Image> = Vec::new();
    for rec in list_records(channel.clone()).await? {
        let Ok(mut img) = load_target(channel.clone(), Some(rec.name.clone()), rec.target, platform).await else {
            continue;
        };
        if img.id.hex().starts_with(prefix) {
            img.record_created_unix = rec.created_unix;
            if !found.iter().any(|f| f.id == img.id) {
                found.push(img);
            }
        }
    }
    match found.len() {
        0 => Err(ImageError::NotFound(name_or_id.to_string())),
        1 => Ok(found.pop().expect("one")),
        n => Err(ImageError::Ambiguous { prefix: name_or_id.to_string(), count: n }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_parse_and_match() {
        let p = Platform::parse("linux/arm64").unwrap();
        assert_eq!(p.to_string(), "linux/arm64");
        assert!(p.matches(&Platform::parse("linux/arm64/v8").unwrap()));
        assert!(!p.matches(&Platform::parse("linux/amd64").unwrap()));
        assert!(!Platform::parse("linux/arm/v7").unwrap().matches(&Platform::parse("linux/arm/v6").unwrap()));
        assert_eq!(Platform::parse("x86_64").unwrap().to_string(), "linux/amd64");
        assert!(Platform::parse("linux/").is_err());
        assert!(Platform::parse("a/b/c/d").is_err());
    }

    #[test]
    fn index_selection_lists_platforms() {
        let d = |arch: &str| Descriptor {
            media_type: MT_OCI_MANIFEST.into(),
            digest: Digest::of(arch.as_bytes()),
            size: 1,
            annotations: Default::default(),
            platform: Some(Platform { architecture: arch.into(), os: "linux".into(), ..Default::default() }),
            urls: vec![],
        };
        let idx = Index {
            schema_version: 2,
            media_type: MT_OCI_INDEX.into(),
            manifests: vec![d("amd64"), d("arm64")],
            annotations: Default::default(),
        };
        assert_eq!(idx.select(&Platform::parse("linux/arm64").unwrap()).unwrap().digest, Digest::of(b"arm64"));
        let err = idx.select(&Platform::parse("linux/s390x").unwrap()).unwrap_err().to_string();
        assert!(err.contains("linux/s390x") && err.contains("linux/amd64, linux/arm64"), "{err}");
    }

    #[test]
    fn parses_manifest_and_index_by_shape() {
        let m = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"{MT_OCI_CONFIG}","digest":"{}","size":3}},"layers":[]}}"#,
            Digest::of(b"abc")
        );
        assert!(matches!(ManifestOrIndex::parse("", m.as_bytes()), Ok(ManifestOrIndex::Manifest(_))));
        let i = r#"{"schemaVersion":2,"manifests":[]}"#;
        assert!(matches!(ManifestOrIndex::parse("", i.as_bytes()), Ok(ManifestOrIndex::Index(_))));
        assert!(ManifestOrIndex::parse("", br#"{"schemaVersion":1}"#).unwrap_err().contains("schema1"));
    }

    #[test]
    fn chain_ids_follow_the_spec() {
        let a = Digest::of(b"a");
        let b = Digest::of(b"b");
        let c = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(c[0], a);
        assert_eq!(c[1], Digest::of(format!("{a} {b}").as_bytes()));
    }

    #[test]
    fn config_round_trips_docker_fields() {
        let j = r#"{"architecture":"amd64","os":"linux","config":{"Env":["A=b"],"Cmd":["sh"],"ExposedPorts":{"80/tcp":{}},"StopSignal":"SIGQUIT","Healthcheck":{"Test":["NONE"]}},"rootfs":{"type":"layers","diff_ids":[]}}"#;
        let c: ImageConfig = serde_json::from_str(j).unwrap();
        assert_eq!(c.config.cmd.as_deref(), Some(&["sh".to_string()][..]));
        assert_eq!(c.config.stop_signal.as_deref(), Some("SIGQUIT"));
        assert!(c.config.other.contains_key("Healthcheck"));
    }
}
