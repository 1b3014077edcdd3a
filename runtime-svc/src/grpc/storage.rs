//! The gRPC side of mounts, volumes, restart policies, top and stats: proto ⇄ domain
//! conversions and the bodies of the volume/top/stats RPCs (the service in `grpc.rs` delegates
//! here with one line each).
// tonic::Status is the error type of every gRPC handler.
#![allow(clippy::result_large_err)]

use crate::container::{HostSettings, Record};
use crate::manager::Manager;
use crate::mounts::{MountKind, MountRequest};
use crate::restart::RestartPolicy;
use crate::volume::Volume;
use berth_proto::runtime::v1 as pb;
use std::sync::Arc;
use tonic::Status as GrpcStatus;

/// Fills the mount/restart part of HostSettings from a CreateRequest's HostConfig.
pub fn host_from_pb(h: &pb::HostConfig, host: &mut HostSettings) -> Result<(), GrpcStatus> {
    host.binds = h.binds.clone();
    host.mounts = h
        .mounts
        .iter()
        .map(|m| {
            crate::mounts::from_request(&MountRequest {
                kind: m.r#type.clone(),
                source: m.source.clone(),
                target: m.target.clone(),
                readonly: m.read_only,
                nocopy: m.volume_nocopy,
                tmpfs_size: m.tmpfs_size_bytes,
                tmpfs_mode: m.tmpfs_mode,
                propagation: m.bind_propagation.clone(),
            })
        })
        .collect::<Result<_, _>>()
        .map_err(GrpcStatus::invalid_argument)?;
    host.readonly_rootfs = h.readonly_rootfs;
    host.tmpfs = h.tmpfs.clone().into_iter().collect();
    if let Some(p) = &h.restart_policy {
        host.restart = RestartPolicy::parse(&p.name, p.maximum_retry_count).map_err(GrpcStatus::invalid_argument)?;
    }
    if host.auto_remove && host.restart.name != crate::restart::PolicyName::No {
        return Err(GrpcStatus::invalid_argument("conflicting options: cannot specify both --restart and --rm"));
    }
    Ok(())
}

fn mount_to_pb(m: &crate::mounts::MountSpec) -> pb::Mount {
    let mut size = 0;
    let mut mode = 0;
    for o in &m.tmpfs_options {
        if let Some(s) = o.strip_prefix("size=") {
            size = s.parse().unwrap_or(0);
        } else if let Some(s) = o.strip_prefix("mode=") {
            mode = u32::from_str_radix(s, 8).unwrap_or(0);
        }
    }
    pb::Mount {
        r#type: m.kind.as_str().into(),
        source: m.source.clone(),
        target: m.target.clone(),
        read_only: m.readonly,
        volume_nocopy: m.nocopy,
        tmpfs_size_bytes: size,
        tmpfs_mode: mode,
        bind_propagation: m.propagation.clone(),
    }
}

/// Fills the mount/restart fields of a Container message.
pub fn fill_container(r: &Record, c: &mut pb::Container) {
    c.restart_count = r.restart_count;
    c.restarting = r.restarting;
    c.manually_stopped = r.manually_stopped;
    c.image_id = r.image_id.clone();
    c.mount_points = r
        .mount_points
        .iter()
        .map(|p| pb::MountPoint {
            r#type: p.kind.as_str().into(),
            name: if p.kind == MountKind::Volume { p.source.clone() } else { String::new() },
            source: p.host_path.clone(),
            destination: p.target.clone(),
            driver: if p.kind == MountKind::Volume { "local".into() } else { String::new() },
            mode: p.mode.clone(),
            rw: !p.readonly,
            propagation: if p.kind == MountKind::Bind { p.propagation().to_string() } else { String::new() },
        })
        .collect();
    if let Some(h) = c.host_config.as_mut() {
        h.binds = r.host.binds.clone();
        h.mounts = r.host.mounts.iter().map(mount_to_pb).collect();
        h.readonly_rootfs = r.host.readonly_rootfs;
        h.tmpfs = r.host.tmpfs.clone().into_iter().collect();
        h.restart_policy = Some(pb::RestartPolicy {
            name: r.host.restart.name_str().into(),
            maximum_retry_count: r.host.restart.max_retries,
        });
    }
    if let Some(cfg) = c.config.as_mut() {
        cfg.volumes = r.mount_points.iter().filter(|p| p.anonymous).map(|p| p.target.clone()).collect();
    }
}

fn volume_to_pb(m: &Manager, v: Volume) -> pb::Volume {
    pb::Volume {
        mountpoint: m.volume_path(&v.name).display().to_string(),
        used_by: m.volume_users(&v.name),
        name: v.name,
        driver: "local".into(),
        created_at_unix_nanos: v.created_at,
        labels: v.labels.into_iter().collect(),
        anonymous: v.anonymous,
    }
}

/// CreateVolume.
pub fn create_volume(m: &Manager, r: pb::CreateVolumeRequest) -> Result<pb::CreateVolumeResponse, GrpcStatus> {
    let v = m.volume_create(&r.name, r.labels.into_iter().collect())?;
    Ok(pb::CreateVolumeResponse { volume: Some(volume_to_pb(m, v)) })
}

/// ListVolumes.
pub fn list_volumes(m: &Manager) -> pb::ListVolumesResponse {
    pb::ListVolumesResponse { volumes: m.volume_list().into_iter().map(|v| volume_to_pb(m, v)).collect() }
}

/// InspectVolume.
pub fn inspect_volume(m: &Manager, name: &str) -> Result<pb::InspectVolumeResponse, GrpcStatus> {
    Ok(pb::InspectVolumeResponse { volume: Some(volume_to_pb(m, m.volume_get(name)?)) })
}

/// RemoveVolume.
pub fn remove_volume(m: &Manager, name: &str) -> Result<pb::RemoveVolumeResponse, GrpcStatus> {
    m.volume_remove(name)?;
    Ok(pb::RemoveVolumeResponse {})
}

/// PruneVolumes.
pub fn prune_volumes(m: &Manager, all: bool) -> pb::PruneVolumesResponse {
    let (removed, reclaimed_bytes) = m.volume_prune(all);
    pb::PruneVolumesResponse { removed, reclaimed_bytes }
}

/// Top.
pub async fn top(m: &Arc<Manager>, r: pb::TopRequest) -> Result<pb::TopResponse, GrpcStatus> {
    let (titles, rows) = m.top(&r.container, &r.ps_args).await?;
    Ok(pb::TopResponse { titles, processes: rows.into_iter().map(|cells| pb::TopRow { cells }).collect() })
}

/// Stats.
pub fn stats(m: &Manager, r: pb::StatsRequest) -> Result<pb::StatsResponse, GrpcStatus> {
    let stats = m
        .stats(&r.containers)?
        .into_iter()
        .map(|s| pb::ContainerStats {
            id: s.id,
            name: s.name,
            cpu_usage_nanos: s.cpu_ns,
            system_cpu_nanos: s.system_ns,
            online_cpus: s.cpus,
            memory_usage_bytes: s.mem,
            memory_limit_bytes: s.mem_limit,
            pids: s.pids,
            net_rx_bytes: s.net_rx,
            net_tx_bytes: s.net_tx,
            block_read_bytes: s.blk_read,
            block_write_bytes: s.blk_write,
            read_at_unix_nanos: s.at,
            running: s.running,
        })
        .collect();
    Ok(pb::StatsResponse { stats })
}
