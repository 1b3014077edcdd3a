//! The `berth.runtime.v1.Networks` gRPC service (`berth network ...`) and the conversions of
//! this module's types to and from protobuf; the one place where [`NetError`] becomes a gRPC
//! code.

use super::{NetError, NetworkDef, PortBinding};
use crate::error::RuntimeError;
use crate::manager::Manager;
use berth_proto::runtime::v1 as pb;
use std::collections::HashSet;
use std::sync::Arc;
use tonic::{Request, Response, Status};

impl From<NetError> for Status {
    fn from(e: NetError) -> Self {
        let msg = e.to_string();
        match e {
            NetError::Invalid(_) => Status::invalid_argument(msg),
            NetError::NotFound(_) => Status::not_found(msg),
            NetError::Exists(_) => Status::already_exists(msg),
            NetError::State(_) | NetError::PortInUse(_) => Status::failed_precondition(msg),
            NetError::Setup(_) => Status::internal(msg),
        }
    }
}

impl From<NetError> for RuntimeError {
    fn from(e: NetError) -> Self {
        match e {
            NetError::Invalid(m) => RuntimeError::Invalid(m),
            NetError::NotFound(_) => RuntimeError::Invalid(e.to_string()),
            other => RuntimeError::State(other.to_string()),
        }
    }
}

/// Proto → domain.
pub fn port_from_pb(p: &pb::PortBinding) -> Result<PortBinding, RuntimeError> {
    let protocol = if p.protocol.is_empty() { "tcp".to_string() } else { p.protocol.to_ascii_lowercase() };
    if protocol != "tcp" && protocol != "udp" {
        return Err(RuntimeError::Invalid(format!("invalid proto: {}", p.protocol)));
    }
    let ok = |n: u32| n <= 65535;
    if p.container_port == 0 || !ok(p.container_port) || !ok(p.host_port) || !ok(p.host_port_end) {
        return Err(RuntimeError::Invalid(format!("invalid port: {}:{}", p.host_port, p.container_port)));
    }
    if !p.host_ip.is_empty() && p.host_ip.parse::<std::net::Ipv4Addr>().is_err() {
        return Err(RuntimeError::Invalid(format!("invalid IP address: {}", p.host_ip)));
    }
    Ok(PortBinding {
        host_ip: if p.host_ip == "0.0.0.0" { String::new() } else { p.host_ip.clone() },
        host_port: p.host_port as u16,
        container_port: p.container_port as u16,
        protocol,
        host_port_end: if p.host_port_end > p.host_port { p.host_port_end as u16 } else { 0 },
    })
}

/// Domain → proto.
pub fn port_to_pb(p: &PortBinding) -> pb::PortBinding {
    pb::PortBinding {
        host_ip: if p.host_ip.is_empty() { "0.0.0.0".into() } else { p.host_ip.clone() },
        host_port: p.host_port.into(),
        container_port: p.container_port.into(),
        protocol: p.protocol.clone(),
        host_port_end: p.host_port_end.into(),
    }
}

/// The network part of a create request.
pub fn request_from_pb(h: &pb::HostConfig) -> Result<super::NetRequest, RuntimeError> {
    Ok(super::NetRequest {
        mode: h.network_mode.clone(),
        ports: h.port_bindings.iter().map(port_from_pb).collect::<Result<_, _>>()?,
        publish_all: h.publish_all_ports,
        expose: vec![],
    })
}

/// `--expose` entries as "PORT/PROTO" (tcp when no protocol is given); a clear error for
/// anything else.
pub fn expose_from_pb(ports: &[String]) -> Result<Vec<String>, RuntimeError> {
    ports
        .iter()
        .map(|e| {
            let (port, proto) = e.split_once('/').unwrap_or((e, "tcp"));
            match (port.parse::<u16>(), proto) {
                (Ok(p), "tcp" | "udp") if p > 0 => Ok(format!("{p}/{proto}")),
                _ => Err(RuntimeError::Invalid(format!("invalid exposed port {e:?} (expected PORT[/tcp|udp])"))),
            }
        })
        .collect()
}

/// A Container message with only the network fields set (the base of `to_pb`'s struct update).
pub fn container_base(net: &super::ContainerNet) -> pb::Container {
    let ep = net.endpoint.clone().unwrap_or_default();
    pb::Container {
        network: net.network_name(),
        exposed_ports: net.exposed.clone(),
        ip_address: ep.ip.clone(),
        ip_prefix_len: ep.prefix.into(),
        gateway: ep.gateway.clone(),
        mac_address: ep.mac.clone(),
        ports: ep.ports.iter().map(port_to_pb).collect(),
        sandbox_key: if net.endpoint.is_some() { ep.netns.display().to_string() } else { String::new() },
        ..Default::default()
    }
}

/// The service.
pub struct NetworkService {
    m: Arc<Manager>,
}

impl NetworkService {
    /// Wraps the manager.
    pub fn new(m: Arc<Manager>) -> Self {
        Self { m }
    }

    /// The tonic server.
    pub fn server(self) -> pb::networks_server::NetworksServer<Self> {
        pb::networks_server::NetworksServer::new(self)
    }

    fn to_pb(&self, d: &NetworkDef) -> pb::Network {
        let containers = if d.driver == "bridge" {
            self.m
                .networks()
                .endpoints(&d.bridge)
                .into_iter()
                .map(|l| pb::NetworkEndpoint {
                    id: l.id.clone(),
                    name: l.name.clone(),
                    ipv4_address: format!("{}/{}", l.endpoint.ip, l.endpoint.prefix),
                    mac_address: l.endpoint.mac.clone(),
                })
                .collect()
        } else {
            vec![]
        };
        pb::Network {
            id: d.id.clone(),
            name: d.name.clone(),
            driver: d.driver.clone(),
            subnet: d.subnet.clone(),
            gateway: d.gateway.clone(),
            bridge: d.bridge.clone(),
            created_at_unix_nanos: d.created_at,
            containers,
            name_resolution: d.user_defined(),
        }
    }

    fn in_use(&self) -> HashSet<String> {
        self.m.list(true).into_iter().map(|r| r.net.network_name()).collect()
    }
}

#[tonic::async_trait]
impl pb::networks_server::Networks for NetworkService {
    async fn create_network(
        &self,
        req: Request<pb::CreateNetworkRequest>,
    ) -> Result<Response<pb::CreateNetworkResponse>, Status> {
        let r = req.into_inner();
        let d = self.m.networks().create(&r.name, &r.subnet, &r.gateway, &r.driver).await?;
        Ok(Response::new(pb::CreateNetworkResponse { network: Some(self.to_pb(&d)) }))
    }

    async fn list_networks(
        &self,
        _req: Request<pb::ListNetworksRequest>,
    ) -> Result<Response<pb::ListNetworksResponse>, Status> {
        let networks = self.m.networks().list().iter().map(|d| self.to_pb(d)).collect();
        Ok(Response::new(pb::ListNetworksResponse { networks }))
    }

    async fn inspect_network(
        &self,
        req: Request<pb::InspectNetworkRequest>,
    ) -> Result<Response<pb::InspectNetworkResponse>, Status> {
        let d = self.m.networks().get(&req.into_inner().network)?;
        Ok(Response::new(pb::InspectNetworkResponse { network: Some(self.to_pb(&d)) }))
    }

    async fn remove_network(
        &self,
        req: Request<pb::RemoveNetworkRequest>,
    ) -> Result<Response<pb::RemoveNetworkResponse>, Status> {
        let what = req.into_inner().network;
        let def = self.m.networks().get(&what)?;
        let used_by: Vec<String> =
            self.m.list(true).into_iter().filter(|r| r.net.network_name() == def.name).map(|r| r.name).collect();
        let name = self.m.networks().remove(&what, &used_by).await?;
        Ok(Response::new(pb::RemoveNetworkResponse { name }))
    }

    async fn prune_networks(
        &self,
        _req: Request<pb::PruneNetworksRequest>,
    ) -> Result<Response<pb::PruneNetworksResponse>, Status> {
        let removed = self.m.networks().prune(&self.in_use()).await;
        Ok(Response::new(pb::PruneNetworksResponse { removed }))
    }
}
