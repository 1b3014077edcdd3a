//! Unpacking an image's layers while it is still being pulled (the `Prefetch` RPC): each layer is
//! unpacked as soon as the client says its blob is committed in store-svc, ahead of the image
//! config (see `snapshot::Prefetch`); once the pull is done the client commits the image, and the
//! layers become snapshots exactly as Create would make them (diff_ids checked against the
//! config, anything missing fetched from store-svc). Without a commit nothing is kept.

use crate::error::RuntimeError;
use crate::manager::{LayerProgress, Manager};
use crate::snapshot::{Blob, Layer, LayerSource, StoreLayerSource, UnpackProgress};
use std::sync::Arc;
use tokio::sync::mpsc;

/// What the client sends.
#[derive(Debug)]
pub enum Input {
    /// These layers' blobs are now in store-svc.
    Layers(Vec<Blob>),
    /// The pull is done: prepare every layer of this image.
    Commit(String),
}

/// What the call reports.
#[derive(Debug)]
pub enum Output {
    /// A layer's unpack progress.
    Progress(LayerProgress),
    /// After the commit: the image's layers (this many) are all snapshots.
    Ready(usize),
}

/// Runs one Prefetch call until the client commits (then prepares the image and sends `Ready`)
/// or stops sending (then removes what was unpacked).
pub async fn run(
    m: Arc<Manager>,
    mut input: mpsc::Receiver<Input>,
    output: mpsc::Sender<Output>,
) -> Result<(), RuntimeError> {
    let (snap, store) = m.snapshot_parts();
    let src: Arc<dyn LayerSource> = Arc::new(StoreLayerSource::new(store.clone()));
    let mut staged = snap.prefetch();
    let (ptx, mut prx) = mpsc::channel::<UnpackProgress>(64);
    let out = output.clone();
    let forward = tokio::spawn(async move {
        while let Some(p) = prx.recv().await {
            let p = LayerProgress {
                digest: p.layer.to_string(),
                status: if p.done { "done" } else { "extracting" },
                current: p.bytes_done,
                total: p.bytes_total,
            };
            let _ = out.send(Output::Progress(p)).await;
        }
    });
    let image = loop {
        match input.recv().await {
            Some(Input::Layers(blobs)) => {
                for b in blobs {
                    tracing::debug!(layer = %b.digest, "unpacking a layer while its image is pulled");
                    staged.stage(src.clone(), b, Some(ptx.clone()));
                }
            }
            Some(Input::Commit(image)) => {
                tracing::info!(%image, "pull done; committing the layers unpacked meanwhile");
                break image;
            }
            None => {
                tracing::debug!("prefetch ended without a commit; removing what it unpacked");
                return Ok(()); // `staged` dropped: its unpacks are removed
            }
        }
    };
    let result = async {
        let img = berth_common::image::load(store.clone(), &image, None).await?;
        let layers = Layer::of_image(&img);
        snap.prepare(&*src, &layers, Some(ptx.clone())).await?;
        Ok::<usize, RuntimeError>(layers.len())
    }
    .await;
    drop(staged);
    drop(ptx);
    let _ = forward.await;
    let n = result?;
    let _ = output.send(Output::Ready(n)).await;
    Ok(())
}
