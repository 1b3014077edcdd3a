//! Image references, normalized exactly as Docker does (docker/distribution `reference`,
//! `ParseNormalizedNamed` + `TagNameOnly`).
//!
//! A reference is `[domain/]path[:tag][@digest]`:
//! - the domain is the first `/`-separated component when it contains `.` or `:`, is
//!   `localhost`, or has an upper-case letter; otherwise the domain is `docker.io`;
//!   `index.docker.io` is spelled `docker.io`;
//! - on docker.io a single-component path gets `library/` in front (`nginx` → `library/nginx`);
//! - without tag or digest the tag is `latest`;
//! - path components are `[a-z0-9]+` separated by `.`, `_`, `__` or runs of `-`; the whole name
//!   is at most 255 characters; a tag is `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
//!
//! [`Reference::familiar`] gives the short form Docker prints (`busybox`, `user/app`,
//! `localhost:5000/a`).

use crate::digest::Digest;
use std::fmt;
use std::str::FromStr;

/// The registry Docker uses when a reference names none.
pub const DEFAULT_DOMAIN: &str = "docker.io";
/// The legacy spelling of [`DEFAULT_DOMAIN`].
pub const LEGACY_DEFAULT_DOMAIN: &str = "index.docker.io";
/// The namespace of official images on docker.io.
pub const OFFICIAL_REPO_PREFIX: &str = "library/";
/// The tag used when none is given.
pub const DEFAULT_TAG: &str = "latest";
/// The longest name (domain + path) allowed.
pub const NAME_TOTAL_LENGTH_MAX: usize = 255;

/// Why a string is not a valid image reference. Each variant names the part at fault.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReferenceError {
    /// Nothing was given.
    #[error("invalid reference format: the reference is empty")]
    Empty,
    /// A 64-character hex string looks like an image ID, not a repository name.
    #[error("invalid repository name ({0}): cannot specify 64-byte hexadecimal strings (is this an image ID?)")]
    LooksLikeId(String),
    /// The repository path has upper-case letters.
    #[error("invalid reference format: repository name {0:?} must be lowercase")]
    NotLowercase(String),
    /// The registry part (host[:port]) is malformed.
    #[error("invalid reference format: registry {domain:?} is not a valid host[:port]: {why}")]
    BadDomain {
        /// The offending domain.
        domain: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A path component is malformed.
    #[error("invalid reference format: repository path component {component:?} is invalid: {why}")]
    BadPathComponent {
        /// The offending component.
        component: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The tag is malformed.
    #[error("invalid reference format: tag {tag:?} is invalid: {why}")]
    BadTag {
        /// The offending tag.
        tag: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The digest is malformed or uses an algorithm other than sha256.
    #[error("invalid reference format: digest {digest:?} is invalid: {why}")]
    BadDigest {
        /// The offending digest.
        digest: String,
        /// What is wrong with it.
        why: String,
    },
    /// The name is longer than 255 characters.
    #[error("invalid reference format: repository name must not be longer than {NAME_TOTAL_LENGTH_MAX} characters (got {0})")]
    NameTooLong(usize),
}

/// A parsed, normalized image reference.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    domain: String,
    path: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl Reference {
    /// Parses what a user typed and normalizes it as Docker does; adds the `latest` tag when
    /// neither tag nor digest is given.
    pub fn parse(s: &str) -> Result<Self, ReferenceError> {
        let mut r = Self::parse_normalized(s)?;
        if r.tag.is_none() && r.digest.is_none() {
            r.tag = Some(DEFAULT_TAG.to_string());
        }
        Ok(r)
    }

    /// Parses and normalizes without adding a default tag (a bare repository stays bare).
    pub fn parse_normalized(s: &str) -> Result<Self, ReferenceError> {
        if s.is_empty() {
            return Err(ReferenceError::Empty);
        }
        if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) {
            return Err(ReferenceError::LooksLikeId(s.to_string()));
        }
        // Split off the digest, then the tag (a ':' after the last '/').
        let (rest, digest) = match s.split_once('@') {
            Some((rest, d)) => (rest, Some(parse_digest(d)?)),
            None => (s, None),
        };
        let (name, tag) = match rest.rfind(':') {
            Some(i) if !rest[i + 1..].contains('/') => (&rest[..i], Some(&rest[i + 1..])),
            _ => (rest, None),
        };
        if let Some(t) = tag {
            check_tag(t)?;
        }
        if name.is_empty() {
            return Err(ReferenceError::Empty);
        }
        let (domain, path) = split_domain(name);
        if path.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(ReferenceError::NotLowercase(path.to_string()));
        }
        check_domain(&domain)?;
        for c in path.split('/') {
            check_path_component(c)?;
        }
        let full = domain.len() + 1 + path.len();
        if full > NAME_TOTAL_LENGTH_MAX {
            return Err(ReferenceError::NameTooLong(full));
        }
        Ok(Self { domain, path, tag: tag.map(str::to_string), digest })
    }

    /// Builds a reference from parts (already validated elsewhere, e.g. a stored name).
    pub fn with_tag(&self, tag: &str) -> Result<Self, ReferenceError> {
        check_tag(tag)?;
        Ok(Self { domain: self.domain.clone(), path: self.path.clone(), tag: Some(tag.to_string()), digest: None })
    }

    /// The same repository pinned to `digest` (no tag): `docker.io/library/busybox@sha256:…`.
    pub fn with_digest(&self, digest: Digest) -> Self {
        Self { domain: self.domain.clone(), path: self.path.clone(), tag: None, digest: Some(digest) }
    }

    /// The registry host[:port], e.g. `docker.io`, `localhost:5000`, `[::1]:5000`.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The repository path within the registry, e.g. `library/busybox`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// `domain/path`, e.g. `docker.io/library/busybox`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// The tag, if any.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest, if any.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// What to ask the registry for: the digest when pinned, else the tag.
    pub fn object(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => DEFAULT_TAG.to_string(),
        }
    }

    /// The short name Docker displays: docker.io and `library/` dropped (`busybox`,
    /// `user/app`, `localhost:5000/a`), without tag or digest.
    pub fn familiar_name(&self) -> String {
        if self.domain == DEFAULT_DOMAIN {
            match self.path.strip_prefix(OFFICIAL_REPO_PREFIX) {
                Some(rest) if !rest.contains('/') => rest.to_string(),
                _ => self.path.clone(),
            }
        } else {
            self.name()
        }
    }

    /// The short form with tag and digest, e.g. `busybox:latest`.
    pub fn familiar(&self) -> String {
        let mut s = self.familiar_name();
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(&d.to_string());
        }
        s
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// The full normalized form, e.g. `docker.io/library/busybox:latest`.
impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.domain, self.path)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Reference({self})")
    }
}

/// Docker's `splitDockerDomain`.
fn split_domain(name: &str) -> (String, String) {
    let (mut domain, mut rest) = match name.split_once('/') {
        Some((first, rest))
            if first.contains('.')
                || first.contains(':')
                || first == "localhost"
                || first.bytes().any(|b| b.is_ascii_uppercase()) =>
        {
            (first.to_string(), rest.to_string())
        }
        _ => (DEFAULT_DOMAIN.to_string(), name.to_string()),
    };
    if domain == LEGACY_DEFAULT_DOMAIN {
        domain = DEFAULT_DOMAIN.to_string();
    }
    if domain == DEFAULT_DOMAIN && !rest.contains('/') {
        rest = format!("{OFFICIAL_REPO_PREFIX}{rest}");
    }
    (domain, rest)
}

fn check_domain(domain: &str) -> Result<(), ReferenceError> {
    let bad = |why| Err(ReferenceError::BadDomain { domain: domain.to_string(), why });
    let (host, port) = if let Some(rest) = domain.strip_prefix('[') {
        let Some(end) = rest.find(']') else { return bad("an IPv6 address must be closed with ']'") };
        let ip = &rest[..end];
        if ip.is_empty() || !ip.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
            return bad("an IPv6 address between [ ] may only have hex digits and ':'");
        }
        let after = &rest[end + 1..];
        match after.strip_prefix(':') {
            Some(p) => (None, Some(p)),
            None if after.is_empty() => (None, None),
            None => return bad("only ':port' may follow an IPv6 address"),
        }
    } else {
        match domain.split_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(domain), None),
        }
    };
    if let Some(host) = host {
        if host.is_empty() {
            return bad("the host name is empty");
        }
        for label in host.split('.') {
            if label.is_empty() {
                return bad("a host name label is empty (two dots in a row, or a leading/trailing dot)");
            }
            let b = label.as_bytes();
            if !b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-') {
                return bad("a host name may only have letters, digits, '-' and '.'");
            }
            if b[0] == b'-' || b[b.len() - 1] == b'-' {
                return bad("a host name label may not start or end with '-'");
            }
        }
    }
    if let Some(p) = port {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return bad("the port must be a number");
        }
    }
    Ok(())
}

fn check_path_component(c: &str) -> Result<(), ReferenceError> {
    let bad = |why| Err(ReferenceError::BadPathComponent { component: c.to_string(), why });
    if c.is_empty() {
        return bad("it is empty (a leading, trailing or double '/')");
    }
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if !b.iter().all(|&x| alnum(x) || matches!(x, b'.' | b'_' | b'-')) {
        return bad("only lowercase letters, digits and the separators '.', '_', '__', '-' are allowed");
    }
    if !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return bad("it must start and end with a lowercase letter or digit");
    }
    // Separators: '.', '_', '__' or one or more '-'; never mixed or repeated otherwise.
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return bad("separators must be a single '.', '_' or '__', or a run of '-'");
        }
    }
    Ok(())
}

fn check_tag(t: &str) -> Result<(), ReferenceError> {
    let bad = |why| Err(ReferenceError::BadTag { tag: t.to_string(), why });
    if t.is_empty() {
        return bad("it is empty");
    }
    if t.len() > 128 {
        return bad("it is longer than 128 characters");
    }
    let b = t.as_bytes();
    if !(b[0].is_ascii_alphanumeric() || b[0] == b'_') {
        return bad("it must start with a letter, digit or '_'");
    }
    if !b.iter().all(|x| x.is_ascii_alphanumeric() || matches!(x, b'_' | b'.' | b'-')) {
        return bad("only letters, digits, '_', '.' and '-' are allowed");
    }
    Ok(())
}

fn parse_digest(d: &str) -> Result<Digest, ReferenceError> {
    d.parse::<Digest>().map_err(|e| ReferenceError::BadDigest { digest: d.to_string(), why: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> String {
        Reference::parse(s).unwrap_or_else(|e| panic!("{s}: {e}")).to_string()
    }

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn normalizes_like_docker() {
        assert_eq!(norm("nginx"), "docker.io/library/nginx:latest");
        assert_eq!(norm("nginx:1.25"), "docker.io/library/nginx:1.25");
        assert_eq!(norm("user/app"), "docker.io/user/app:latest");
        assert_eq!(norm("docker.io/nginx"), "docker.io/library/nginx:latest");
        assert_eq!(norm("index.docker.io/library/nginx"), "docker.io/library/nginx:latest");
        assert_eq!(norm("index.docker.io/user/app:v1"), "docker.io/user/app:v1");
        assert_eq!(norm("localhost:5000/a/b:t"), "localhost:5000/a/b:t");
        assert_eq!(norm("localhost/a"), "localhost/a:latest");
        assert_eq!(norm("[::1]:5000/x"), "[::1]:5000/x:latest");
        assert_eq!(norm("[::1]/x:y"), "[::1]/x:y");
        assert_eq!(norm("ghcr.io/o/r/deep/path:1.0"), "ghcr.io/o/r/deep/path:1.0");
        assert_eq!(norm("Registry.Example.com/a"), "Registry.Example.com/a:latest");
        assert_eq!(norm("a__b/c.d-e---f/g_h"), "docker.io/a__b/c.d-e---f/g_h:latest");
        assert_eq!(norm(&format!("busybox@{D}")), format!("docker.io/library/busybox@{D}"));
        assert_eq!(norm(&format!("busybox:1.36@{D}")), format!("docker.io/library/busybox:1.36@{D}"));
        assert_eq!(norm(&format!("localhost:5000/a@{D}")), format!("localhost:5000/a@{D}"));
    }

    #[test]
    fn parts_and_familiar_form() {
        let r = Reference::parse("busybox").unwrap();
        assert_eq!(r.domain(), "docker.io");
        assert_eq!(r.path(), "library/busybox");
        assert_eq!(r.tag(), Some("latest"));
        assert_eq!(r.familiar(), "busybox:latest");
        assert_eq!(r.familiar_name(), "busybox");
        assert_eq!(r.object(), "latest");
        assert_eq!(Reference::parse("user/app:v1").unwrap().familiar(), "user/app:v1");
        assert_eq!(Reference::parse("docker.io/library/a/b").unwrap().familiar_name(), "library/a/b");
        assert_eq!(Reference::parse("localhost:5000/a").unwrap().familiar(), "localhost:5000/a:latest");
        let p = Reference::parse(&format!("busybox@{D}")).unwrap();
        assert_eq!(p.tag(), None);
        assert_eq!(p.object(), D);
        assert_eq!(p.familiar(), format!("busybox@{D}"));
        assert_eq!(Reference::parse_normalized("busybox").unwrap().tag(), None);
    }

    #[test]
    fn refuses_invalid_with_the_part_at_fault() {
        assert_eq!(Reference::parse(""), Err(ReferenceError::Empty));
        assert!(matches!(Reference::parse("Nginx"), Err(ReferenceError::NotLowercase(_))));
        assert!(matches!(Reference::parse("docker.io/User/app"), Err(ReferenceError::NotLowercase(_))));
        assert!(matches!(Reference::parse(&"a".repeat(64)), Err(ReferenceError::LooksLikeId(_))));
        assert!(matches!(Reference::parse("a:b:c"), Err(ReferenceError::BadPathComponent { .. })));
        assert!(matches!(Reference::parse("a:"), Err(ReferenceError::BadTag { .. })));
        assert!(matches!(Reference::parse("a:-x"), Err(ReferenceError::BadTag { .. })));
        assert!(matches!(Reference::parse(&format!("a:{}", "x".repeat(129))), Err(ReferenceError::BadTag { .. })));
        assert!(matches!(Reference::parse("a//b"), Err(ReferenceError::BadPathComponent { .. })));
        assert!(matches!(Reference::parse("a/b/"), Err(ReferenceError::BadPathComponent { .. })));
        assert!(matches!(Reference::parse("-a"), Err(ReferenceError::BadPathComponent { .. })));
        assert!(matches!(Reference::parse("a..b"), Err(ReferenceError::BadPathComponent { .. })));
        assert!(matches!(Reference::parse("a___b"), Err(ReferenceError::BadPathComponent { .. })));
        assert!(matches!(Reference::parse("a b"), Err(ReferenceError::BadPathComponent { .. })));
        assert!(matches!(Reference::parse("localhost:abc/a"), Err(ReferenceError::BadDomain { .. })));
        assert!(matches!(Reference::parse("-bad.com/a"), Err(ReferenceError::BadDomain { .. })));
        assert!(matches!(Reference::parse("[zz]:5000/a"), Err(ReferenceError::BadDomain { .. })));
        assert!(matches!(Reference::parse("a@sha256:abc"), Err(ReferenceError::BadDigest { .. })));
        assert!(matches!(Reference::parse("a@md5:abc"), Err(ReferenceError::BadDigest { .. })));
        let long = format!("a/{}", "b".repeat(300));
        assert!(matches!(Reference::parse(&long), Err(ReferenceError::NameTooLong(_))));
        let msg = Reference::parse("busybox:-x").unwrap_err().to_string();
        assert!(msg.contains("tag") && msg.contains("-x"), "{msg}");
    }
}
