//! Where the compressed bytes of a layer come from: store-svc (streamed `Content.Read`) in the
//! service, a directory of blob files in tests and tools.

use super::{Layer, SnapshotError};
use async_trait::async_trait;
use berth_proto::store::v1::{content_client::ContentClient, ReadRequest};
use futures::StreamExt;
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

#[async_trait]
impl LayerSource for StoreLayerSource {
    async fn open(&self, layer: &Layer) -> Result<LayerReader, SnapshotError> {
        let mut client = self.client.clone();
        let req = ReadRequest { digest: layer.digest.to_string(), offset: 0, length: 0 };
        let stream = client.read(req).await.map_err(|s| SnapshotError::Fetch {
            layer: layer.digest.clone(),
            reason: match s.code() {
                tonic::Code::NotFound => format!("store-svc does not have the blob ({})", s.message()),
                code => format!("store-svc answered {code:?}: {}", s.message()),
            },
        })?;
        // Each message must continue exactly where the previous one ended.
        let mut next = 0i64;
        let bytes = stream.into_inner().map(move |msg| {
            let msg =
                msg.map_err(|s| io::Error::other(format!("store-svc stream: {:?}: {}", s.code(), s.message())))?;
            if msg.offset != next {
                return Err(io::Error::other(format!(
                    "store-svc sent data at offset {} where {} was expected",
                    msg.offset, next
                )));
            }
            next += msg.data.len() as i64;
            Ok::<_, io::Error>(msg.data)
        });
        Ok(Box::pin(tokio_util::io::StreamReader::new(bytes)))
    }
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
