//! HTTP to upstream registries (the distribution API): endpoints and mirrors, credentials,
//! the bearer-token flow (challenge → token endpoint → token reused until it expires), basic
//! auth, manifests and blobs (with Range), and turning HTTP failures into [`RegistryError`]s.

use crate::config::{AuthEntry, UpstreamConfig};
use crate::error::{RegistryError, Result};
use base64::Engine as _;
use berth_common::image::{MT_DOCKER_LIST, MT_DOCKER_MANIFEST, MT_OCI_INDEX, MT_OCI_MANIFEST};
use berth_common::reference::Reference;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Accept header for manifests: every schema2 and OCI manifest and index type.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

/// One place a registry's content can be fetched from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// e.g. `https://registry-1.docker.io` or `http://127.0.0.1:5000`.
    pub base: String,
    /// The registry host this endpoint serves (credentials and tokens are looked up by it).
    pub host: String,
    /// Whether this is a mirror (errors fall through to the next endpoint).
    pub mirror: bool,
    /// An HTTPS attempt at an insecure or loopback registry: certificates are not verified and
    /// a failure to connect falls through to plain HTTP (as docker does).
    pub insecure_tls: bool,
}

/// User name and password for a registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password or token.
    pub password: String,
}

/// A bearer or basic challenge from `WWW-Authenticate`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Challenge {
    /// `Bearer realm=…,service=…,scope=…`.
    Bearer {
        /// Token endpoint.
        realm: String,
        /// Service name to ask a token for.
        service: Option<String>,
        /// Scope the registry suggests.
        scope: Option<String>,
    },
    /// `Basic realm=…`.
    Basic,
}

/// Parses a `WWW-Authenticate` header value.
pub fn parse_challenge(h: &str) -> Option<Challenge> {
    let (scheme, rest) = h.trim().split_once(' ').unwrap_or((h.trim(), ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut params = HashMap::new();
    let mut s = rest.trim();
    while !s.is_empty() {
        let Some((k, v)) = s.split_once('=') else { break };
        let k = k.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let v = v.trim_start();
        let (val, after) = if let Some(q) = v.strip_prefix('"') {
            let end = q.find('"').unwrap_or(q.len());
            (q[..end].to_string(), q.get(end + 1..).unwrap_or(""))
        } else {
            let end = v.find(',').unwrap_or(v.len());
            (v[..end].trim().to_string(), &v[end..])
        };
        params.insert(k, val);
        s = after.trim_start().trim_start_matches(',').trim_start();
    }
    Some(Challenge::Bearer {
        realm: params.remove("realm")?,
        service: params.remove("service"),
        scope: params.remove("scope"),
    })
}

/// Is `host[:port]` a loopback address (where plain HTTP is allowed)?
pub fn is_loopback(host: &str) -> bool {
    let h = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.split(':').next().unwrap_or("")
    };
    h == "localhost" || h == "::1" || h.parse::<std::net::Ipv4Addr>().is_ok_and(|ip| ip.is_loopback())
}

/// The key docker's config.json uses for a registry host.
fn normalize_auth_key(k: &str) -> String {
    let k = k.trim_start_matches("https://").trim_start_matches("http://");
    let host = k.split('/').next().unwrap_or(k);
    match host {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => "docker.io".to_string(),
        h => h.to_string(),
    }
}

fn decode_entry(e: &AuthEntry) -> Option<Credentials> {
    if let (Some(u), Some(p)) = (&e.username, &e.password) {
        return Some(Credentials { username: u.clone(), password: p.clone() });
    }
    let raw = base64::engine::general_purpose::STANDARD.decode(e.auth.as_ref()?.trim()).ok()?;
    let s = String::from_utf8(raw).ok()?;
    let (u, p) = s.split_once(':')?;
    Some(Credentials { username: u.to_string(), password: p.to_string() })
}

#[derive(Clone)]
struct CachedToken {
    token: String,
    expires: Instant,
}

/// The HTTP side of registry-svc, shared by every pull.
pub struct Upstream {
    http: reqwest::Client,
    /// For insecure registries' HTTPS attempt: no certificate verification.
    http_insecure: reqwest::Client,
    /// Hosts whose HTTPS attempt failed: plain HTTP from now on.
    plain_http: Mutex<std::collections::HashSet<String>>,
    config: UpstreamConfig,
    /// Tokens by (host, scope), reused until shortly before they expire.
    tokens: Mutex<HashMap<(String, String), CachedToken>>,
    /// Hosts that asked for basic auth.
    basic_hosts: Mutex<std::collections::HashSet<String>>,
    token_fetches: std::sync::atomic::AtomicUsize,
}

/// What a manifest GET returned.
#[derive(Clone, Debug)]
pub struct FetchedManifest {
    /// Body.
    pub bytes: Vec<u8>,
    /// Content-Type.
    pub media_type: String,
    /// The endpoint that answered.
    pub endpoint: Endpoint,
}

impl Upstream {
    /// A client for the given configuration.
    pub fn new(config: UpstreamConfig) -> Result<Self> {
        let build = |insecure: bool| -> Result<reqwest::Client> {
            let mut b = reqwest::Client::builder()
                .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
                .connect_timeout(Duration::from_secs(15))
                .read_timeout(Duration::from_secs(60))
                .pool_max_idle_per_host(16)
                .danger_accept_invalid_certs(insecure);
            for ca in &config.ca_certs {
                let pem = std::fs::read(ca)
                    .map_err(|e| RegistryError::Config(format!("reading CA certificate {}: {e}", ca.display())))?;
                let cert = reqwest::Certificate::from_pem(&pem)
                    .map_err(|e| RegistryError::Config(format!("CA certificate {}: {e}", ca.display())))?;
                b = b.add_root_certificate(cert);
            }
            b.build().map_err(|e| RegistryError::Config(format!("building the HTTP client: {e}")))
        };
        Ok(Self {
            http: build(false)?,
            http_insecure: build(true)?,
            plain_http: Mutex::default(),
            config,
            tokens: Mutex::default(),
            basic_hosts: Mutex::default(),
            token_fetches: Default::default(),
        })
    }

    fn client(&self, ep: &Endpoint) -> &reqwest::Client {
        if ep.insecure_tls {
            &self.http_insecure
        } else {
            &self.http
        }
    }

    /// Remembers that `ep` (an HTTPS attempt) failed, so its host is reached over plain HTTP.
    pub fn https_failed(&self, ep: &Endpoint) {
        if ep.insecure_tls {
            self.plain_http.lock().unwrap_or_else(|e| e.into_inner()).insert(ep.host.clone());
        }
    }

    /// How many tokens were fetched from token endpoints (for tests of token reuse).
    pub fn token_fetches(&self) -> usize {
        self.token_fetches.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Blobs fetched at once per pull.
    pub fn max_concurrent_downloads(&self) -> usize {
        self.config.max_concurrent_downloads
    }

    /// How large blobs are split into parallel Range requests.
    pub fn ranges(&self) -> crate::config::RangeConfig {
        self.config.ranges
    }

    /// Where to fetch `domain`'s content from: its mirrors, then itself.
    pub fn endpoints(&self, domain: &str) -> Vec<Endpoint> {
        let mut out: Vec<Endpoint> = self
            .config
            .mirrors
            .get(domain)
            .into_iter()
            .flatten()
            .map(|m| {
                let base = m.trim_end_matches('/').to_string();
                let base = if base.contains("://") { base } else { format!("https://{base}") };
                let host = base.split("://").nth(1).unwrap_or("").split('/').next().unwrap_or("").to_string();
                let insecure = is_loopback(&host) || self.config.insecure_registries.iter().any(|r| r == &host);
                Endpoint { base, host, mirror: true, insecure_tls: insecure }
            })
            .collect();
        let host = domain.to_string();
        if domain == "docker.io" {
            out.push(Endpoint {
                base: "https://registry-1.docker.io".into(),
                host,
                mirror: false,
                insecure_tls: false,
            });
        } else if is_loopback(domain) || self.config.insecure_registries.iter().any(|r| r == domain) {
            if !self.plain_http.lock().unwrap_or_else(|e| e.into_inner()).contains(domain) {
                out.push(Endpoint {
                    base: format!("https://{domain}"),
                    host: host.clone(),
                    mirror: false,
                    insecure_tls: true,
                });
            }
            out.push(Endpoint { base: format!("http://{domain}"), host, mirror: false, insecure_tls: false });
        } else {
            out.push(Endpoint { base: format!("https://{domain}"), host, mirror: false, insecure_tls: false });
        }
        out
    }

    /// Credentials for a host: berth's config first, then docker's config.json.
    pub fn credentials(&self, host: &str) -> Option<Credentials> {
        let host = normalize_auth_key(host);
        for (k, e) in &self.config.auths {
            if normalize_auth_key(k) == host {
                if let Some(c) = decode_entry(e) {
                    return Some(c);
                }
            }
        }
        let path = self.config.docker_config.clone().or_else(|| {
            let dir = std::env::var_os("DOCKER_CONFIG")
                .map(std::path::PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".docker")))?;
            Some(dir.join("config.json"))
        })?;
        let text = std::fs::read_to_string(path).ok()?;
        // docker's entries carry more fields than ours; read them loosely.
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        let auths = v.get("auths")?.as_object()?;
        for (k, e) in auths {
            if normalize_auth_key(k) == host {
                let entry = AuthEntry {
                    username: e.get("username").and_then(|x| x.as_str()).map(str::to_string),
                    password: e.get("password").and_then(|x| x.as_str()).map(str::to_string),
                    auth: e.get("auth").and_then(|x| x.as_str()).map(str::to_string),
                };
                if let Some(c) = decode_entry(&entry) {
                    return Some(c);
                }
            }
        }
        None
    }

    fn scope(repo: &str) -> String {
        format!("repository:{repo}:pull")
    }

    /// The Authorization header we already know to send, if any.
    fn known_auth(&self, ep: &Endpoint, repo: &str) -> Option<String> {
        let key = (ep.host.clone(), Self::scope(repo));
        if let Some(t) = self.tokens.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            if t.expires > Instant::now() {
                return Some(format!("Bearer {}", t.token));
            }
        }
        if self.basic_hosts.lock().unwrap_or_else(|e| e.into_inner()).contains(&ep.host) {
            let c = self.credentials(&ep.host)?;
            return Some(basic(&c));
        }
        None
    }

    /// Answers a 401 challenge: fetches a token (or decides on basic auth). Returns the header
    /// to retry with.
    async fn authorize(&self, ep: &Endpoint, repo: &str, reference: &Reference, challenge: &str) -> Result<String> {
        let unauthorized = |detail: String| RegistryError::Unauthorized {
            reference: reference.familiar(),
            registry: ep.base.clone(),
            detail,
        };
        let creds = self.credentials(&ep.host);
        match parse_challenge(challenge) {
            Some(Challenge::Basic) => {
                let c = creds.ok_or_else(|| {
                    unauthorized(format!(
                        "HTTP 401 with a basic-auth challenge and no credentials configured for {}; add them to registry-svc's config [auths] or ~/.docker/config.json",
                        ep.host
                    ))
                })?;
                self.basic_hosts.lock().unwrap_or_else(|e| e.into_inner()).insert(ep.host.clone());
                Ok(basic(&c))
            }
            Some(Challenge::Bearer { realm, service, .. }) => {
                let scope = Self::scope(repo);
                let mut req = self.client(ep).get(&realm).query(&[("scope", scope.as_str())]);
                if let Some(s) = &service {
                    req = req.query(&[("service", s.as_str())]);
                }
                if let Some(c) = &creds {
                    req = req.basic_auth(&c.username, Some(&c.password));
                }
                let resp = req.send().await.map_err(|e| RegistryError::Unreachable {
                    registry: realm.clone(),
                    detail: format!("token endpoint: {}", error_chain(&e)),
                })?;
                let status = resp.status();
                if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
                    return Err(unauthorized(format!(
                        "the token endpoint {realm} refused the {} (HTTP {})",
                        if creds.is_some() { "configured credentials" } else { "anonymous request" },
                        status.as_u16()
                    )));
                }
                if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
                    return Err(rate_limited(&realm, resp.headers()));
                }
                if !status.is_success() {
                    return Err(RegistryError::Upstream {
                        registry: realm,
                        status: status.as_u16(),
                        what: "a token".into(),
                        detail: excerpt(resp).await,
                    });
                }
                #[derive(serde::Deserialize)]
                struct TokenResponse {
                    token: Option<String>,
                    access_token: Option<String>,
                    expires_in: Option<u64>,
                }
                let t: TokenResponse = resp.json().await.map_err(|e| RegistryError::Upstream {
                    registry: realm.clone(),
                    status: status.as_u16(),
                    what: "a token".into(),
                    detail: format!("invalid token response: {e}"),
                })?;
                let token =
                    t.token.or(t.access_token).filter(|t| !t.is_empty()).ok_or_else(|| RegistryError::Upstream {
                        registry: realm.clone(),
                        status: status.as_u16(),
                        what: "a token".into(),
                        detail: "the token response has no token".into(),
                    })?;
                self.token_fetches.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                // Docker's default lifetime is 60 s; renew 10 s early.
                let life = Duration::from_secs(t.expires_in.unwrap_or(60).max(20) - 10);
                self.tokens.lock().unwrap_or_else(|e| e.into_inner()).insert(
                    (ep.host.clone(), scope),
                    CachedToken { token: token.clone(), expires: Instant::now() + life },
                );
                Ok(format!("Bearer {token}"))
            }
            None => Err(unauthorized(format!("HTTP 401 with an unsupported challenge {challenge:?}"))),
        }
    }

    /// Sends a GET with auth handled: known token/basic first; on a 401 answer the challenge
    /// once and retry. 401 after that and 429 become errors; other statuses are returned.
    pub async fn get(
        &self,
        ep: &Endpoint,
        repo: &str,
        reference: &Reference,
        url: &str,
        headers: &[(&str, String)],
    ) -> Result<reqwest::Response> {
        let mut auth = self.known_auth(ep, repo);
        for attempt in 0..2 {
            let mut req = self.client(ep).get(url);
            for (k, v) in headers {
                req = req.header(*k, v);
            }
            if let Some(a) = &auth {
                req = req.header(reqwest::header::AUTHORIZATION, a);
            }
            let resp = req
                .send()
                .await
                .map_err(|e| RegistryError::Unreachable { registry: ep.base.clone(), detail: error_chain(&e) })?;
            match resp.status() {
                reqwest::StatusCode::UNAUTHORIZED if attempt == 0 => {
                    let challenge = resp
                        .headers()
                        .get(reqwest::header::WWW_AUTHENTICATE)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    auth = Some(self.authorize(ep, repo, reference, &challenge).await?);
                }
                reqwest::StatusCode::UNAUTHORIZED | reqwest::StatusCode::FORBIDDEN => {
                    let has = self.credentials(&ep.host).is_some();
                    let body = excerpt(resp).await;
                    return Err(RegistryError::Unauthorized {
                        reference: reference.familiar(),
                        registry: ep.base.clone(),
                        detail: if has {
                            format!("the registry refused the configured credentials: {body}")
                        } else {
                            format!("no credentials are configured for {} (registry-svc config [auths] or ~/.docker/config.json): {body}", ep.host)
                        },
                    });
                }
                reqwest::StatusCode::TOO_MANY_REQUESTS => return Err(rate_limited(&ep.base, resp.headers())),
                _ => return Ok(resp),
            }
        }
        unreachable!("the loop returns on its second attempt")
    }

    /// GETs a manifest or index by tag or digest (at most `limit` bytes).
    pub async fn manifest(
        &self,
        ep: &Endpoint,
        reference: &Reference,
        object: &str,
        limit: usize,
    ) -> Result<FetchedManifest> {
        let url = format!("{}/v2/{}/manifests/{}", ep.base, reference.path(), object);
        let resp = self.get(ep, reference.path(), reference, &url, &[("Accept", MANIFEST_ACCEPT.to_string())]).await?;
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Err(RegistryError::ManifestNotFound {
                reference: format!("{}:{object}", reference.familiar_name()).replace(":sha256:", "@sha256:"),
                registry: ep.base.clone(),
            });
        }
        if !status.is_success() {
            return Err(RegistryError::Upstream {
                registry: ep.base.clone(),
                status: status.as_u16(),
                what: format!("manifest {object}"),
                detail: excerpt(resp).await,
            });
        }
        let media_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_string();
        let bytes = read_limited(resp, limit).await.map_err(|why| RegistryError::BadContent {
            what: "manifest",
            digest: object.to_string(),
            registry: ep.base.clone(),
            why,
        })?;
        let media_type =
            if [MT_OCI_MANIFEST, MT_OCI_INDEX, MT_DOCKER_MANIFEST, MT_DOCKER_LIST].contains(&media_type.as_str()) {
                media_type
            } else {
                String::new()
            };
        Ok(FetchedManifest { bytes, media_type, endpoint: ep.clone() })
    }

    /// GETs a blob, from `start` on (a Range request when `start` > 0). Returns the response
    /// (200 or 206) for streaming; a 404 becomes `Ok(None)`.
    pub async fn blob(
        &self,
        ep: &Endpoint,
        reference: &Reference,
        digest: &str,
        start: u64,
    ) -> Result<Option<reqwest::Response>> {
        self.blob_range(ep, reference, digest, start, None).await
    }

    /// GETs bytes `start..=end` of a blob (`end` `None`: to the end; no Range header for the
    /// whole blob). The server may answer 206 or ignore the Range and send 200 with everything;
    /// the caller checks. A 404 becomes `Ok(None)`.
    pub async fn blob_range(
        &self,
        ep: &Endpoint,
        reference: &Reference,
        digest: &str,
        start: u64,
        end: Option<u64>,
    ) -> Result<Option<reqwest::Response>> {
        let url = format!("{}/v2/{}/blobs/{}", ep.base, reference.path(), digest);
        let headers: Vec<(&str, String)> = match end {
            Some(end) => vec![("Range", format!("bytes={start}-{end}"))],
            None if start > 0 => vec![("Range", format!("bytes={start}-"))],
            None => vec![],
        };
        let resp = self.get(ep, reference.path(), reference, &url, &headers).await?;
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !(status == reqwest::StatusCode::OK || status == reqwest::StatusCode::PARTIAL_CONTENT) {
            return Err(RegistryError::Upstream {
                registry: ep.base.clone(),
                status: status.as_u16(),
                what: format!("blob {digest}"),
                detail: excerpt(resp).await,
            });
        }
        Ok(Some(resp))
    }
}

fn basic(c: &Credentials) -> String {
    let raw = format!("{}:{}", c.username, c.password);
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(raw))
}

fn rate_limited(registry: &str, h: &reqwest::header::HeaderMap) -> RegistryError {
    let get = |k: &str| h.get(k).and_then(|v| v.to_str().ok()).map(str::to_string);
    let remaining = match (get("ratelimit-remaining"), get("ratelimit-limit")) {
        (Some(r), Some(l)) => format!(", ratelimit-remaining: {r} of {l}"),
        (Some(r), None) => format!(", ratelimit-remaining: {r}"),
        _ => String::new(),
    };
    let retry = get("retry-after").map(|r| format!(", retry after {r} s")).unwrap_or_default();
    RegistryError::RateLimited { registry: registry.to_string(), remaining, retry }
}

/// The first few hundred bytes of an error body, on one line.
async fn excerpt(resp: reqwest::Response) -> String {
    let text = resp.text().await.unwrap_or_default();
    let mut t: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if t.len() > 300 {
        let mut end = 300;
        while !t.is_char_boundary(end) {
            end -= 1;
        }
        t.truncate(end);
        t.push('…');
    }
    if t.is_empty() {
        "(empty body)".into()
    } else {
        t
    }
}

/// Reads a body, refusing more than `limit` bytes.
pub async fn read_limited(mut resp: reqwest::Response, limit: usize) -> std::result::Result<Vec<u8>, String> {
    if let Some(len) = resp.content_length() {
        if len as usize > limit {
            return Err(format!("it is {len} bytes, more than the {limit} allowed"));
        }
    }
    let mut buf = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(c)) => {
                if buf.len() + c.len() > limit {
                    return Err(format!("it is more than the {limit} bytes allowed"));
                }
                buf.extend_from_slice(&c);
            }
            Ok(None) => return Ok(buf),
            Err(e) => return Err(format!("the connection broke while reading it: {}", error_chain(&e))),
        }
    }
}

/// The first byte position of a 206 response's `Content-Range` (`None` when absent or not a 206).
pub fn content_range_start(resp: &reqwest::Response) -> Option<u64> {
    if resp.status() != reqwest::StatusCode::PARTIAL_CONTENT {
        return None;
    }
    resp.headers()
        .get(reqwest::header::CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().strip_prefix("bytes "))
        .and_then(|v| v.split('-').next())
        .and_then(|v| v.trim().parse::<u64>().ok())
}

/// An error with its causes, on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_challenges() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
        );
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/busybox:pull".into()),
            })
        );
        assert_eq!(parse_challenge(r#"Basic realm="x""#), Some(Challenge::Basic));
        assert_eq!(parse_challenge("Negotiate"), None);
    }

    #[test]
    fn loopback_and_endpoints() {
        assert!(is_loopback("127.0.0.1:5000"));
        assert!(is_loopback("localhost:5000"));
        assert!(is_loopback("[::1]:5000"));
        assert!(!is_loopback("registry.lan:5000"));
        let mut cfg = UpstreamConfig { max_concurrent_downloads: 4, ..Default::default() };
        cfg.mirrors.insert("docker.io".into(), vec!["http://127.0.0.1:9".into()]);
        cfg.insecure_registries.push("lan:5000".into());
        let u = Upstream::new(cfg).unwrap();
        let eps = u.endpoints("docker.io");
        assert_eq!(eps.len(), 2);
        assert!(eps[0].mirror && eps[0].base == "http://127.0.0.1:9");
        assert_eq!(eps[1].base, "https://registry-1.docker.io");
        assert_eq!(u.endpoints("lan:5000")[0].base, "https://lan:5000");
        assert!(u.endpoints("lan:5000")[0].insecure_tls);
        assert_eq!(u.endpoints("lan:5000")[1].base, "http://lan:5000");
        u.https_failed(&u.endpoints("lan:5000")[0]);
        assert_eq!(u.endpoints("lan:5000")[0].base, "http://lan:5000");
        assert_eq!(u.endpoints("ghcr.io")[0].base, "https://ghcr.io");
    }

    #[test]
    fn credentials_from_docker_config() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.json");
        let auth = base64::engine::general_purpose::STANDARD.encode("me:secret");
        std::fs::write(
            &p,
            format!(
                r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{auth}"}},"lan:5000":{{"auth":"{auth}"}}}}}}"#
            ),
        )
        .unwrap();
        let cfg = UpstreamConfig { docker_config: Some(p), max_concurrent_downloads: 1, ..Default::default() };
        let u = Upstream::new(cfg).unwrap();
        assert_eq!(u.credentials("docker.io").unwrap().username, "me");
        assert_eq!(u.credentials("lan:5000").unwrap().password, "secret");
        assert!(u.credentials("other").is_none());
    }
}
