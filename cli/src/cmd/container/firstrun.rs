//! The first `run` of an image the store lacks: pull it through registry-svc and, at the same
//! time, have runtime-svc unpack each layer as soon as its blob is committed in store-svc (the
//! `Prefetch` call), as containerd's unpacker does. When the pull is done the image is committed
//! to the prefetch, which turns the unpacked layers into snapshots (diff_ids checked against the
//! config); the Create that follows finds them ready. A failed or interrupted pull closes the
//! prefetch without a commit, and runtime-svc removes what it unpacked.
//!
//! The prefetch only saves time: when it is unavailable or fails, Create unpacks (and reports
//! any error) as it always did.

use crate::context::Context;
use crate::output::{human_size, short_id};
use anyhow::Result;
use berth_common::reference::Reference;
use berth_proto::registry::v1 as rpb;
use berth_proto::runtime::v1 as pb;
use pb::runtime_client::RuntimeClient;
use std::collections::HashMap;
use std::io::IsTerminal;
use tokio::sync::mpsc;
use tonic::transport::Channel;

/// Pulls `image` (docker's "Unable to find image" line and the pull's progress on stderr) while
/// runtime-svc unpacks its layers; returns once the layers are snapshots (or the prefetch gave up).
pub async fn pull_and_unpack(ctx: &Context, rt: &mut RuntimeClient<Channel>, image: &str) -> Result<()> {
    let shown = Reference::parse_normalized(image).map(|r| r.familiar()).unwrap_or_else(|_| image.to_string());
    let (req_tx, req_rx) = mpsc::unbounded_channel::<pb::PrefetchRequest>();
    let mut events = match rt.prefetch(tokio_stream::wrappers::UnboundedReceiverStream::new(req_rx)).await {
        Ok(r) => r.into_inner(),
        Err(e) => {
            // An older runtime-svc: pull, and Create unpacks afterwards.
            tracing::debug!(error = %e, "no prefetch; the layers are unpacked by Create");
            eprintln!("Unable to find image '{shown}' locally");
            return crate::cmd::image::pull(ctx, image, None, false, true).await.map(drop);
        }
    };
    // Events are read off the connection at once so runtime-svc never waits on this client.
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            match events.message().await {
                Ok(Some(ev)) => {
                    if ev_tx.send(Ok(ev)).is_err() {
                        return;
                    }
                }
                Ok(None) => return,
                Err(s) => {
                    let _ = ev_tx.send(Err(s));
                    return;
                }
            }
        }
    });

    eprintln!("Unable to find image '{shown}' locally");
    let mut layers: HashMap<String, pb::PrefetchLayer> = HashMap::new();
    let tx = req_tx.clone();
    let mut observe = move |ev: &rpb::pull_event::Event| match ev {
        rpb::pull_event::Event::Started(s) => {
            for l in &s.layers {
                let pl = pb::PrefetchLayer { digest: l.digest.clone(), media_type: l.media_type.clone(), size: l.size };
                layers.insert(l.digest.clone(), pl);
            }
        }
        rpb::pull_event::Event::Blob(b) => {
            let landed = [rpb::BlobState::Done as i32, rpb::BlobState::AlreadyExists as i32].contains(&b.state);
            if b.kind == rpb::BlobKind::Layer as i32 && landed {
                if let Some(l) = layers.remove(&b.digest) {
                    let _ = tx.send(pb::PrefetchRequest { layers: vec![l], commit: String::new() });
                }
            }
        }
        rpb::pull_event::Event::Done(_) => {}
    };
    // An error here drops `req_tx` without a commit: runtime-svc removes what it unpacked.
    crate::cmd::image::pull_observed(ctx, image, None, false, true, &mut observe).await?;
    if req_tx.send(pb::PrefetchRequest { layers: vec![], commit: image.to_string() }).is_err() {
        return Ok(());
    }
    show_progress(&mut ev_rx).await;
    drop(req_tx);
    Ok(())
}

/// Renders the unpack's progress until `ready` (or an error, left for Create to report).
async fn show_progress(ev_rx: &mut mpsc::UnboundedReceiver<Result<pb::PrefetchEvent, tonic::Status>>) {
    let tty = std::io::stderr().is_terminal();
    // digest → (current, total, done)
    let mut layers: Vec<(String, i64, i64, bool)> = Vec::new();
    let mut drew = false;
    while let Some(ev) = ev_rx.recv().await {
        let ev = match ev {
            Ok(ev) => ev,
            Err(e) => {
                tracing::debug!(error = %e, "prefetch failed; Create unpacks instead");
                break;
            }
        };
        match ev.event {
            Some(pb::prefetch_event::Event::Layer(p)) => {
                let done = p.status == "done";
                let idx = match layers.iter().position(|l| l.0 == p.digest) {
                    Some(i) => i,
                    None => {
                        layers.push((p.digest.clone(), 0, p.total, false));
                        layers.len() - 1
                    }
                };
                let was_done = layers[idx].3;
                layers[idx] = (p.digest.clone(), p.current, p.total, done || was_done);
                if tty {
                    let busy = layers.iter().filter(|l| !l.3).count();
                    let cur: i64 = layers.iter().map(|l| if l.3 { l.2 } else { l.1 }).sum();
                    let tot: i64 = layers.iter().map(|l| l.2).sum();
                    eprint!(
                        "\r\x1b[2KUnpacking {busy} layer(s): {} / {}",
                        human_size(cur.max(0) as u64),
                        human_size(tot.max(0) as u64)
                    );
                    drew = true;
                } else if done && !was_done {
                    eprintln!("{}: Unpacked {}", short_id(&p.digest), human_size(p.total.max(0) as u64));
                }
            }
            Some(pb::prefetch_event::Event::Ready(_)) => break,
            None => {}
        }
    }
    if drew {
        eprintln!();
    }
}
