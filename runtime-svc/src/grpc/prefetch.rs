//! The `Prefetch` RPC: requests and events translated to and from [`crate::prefetch`].

use super::BoxStream;
use crate::manager::Manager;
use crate::prefetch::{Input, Output};
use crate::snapshot::Blob;
use berth_proto::runtime::v1 as pb;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status as GrpcStatus, Streaming};

pub(super) fn serve(m: Arc<Manager>, mut req: Streaming<pb::PrefetchRequest>) -> BoxStream<pb::PrefetchEvent> {
    let (itx, irx) = mpsc::channel::<Input>(16);
    let (otx, mut orx) = mpsc::channel::<Output>(64);
    let (tx, rx) = mpsc::channel::<Result<pb::PrefetchEvent, GrpcStatus>>(64);
    // Requests: a bad digest fails the call; a broken or ended stream without `commit` ends the
    // input, which removes what was unpacked.
    let txr = tx.clone();
    tokio::spawn(async move {
        while let Ok(Some(r)) = req.message().await {
            let mut blobs = Vec::with_capacity(r.layers.len());
            for l in r.layers {
                match l.digest.parse() {
                    Ok(digest) => blobs.push(Blob { digest, media_type: l.media_type, size: l.size }),
                    Err(e) => {
                        let _ = txr.send(Err(GrpcStatus::invalid_argument(format!("layer {:?}: {e}", l.digest)))).await;
                        return;
                    }
                }
            }
            if !blobs.is_empty() && itx.send(Input::Layers(blobs)).await.is_err() {
                return;
            }
            if !r.commit.is_empty() {
                let _ = itx.send(Input::Commit(r.commit)).await;
                return;
            }
        }
    });
    let txe = tx.clone();
    tokio::spawn(async move {
        let run = crate::prefetch::run(m, irx, otx);
        let fwd = async {
            while let Some(o) = orx.recv().await {
                let ev = match o {
                    Output::Progress(p) => pb::prefetch_event::Event::Layer(pb::LayerProgress {
                        digest: p.digest,
                        status: p.status.to_string(),
                        current: p.current as i64,
                        total: p.total as i64,
                    }),
                    Output::Ready(n) => pb::prefetch_event::Event::Ready(pb::PrefetchReady { layers: n as i32 }),
                };
                let _ = tx.send(Ok(pb::PrefetchEvent { event: Some(ev) })).await;
            }
        };
        let (r, ()) = tokio::join!(run, fwd);
        if let Err(e) = r {
            let _ = txe.send(Err(e.into())).await;
        }
    });
    Box::pin(ReceiverStream::new(rx))
}
