//! Where the compressed bytes of a layer come from: store-svc (streamed `Content.Read`) in the
//! service, a directory of blob files in tests and tools.

use super::{Layer, SnapshotError};
use async_trait::async_trait;
use berth_proto::store::v1::{content_client::ContentClient, ReadRequest, ReadResponse};
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use tokio::io::AsyncRead;

/// A stream of a layer's compressed bytes, as stored (the bytes whose sha256 is `Layer::digest`).
pub type LayerReader = Pin<Box<dyn AsyncRead + Send>>;

/// Where compressed layer bytes come from. The snapshotter verifies the digest and size of what
/// it reads, so a source need not.
#[async_trait]
pub trait LayerSource: Send + Sync {
    /// Opens the layer's blob for reading from its start.
    async fn open(&self, layer: &Layer) -> Result<LayerReader, SnapshotError>;
}

/// Streams layers from store-svc's `Content.Read`.
///
/// This is the one place of the snapshot module that names tonic and the generated store types:
/// the channel comes from the caller, which owns the connection to store-svc.
#[derive(Clone)]
pub struct StoreLayerSource {
    client: ContentClient<tonic::transport::Channel>,
}

impl StoreLayerSource {
    /// A source reading from the store-svc behind `ch`.
    pub fn new(ch: tonic::transport::Channel) -> Self {
        Self { client: ContentClient::new(ch).max_decoding_message_size(64 << 20) }
    }
}

/// How often a dropped `Content.Read` stream is resumed (from the offset reached) before the
/// layer fails.
const READ_RETRIES: u32 = 3;

struct ReadState {
    client: ContentClient<tonic::transport::Channel>,
    digest: String,
    offset: i64,
    stream: Option<tonic::codec::Streaming<ReadResponse>>,
    retries: u32,
    failed: bool,
}

fn transient(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::Unavailable
            | tonic::Code::Unknown
            | tonic::Code::Internal
            | tonic::Code::Cancelled
            | tonic::Code::Aborted
    )
}

#[async_trait]
impl LayerSource for StoreLayerSource {
    async fn open(&self, layer: &Layer) -> Result<LayerReader, SnapshotError> {
        let mut client = self.client.clone();
        let digest = layer.digest.to_string();
        let req = ReadRequest { digest: digest.clone(), offset: 0, length: 0 };
        // The first request's error (NOT_FOUND above all) is reported as a fetch error.
        let stream = client.read(req).await.map_err(|s| SnapshotError::Fetch {
            layer: layer.digest.clone(),
            reason: match s.code() {
                tonic::Code::NotFound => format!("store-svc does not have the blob ({})", s.message()),
                code => format!("store-svc answered {code:?}: {}", s.message()),
            },
        })?;
        let state = ReadState {
            client,
            digest,
            offset: 0,
            stream: Some(stream.into_inner()),
            retries: READ_RETRIES,
            failed: false,
        };
        // A stream of byte chunks that resumes from the offset reached when the connection drops.
        let bytes = futures::stream::unfold(state, |mut st| async move {
            if st.failed {
                return None;
            }
            loop {
                let stream = match st.stream.as_mut() {
                    Some(s) => s,
                    None => {
                        let req = ReadRequest { digest: st.digest.clone(), offset: st.offset, length: 0 };
                        match st.client.read(req).await {
                            Ok(r) => st.stream.insert(r.into_inner()),
                            Err(s) if transient(s.code()) && st.retries > 0 => {
                                st.retries -= 1;
                                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                                continue;
                            }
                            Err(s) => return Some((Err(status_err(&s)), st.stopped())),
                        }
                    }
                };
                match stream.message().await {
                    Ok(Some(msg)) => {
                        if msg.offset != st.offset {
                            let e = io::Error::other(format!(
                                "store-svc sent data at offset {} where {} was expected",
                                msg.offset, st.offset
                            ));
                            return Some((Err(e), st.stopped()));
                        }
                        st.offset += msg.data.len() as i64;
                        return Some((Ok(msg.data), st));
                    }
                    Ok(None) => return None,
                    Err(s) if transient(s.code()) && st.retries > 0 => {
                        tracing::warn!(digest = %st.digest, offset = st.offset, error = %s, "layer stream dropped; resuming");
                        st.retries -= 1;
                        st.stream = None;
                    }
                    Err(s) => return Some((Err(status_err(&s)), st.stopped())),
                }
            }
        });
        Ok(Box::pin(tokio_util::io::StreamReader::new(bytes)))
    }
}

impl ReadState {
    /// After an error: the next poll ends the stream.
    fn stopped(mut self) -> Self {
        self.failed = true;
        self.stream = None;
        self
    }
}

fn status_err(s: &tonic::Status) -> io::Error {
    io::Error::other(format!("store-svc stream: {:?}: {}", s.code(), s.message()))
}

/// Reads layers from files named by the hex part of their digest in one directory
/// (`<dir>/<hex>`), or from an OCI layout's `blobs/sha256` directory.
#[derive(Clone, Debug)]
pub struct FileLayerSource {
    dir: PathBuf,
}

impl FileLayerSource {
    /// A source reading `<dir>/<hex of digest>`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }
}

#[async_trait]
impl LayerSource for FileLayerSource {
    async fn open(&self, layer: &Layer) -> Result<LayerReader, SnapshotError> {
        let path = self.dir.join(layer.digest.hex());
        let f = tokio::fs::File::open(&path).await.map_err(|e| SnapshotError::Fetch {
            layer: layer.digest.clone(),
            reason: format!("opening {}: {e}", path.display()),
        })?;
        Ok(Box::pin(tokio::io::BufReader::with_capacity(256 << 10, f)))
    }
}
