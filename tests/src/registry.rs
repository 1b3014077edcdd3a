//! A real upstream registry for tests and benchmarks: the CNCF distribution registry
//! (`docker-registry serve CONFIG.yml`, Debian's package) on a free loopback port with its own
//! config and storage in a temp dir, filled with fixtures through skopeo (an independent client).
//!
//! ```ignore
//! use berth_tests::{fixtures::Fixture, registry::Registry};
//! let reg = Registry::start()?;                                   // no auth
//! let r = reg.push_fixture(Fixture::Busybox, "busybox:latest")?;  // "127.0.0.1:PORT/busybox:latest"
//! let basic = Registry::start_with(Auth::Htpasswd { user: "u".into(), password: "p".into() })?;
//! let token = Registry::start_with(Auth::Token { user: "u".into(), password: "p".into() })?;
//! ```
//!
//! Also here: [`MiniHttp`], a tiny HTTP/1.1 server for hostile upstreams, and the token issuer
//! that `Auth::Token` runs (RS256 JWTs signed with a throwaway key whose certificate is the
//! registry's `rootcertbundle`).
//!
//! Processes are killed by PID when the [`Registry`] is dropped.

use crate::fixtures::{self, Fixture};
use anyhow::{bail, Context, Result};
use base64::Engine as _;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How the registry authenticates clients.
#[derive(Clone, Debug, Default)]
pub enum Auth {
    /// Anyone may pull and push.
    #[default]
    None,
    /// HTTP basic auth against an htpasswd file (bcrypt).
    Htpasswd {
        /// User name.
        user: String,
        /// Password.
        password: String,
    },
    /// Bearer tokens from an issuer the harness runs; the issuer wants basic credentials.
    Token {
        /// User name.
        user: String,
        /// Password.
        password: String,
    },
}

/// A running distribution registry.
pub struct Registry {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
    auth: Auth,
    /// The token issuer, kept alive as long as the registry.
    _token: Option<MiniHttp>,
    token_requests: Arc<AtomicUsize>,
}

impl Registry {
    /// Starts a registry without authentication.
    pub fn start() -> Result<Self> {
        Self::start_with(Auth::None)
    }

    /// Starts a registry with the given authentication.
    pub fn start_with(auth: Auth) -> Result<Self> {
        Self::start_opts(auth, false)
    }

    /// Starts a registry serving HTTPS with a self-signed certificate for 127.0.0.1.
    pub fn start_tls() -> Result<Self> {
        Self::start_opts(Auth::None, true)
    }

    /// Starts a registry with the given authentication, over HTTPS when `tls`.
    pub fn start_opts(auth: Auth, tls: bool) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("berth-registry").tempdir()?;
        let port = crate::stack::free_port();
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data)?;
        let mut auth_yaml = String::new();
        let token_requests = Arc::new(AtomicUsize::new(0));
        let mut token = None;
        match &auth {
            Auth::None => {}
            Auth::Htpasswd { user, password } => {
                let hash = bcrypt::hash(password, 5)?;
                let file = dir.path().join("htpasswd");
                std::fs::write(&file, format!("{user}:{hash}\n"))?;
                auth_yaml = format!("auth:\n  htpasswd:\n    realm: berth-test\n    path: {}\n", file.display());
            }
            Auth::Token { user, password } => {
                let issuer = TokenIssuer::new(dir.path(), user, password, token_requests.clone())?;
                let bundle = issuer.cert_pem.clone();
                let server = MiniHttp::start(move |req| issuer.handle(req))?;
                auth_yaml = format!(
                    "auth:\n  token:\n    realm: http://{}/token\n    service: berth-registry\n    issuer: berth-test-issuer\n    rootcertbundle: {}\n",
                    server.addr(),
                    bundle.display()
                );
                token = Some(server);
            }
        }
        let mut tls_yaml = String::new();
        if tls {
            let (k, c) = (dir.path().join("tls.key"), dir.path().join("tls.crt"));
            let out = Command::new("openssl")
                .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1"])
                .args(["-addext", "subjectAltName=IP:127.0.0.1"])
                .arg("-keyout")
                .arg(&k)
                .arg("-out")
                .arg(&c)
                .output()
                .context("running openssl")?;
            if !out.status.success() {
                bail!("openssl: {}", String::from_utf8_lossy(&out.stderr));
            }
            tls_yaml = format!("  tls:\n    certificate: {}\n    key: {}\n", c.display(), k.display());
        }
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n  maintenance:\n    uploadpurging:\n      enabled: false\nhttp:\n  addr: 127.0.0.1:{port}\n{tls_yaml}{auth_yaml}",
            data.display()
        );
        let cfg = dir.path().join("config.yml");
        std::fs::write(&cfg, config)?;
        let log = std::fs::File::create(dir.path().join("registry.log"))?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting docker-registry (apt-get install docker-registry)")?;
        let mut reg = Self { child, dir, port, auth, _token: token, token_requests };
        reg.wait_up()?;
        Ok(reg)
    }

    fn wait_up(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(st) = self.child.try_wait()? {
                bail!("docker-registry exited with {st}: {}", self.log());
            }
            // Any HTTP answer means it is up (a TLS registry answers plain HTTP with 400).
            if http_status(&self.addr(), "/v2/").is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("docker-registry did not come up on {}: {}", self.addr(), self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The registry's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// How many tokens the issuer handed out (token auth only).
    pub fn token_requests(&self) -> usize {
        self.token_requests.load(Ordering::SeqCst)
    }

    /// Where the registry keeps its data.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Builds (once per process) and pushes a fixture as `name` (`repo[:tag]`, tag defaults to
    /// latest); returns the full reference `127.0.0.1:PORT/repo:tag`. Multi-arch fixtures are
    /// pushed whole (`--all`).
    pub fn push_fixture(&self, f: Fixture, name: &str) -> Result<String> {
        let built = fixtures::cached(f)?;
        self.push_layout(&built.dir, name)
    }

    /// Pushes the `latest` tag of an OCI layout directory as `name`; returns the full reference.
    pub fn push_layout(&self, layout: &Path, name: &str) -> Result<String> {
        let name = if name.rsplit('/').next().unwrap_or(name).contains(':') {
            name.to_string()
        } else {
            format!("{name}:latest")
        };
        let dest = format!("{}/{name}", self.addr());
        let mut cmd = Command::new("skopeo");
        cmd.args(["--insecure-policy", "copy", "--all", "--preserve-digests", "--dest-tls-verify=false", "-q"]);
        match &self.auth {
            Auth::None => {}
            Auth::Htpasswd { user, password } | Auth::Token { user, password } => {
                cmd.arg("--dest-creds").arg(format!("{user}:{password}"));
            }
        }
        cmd.arg(format!("oci:{}:{}", layout.display(), fixtures::TAG)).arg(format!("docker://{dest}"));
        let out = cmd.output().context("running skopeo (apt-get install skopeo)")?;
        if !out.status.success() {
            bail!(
                "skopeo copy to {dest} failed: {}\nregistry log: {}",
                String::from_utf8_lossy(&out.stderr),
                self.log()
            );
        }
        Ok(dest)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP GET on a fresh connection; returns the status code.
pub fn http_status(addr: &str, path: &str) -> Result<u16> {
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf)?;
    let line = String::from_utf8_lossy(&buf[..n]);
    let code = line.split_whitespace().nth(1).context("no status")?;
    Ok(code.parse()?)
}

// ---- a tiny HTTP/1.1 server ----

/// A parsed request.
#[derive(Clone, Debug)]
pub struct Request {
    /// GET, HEAD, ...
    pub method: String,
    /// Path with query.
    pub target: String,
    /// Headers, names lower-cased.
    pub headers: Vec<(String, String)>,
}

impl Request {
    /// The first header of that (lower-case) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The path without the query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    /// A query parameter (not percent-decoded beyond `%3A` and `%2F`).
    pub fn query(&self, key: &str) -> Option<String> {
        let q = self.target.split_once('?')?.1;
        q.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k == key).then(|| v.replace("%3A", ":").replace("%3a", ":").replace("%2F", "/").replace("%2f", "/"))
        })
    }

    /// `Range: bytes=N-` start, if any.
    pub fn range_start(&self) -> Option<u64> {
        self.header("range")?.strip_prefix("bytes=")?.split('-').next()?.parse().ok()
    }

    /// `Range: bytes=N-[M]` as (N, M), if any.
    pub fn range(&self) -> Option<(u64, Option<u64>)> {
        let (a, b) = self.header("range")?.strip_prefix("bytes=")?.split_once('-')?;
        Some((a.trim().parse().ok()?, b.trim().parse().ok()))
    }
}

/// What to answer.
#[derive(Clone, Debug)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
    /// Announce this Content-Length instead of the body's (to simulate a truncated body: the
    /// connection closes early).
    pub content_length: Option<u64>,
}

impl Response {
    /// A response with a body.
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Self { status, headers: Vec::new(), body: body.into(), content_length: None }
    }

    /// Adds a header.
    pub fn header(mut self, k: &str, v: impl Into<String>) -> Self {
        self.headers.push((k.to_string(), v.into()));
        self
    }
}

/// A tiny HTTP/1.1 server on 127.0.0.1:0 running `handler` on each request (one request per
/// connection, `Connection: close`). Stops when dropped.
pub struct MiniHttp {
    addr: std::net::SocketAddr,
    stop: Arc<std::sync::atomic::AtomicBool>,
    requests: Arc<std::sync::Mutex<Vec<Request>>>,
}

impl MiniHttp {
    /// Starts serving on a free loopback port.
    pub fn start(handler: impl Fn(&Request) -> Response + Send + Sync + 'static) -> Result<Self> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let requests: Arc<std::sync::Mutex<Vec<Request>>> = Default::default();
        let handler = Arc::new(handler);
        let (st, rq) = (stop.clone(), requests.clone());
        std::thread::spawn(move || {
            while !st.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let h = handler.clone();
                        let rq = rq.clone();
                        std::thread::spawn(move || {
                            let _ = serve_conn(conn, &*h, &rq);
                        });
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(_) => break,
                }
            }
        });
        Ok(Self { addr, stop, requests })
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// Every request seen so far.
    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for MiniHttp {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn serve_conn(
    mut conn: std::net::TcpStream,
    handler: &(dyn Fn(&Request) -> Response + Send + Sync),
    log: &std::sync::Mutex<Vec<Request>>,
) -> Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        if buf.is_empty() && chunk[0] == 0x16 {
            // A TLS ClientHello: answer as a plain HTTP server does.
            conn.write_all(b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n")?;
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > 64 * 1024 {
            bail!("request head too large");
        }
    }
    let head = String::from_utf8_lossy(&buf);
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split_whitespace();
    let method = first.next().unwrap_or("").to_string();
    let target = first.next().unwrap_or("").to_string();
    let headers = lines
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let req = Request { method, target, headers };
    log.lock().unwrap_or_else(|e| e.into_inner()).push(req.clone());
    let resp = handler(&req);
    let len = resp.content_length.unwrap_or(resp.body.len() as u64);
    let mut out = format!("HTTP/1.1 {} X\r\nContent-Length: {len}\r\nConnection: close\r\n", resp.status);
    for (k, v) in &resp.headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    conn.write_all(out.as_bytes())?;
    if req.method != "HEAD" {
        conn.write_all(&resp.body)?;
    }
    conn.flush()?;
    let _ = conn.shutdown(std::net::Shutdown::Both);
    Ok(())
}

// ---- token issuer ----

struct TokenIssuer {
    key: ring::signature::RsaKeyPair,
    cert_der: Vec<u8>,
    cert_pem: PathBuf,
    user: String,
    password: String,
    count: Arc<AtomicUsize>,
}

impl TokenIssuer {
    fn new(dir: &Path, user: &str, password: &str, count: Arc<AtomicUsize>) -> Result<Self> {
        let key_pem = dir.join("token-key.pem");
        let cert_pem = dir.join("token-cert.pem");
        let run = |args: &[&str]| -> Result<()> {
            let out = Command::new("openssl").args(args).output().context("running openssl")?;
            if !out.status.success() {
                bail!("openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
            }
            Ok(())
        };
        let (k, c) = (key_pem.to_string_lossy().to_string(), cert_pem.to_string_lossy().to_string());
        run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &k,
            "-out",
            &c,
            "-days",
            "2",
            "-subj",
            "/CN=berth-token-issuer",
        ])?;
        let der = dir.join("token-key.der");
        let cder = dir.join("token-cert.der");
        run(&["pkcs8", "-topk8", "-nocrypt", "-in", &k, "-outform", "DER", "-out", &der.to_string_lossy()])?;
        run(&["x509", "-in", &c, "-outform", "DER", "-out", &cder.to_string_lossy()])?;
        let key = ring::signature::RsaKeyPair::from_pkcs8(&std::fs::read(&der)?)
            .map_err(|e| anyhow::anyhow!("loading token key: {e}"))?;
        Ok(Self { key, cert_der: std::fs::read(&cder)?, cert_pem, user: user.into(), password: password.into(), count })
    }

    fn handle(&self, req: &Request) -> Response {
        if req.path() != "/token" {
            return Response::new(404, "not found");
        }
        let b64 = base64::engine::general_purpose::STANDARD;
        let authed = req
            .header("authorization")
            .and_then(|h| h.strip_prefix("Basic "))
            .and_then(|c| b64.decode(c).ok())
            .map(|c| c == format!("{}:{}", self.user, self.password).into_bytes());
        if authed == Some(false) {
            return Response::new(401, r#"{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}"#);
        }
        // Anonymous users get a token without access (the registry then answers 401 / denied).
        let mut access = Vec::new();
        if authed == Some(true) {
            for scope in req
                .target
                .split('&')
                .filter_map(|kv| kv.strip_prefix("scope=").or_else(|| kv.split_once("?scope=").map(|x| x.1)))
            {
                let scope = scope.replace("%3A", ":").replace("%2F", "/").replace("%2C", ",");
                let parts: Vec<&str> = scope.split(':').collect();
                if parts.len() == 3 {
                    access.push(serde_json::json!({"type": parts[0], "name": parts[1], "actions": parts[2].split(',').collect::<Vec<_>>()}));
                }
            }
        }
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
        let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [b64.encode(&self.cert_der)]});
        let claims = serde_json::json!({
            "iss": "berth-test-issuer", "sub": if authed == Some(true) { self.user.as_str() } else { "" },
            "aud": req.query("service").unwrap_or_default(), "exp": now + 300, "nbf": now - 10, "iat": now,
            "jti": format!("{now}-{}", self.count.load(Ordering::SeqCst)), "access": access
        });
        let url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let signing_input = format!("{}.{}", url.encode(header.to_string()), url.encode(claims.to_string()));
        let mut sig = vec![0u8; self.key.public().modulus_len()];
        if self
            .key
            .sign(
                &ring::signature::RSA_PKCS1_SHA256,
                &ring::rand::SystemRandom::new(),
                signing_input.as_bytes(),
                &mut sig,
            )
            .is_err()
        {
            return Response::new(500, "signing failed");
        }
        let token = format!("{signing_input}.{}", url.encode(sig));
        self.count.fetch_add(1, Ordering::SeqCst);
        let body = serde_json::json!({"token": token, "access_token": token, "expires_in": 300, "issued_at": "2026-11-22T00:00:00Z"});
        Response::new(200, body.to_string()).header("Content-Type", "application/json")
    }
}

// ---- store-svc + registry-svc for pull tests ----

/// store-svc and registry-svc started together (registry-svc pointed at the store), with
/// helpers to pull and to look at what the store holds.
pub struct PullStack {
    /// store-svc.
    pub store: crate::stack::Service,
    /// registry-svc.
    pub registry: crate::stack::Service,
}

/// What a pull streamed.
#[derive(Debug, Default)]
pub struct PullOutcome {
    /// Every event, in order.
    pub events: Vec<berth_proto::registry::v1::PullEvent>,
    /// The final event, when the pull succeeded.
    pub done: Option<berth_proto::registry::v1::PullDone>,
}

impl PullOutcome {
    /// Layer digests reported in `state`.
    pub fn blobs_in(&self, state: berth_proto::registry::v1::BlobState) -> Vec<String> {
        use berth_proto::registry::v1::pull_event::Event;
        let mut v: Vec<String> = self
            .events
            .iter()
            .filter_map(|e| match &e.event {
                Some(Event::Blob(b)) if b.state == state as i32 => Some(b.digest.clone()),
                _ => None,
            })
            .collect();
        v.dedup();
        v
    }
}

impl PullStack {
    /// Starts both services; `config` is registry-svc's TOML config (may be empty).
    pub async fn start(config: &str) -> Self {
        let store = crate::stack::Service::start("store-svc").await;
        let cfg = store.dir().join("registry-svc.toml");
        std::fs::write(&cfg, config).expect("writing registry-svc config");
        let registry = crate::stack::Service::builder("registry-svc")
            .arg("--store")
            .arg(store.endpoint().to_string())
            .arg("--config")
            .arg(cfg.to_string_lossy().to_string())
            .env("HOME", store.dir().to_string_lossy().to_string())
            .start()
            .await;
        Self { store, registry }
    }

    /// Pulls through registry-svc's gRPC API.
    pub async fn pull(&self, reference: &str, platform: Option<&str>) -> Result<PullOutcome, tonic::Status> {
        use berth_proto::registry::v1 as pb;
        let mut c = pb::registry_client::RegistryClient::new(self.registry.channel().await);
        let platform = platform.map(|p| {
            let parts: Vec<&str> = p.split('/').collect();
            berth_proto::types::v1::Platform {
                os: parts.first().unwrap_or(&"").to_string(),
                architecture: parts.get(1).unwrap_or(&"").to_string(),
                variant: parts.get(2).unwrap_or(&"").to_string(),
                os_version: String::new(),
            }
        });
        let mut stream = c.pull(pb::PullRequest { reference: reference.to_string(), platform }).await?.into_inner();
        let mut out = PullOutcome::default();
        while let Some(ev) = stream.message().await? {
            if let Some(pb::pull_event::Event::Done(d)) = &ev.event {
                out.done = Some(d.clone());
            }
            out.events.push(ev);
        }
        Ok(out)
    }

    /// Names of the image records in the store.
    pub async fn image_names(&self) -> Vec<String> {
        use berth_proto::store::v1 as spb;
        let mut c = spb::images_client::ImagesClient::new(self.store.channel().await);
        let l = c.list(spb::ListImagesRequest { prefix: String::new() }).await.expect("Images.List").into_inner();
        l.images.into_iter().map(|i| i.name).collect()
    }

    /// Digests of the committed blobs in the store.
    pub async fn blob_digests(&self) -> Vec<String> {
        use berth_proto::store::v1 as spb;
        let mut c = spb::content_client::ContentClient::new(self.store.channel().await);
        let mut s = c.list(spb::ListRequest {}).await.expect("Content.List").into_inner();
        let mut out = Vec::new();
        while let Some(m) = s.message().await.expect("Content.List stream") {
            out.extend(m.blobs.into_iter().map(|b| b.digest));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pushes_fixtures_with_and_without_auth() {
        let reg = Registry::start().unwrap();
        for (f, n) in [(Fixture::Busybox, "busybox"), (Fixture::MultiArch, "multi:v1"), (Fixture::Zstd, "z")] {
            let r = reg.push_fixture(f, n).unwrap();
            assert!(r.starts_with(&reg.addr()), "{r}");
        }
        assert_eq!(http_status(&reg.addr(), "/v2/busybox/tags/list").unwrap(), 200);
        let basic = Registry::start_with(Auth::Htpasswd { user: "u".into(), password: "p".into() }).unwrap();
        assert_eq!(http_status(&basic.addr(), "/v2/").unwrap(), 401);
        basic.push_fixture(Fixture::Busybox, "busybox").unwrap();
        let token = Registry::start_with(Auth::Token { user: "u".into(), password: "p".into() }).unwrap();
        token.push_fixture(Fixture::Busybox, "busybox").unwrap();
        assert!(token.token_requests() > 0);
    }
}
