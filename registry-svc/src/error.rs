//! What can go wrong in registry-svc, with messages a user can act on. `grpc` maps each variant
//! to a status code in one place.

/// A registry-svc failure. Cloneable so that a blob fetched once for several concurrent pulls
/// can report the same failure to each of them.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RegistryError {
    /// The reference does not parse.
    #[error("{0}")]
    InvalidReference(String),
    /// The platform does not parse.
    #[error("{0}")]
    InvalidPlatform(String),
    /// The registry has no manifest for the tag or digest.
    #[error("manifest for {reference} not found: manifest unknown ({registry} answered 404)")]
    ManifestNotFound {
        /// The reference asked for.
        reference: String,
        /// The registry endpoint.
        registry: String,
    },
    /// The registry lacks a blob the manifest refers to.
    #[error("{what} blob {digest} of {reference} is missing from {registry} (404): the manifest refers to content the registry does not have")]
    BlobNotFound {
        /// config or layer.
        what: &'static str,
        /// Its digest.
        digest: String,
        /// The reference pulled.
        reference: String,
        /// The registry endpoint.
        registry: String,
    },
    /// Credentials are needed (none given) or were refused.
    #[error("pull access denied for {reference}: {registry} requires authentication ({detail})")]
    Unauthorized {
        /// The reference.
        reference: String,
        /// The registry.
        registry: String,
        /// What happened.
        detail: String,
    },
    /// The registry rate-limited us.
    #[error("toomanyrequests: {registry} rate-limited this pull (HTTP 429{remaining}{retry}); wait, or log in for a higher limit")]
    RateLimited {
        /// The registry.
        registry: String,
        /// `, ratelimit-remaining: …` or empty.
        remaining: String,
        /// `, retry after N s` or empty.
        retry: String,
    },
    /// The registry cannot be reached.
    #[error("cannot reach {registry}: {detail}")]
    Unreachable {
        /// The registry endpoint.
        registry: String,
        /// The transport error.
        detail: String,
    },
    /// The registry answered something unexpected.
    #[error("{registry} answered HTTP {status} for {what}: {detail}")]
    Upstream {
        /// The registry endpoint.
        registry: String,
        /// HTTP status.
        status: u16,
        /// What was asked for.
        what: String,
        /// Body excerpt.
        detail: String,
    },
    /// Content from upstream is corrupt: wrong digest, wrong size, truncated, unparsable.
    #[error("{what} {digest} from {registry} is corrupt: {why}")]
    BadContent {
        /// manifest, index, config, layer.
        what: &'static str,
        /// Its digest.
        digest: String,
        /// The registry endpoint.
        registry: String,
        /// What is wrong.
        why: String,
    },
    /// No entry of the index matches the platform wanted.
    #[error("{0}")]
    NoMatchingPlatform(String),
    /// Something Berth does not support (schema1, unknown layer media types).
    #[error("{0}")]
    Unsupported(String),
    /// store-svc failed.
    #[error("store-svc: {message}")]
    Store {
        /// Whether store-svc was unreachable (vs. failing the call).
        unavailable: bool,
        /// Its message.
        message: String,
    },
    /// The service's configuration is wrong.
    #[error("{0}")]
    Config(String),
    /// A layer was downloaded but not committed because the pull that fetched it failed
    /// (e.g. its config was bad); another pull that shares the layer fetches it itself.
    #[error("the download was abandoned: {0}")]
    Abandoned(String),
}

/// Shorthand.
pub type Result<T, E = RegistryError> = std::result::Result<T, E>;
