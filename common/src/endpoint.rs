//! Where a service listens and how a client reaches it.
//!
//! Spelling (as in `docker context`): `unix:///run/berth/store.sock` (or a bare absolute path),
//! `http://host:port` (plain TCP: only for loopback unless explicitly allowed) and
//! `https://host:port` (TCP with TLS; mutual TLS when the client has a certificate).

use anyhow::{bail, Context, Result};
use hyper_util::rt::TokioIo;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity, Uri};

/// A service address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// A unix socket path.
    Unix(PathBuf),
    /// TCP `host:port`; `tls` selects https.
    Tcp {
        /// `host:port` (IPv6 hosts in brackets).
        authority: String,
        /// Whether to speak TLS.
        tls: bool,
    },
}

impl Endpoint {
    /// A unix socket endpoint.
    pub fn unix(path: impl Into<PathBuf>) -> Self {
        Self::Unix(path.into())
    }

    /// True for unix sockets and for TCP addresses on loopback.
    pub fn is_local(&self) -> bool {
        match self {
            Self::Unix(_) => true,
            Self::Tcp { authority, .. } => {
                let host = host_of(authority);
                host == "localhost" || host.parse::<std::net::IpAddr>().map(|ip| ip.is_loopback()).unwrap_or(false)
            }
        }
    }

    /// The socket path of a unix endpoint.
    pub fn unix_path(&self) -> Option<&Path> {
        match self {
            Self::Unix(p) => Some(p),
            Self::Tcp { .. } => None,
        }
    }
}

fn host_of(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    authority.rsplit_once(':').map(|(h, _)| h).unwrap_or(authority)
}

impl FromStr for Endpoint {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        if let Some(p) = s.strip_prefix("unix://") {
            if p.is_empty() {
                bail!("invalid endpoint {s:?}: unix:// needs a socket path");
            }
            return Ok(Self::Unix(PathBuf::from(p)));
        }
        if s.starts_with('/') {
            return Ok(Self::Unix(PathBuf::from(s)));
        }
        let (tls, rest) = if let Some(r) = s.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = s.strip_prefix("http://") {
            (false, r)
        } else if let Some(r) = s.strip_prefix("tcp://") {
            (false, r)
        } else {
            bail!("invalid endpoint {s:?}: expected unix:///path, http://host:port or https://host:port");
        };
        let authority = rest.trim_end_matches('/');
        let ok = authority.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
        if !ok {
            bail!("invalid endpoint {s:?}: expected host:port after the scheme");
        }
        Ok(Self::Tcp { authority: authority.to_string(), tls })
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unix(p) => write!(f, "unix://{}", p.display()),
            Self::Tcp { authority, tls: true } => write!(f, "https://{authority}"),
            Self::Tcp { authority, tls: false } => write!(f, "http://{authority}"),
        }
    }
}

/// Client-side TLS material for reaching a service over https (also the `store_tls` table of the
/// services' config files).
#[derive(Clone, Debug, Default, serde::Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClientTls {
    /// PEM CA bundle that signed the server's certificate.
    pub ca: Option<PathBuf>,
    /// PEM client certificate, for mutual TLS.
    pub cert: Option<PathBuf>,
    /// PEM client key, for mutual TLS.
    pub key: Option<PathBuf>,
    /// Server name to verify, when it differs from the endpoint's host.
    pub domain: Option<String>,
}

/// Opens a gRPC channel to `ep`, connecting now so that an unreachable service is reported here.
pub async fn connect(ep: &Endpoint, tls: Option<&ClientTls>) -> Result<Channel> {
    let builder = channel_builder(ep, tls)?;
    match ep {
        Endpoint::Unix(path) => {
            let path = path.clone();
            builder
                .connect_with_connector(tower::service_fn(move |_: Uri| {
                    let path = path.clone();
                    async move { Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?)) }
                }))
                .await
                .with_context(|| format!("cannot connect to {ep}"))
        }
        Endpoint::Tcp { .. } => builder.connect().await.with_context(|| format!("cannot connect to {ep}")),
    }
}

/// Like [`connect`], but connects on first use (and reconnects after failures).
pub fn connect_lazy(ep: &Endpoint, tls: Option<&ClientTls>) -> Result<Channel> {
    let builder = channel_builder(ep, tls)?;
    Ok(match ep {
        Endpoint::Unix(path) => {
            let path = path.clone();
            builder.connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move { Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?)) }
            }))
        }
        Endpoint::Tcp { .. } => builder.connect_lazy(),
    })
}

fn channel_builder(ep: &Endpoint, tls: Option<&ClientTls>) -> Result<tonic::transport::Endpoint> {
    let uri = match ep {
        // The authority is ignored for unix sockets; tonic needs a syntactically valid URI.
        Endpoint::Unix(_) => "http://localhost".to_string(),
        Endpoint::Tcp { authority, tls: true } => format!("https://{authority}"),
        Endpoint::Tcp { authority, tls: false } => format!("http://{authority}"),
    };
    let mut b = tonic::transport::Endpoint::from_shared(uri)?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        // Fixed large windows instead of hyper's adaptive ones (which start at 64 KiB and grow
        // only after BDP pings): a blob stream of 1 MiB messages never waits for WINDOW_UPDATEs.
        .http2_adaptive_window(false)
        .initial_stream_window_size(crate::server::HTTP2_STREAM_WINDOW)
        .initial_connection_window_size(crate::server::HTTP2_CONNECTION_WINDOW);
    if let Endpoint::Tcp { authority, tls: true } = ep {
        let mut cfg = ClientTlsConfig::new().with_enabled_roots();
        let t = tls.cloned().unwrap_or_default();
        if let Some(ca) = &t.ca {
            let pem = std::fs::read(ca).with_context(|| format!("reading CA bundle {}", ca.display()))?;
            cfg = cfg.ca_certificate(Certificate::from_pem(pem));
        }
        match (&t.cert, &t.key) {
            (Some(c), Some(k)) => {
                let cert = std::fs::read(c).with_context(|| format!("reading client certificate {}", c.display()))?;
                let key = std::fs::read(k).with_context(|| format!("reading client key {}", k.display()))?;
                cfg = cfg.identity(Identity::from_pem(cert, key));
            }
            (None, None) => {}
            _ => bail!("a client certificate needs both cert and key"),
        }
        cfg = cfg.domain_name(t.domain.clone().unwrap_or_else(|| host_of(authority).to_string()));
        b = b.tls_config(cfg)?;
    }
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_spellings() {
        assert_eq!("unix:///run/x.sock".parse::<Endpoint>().unwrap(), Endpoint::unix("/run/x.sock"));
        assert_eq!("/run/x.sock".parse::<Endpoint>().unwrap(), Endpoint::unix("/run/x.sock"));
        let t: Endpoint = "https://store.example:7443".parse().unwrap();
        assert_eq!(t, Endpoint::Tcp { authority: "store.example:7443".into(), tls: true });
        assert!(!t.is_local());
        assert!("http://127.0.0.1:1".parse::<Endpoint>().unwrap().is_local());
        assert!("http://[::1]:1".parse::<Endpoint>().unwrap().is_local());
        assert!("ftp://x:1".parse::<Endpoint>().is_err());
        assert!("http://x".parse::<Endpoint>().is_err());
        assert!("unix://".parse::<Endpoint>().is_err());
        assert_eq!(t.to_string(), "https://store.example:7443");
    }
}
