//! Client-side probes every Berth service answers: grpc.health.v1 `Check`, the service list from
//! server reflection, and `berth.types.v1.ServiceInfo/GetInfo`. Used by the CLI (`berth system
//! info`, waiting for the local stack) and by the test harness (polling a service until healthy).

use anyhow::{bail, Context, Result};
use berth_proto::types::v1 as pb;
use std::time::Duration;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus as PbStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::ServerReflectionRequest;

/// A service's health as grpc.health.v1 reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// Ready to take calls.
    Serving,
    /// Up, but not ready yet (starting) or draining (stopping).
    NotServing,
    /// The service name is unknown to the server, or the status is unknown.
    Unknown,
}

impl std::fmt::Display for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Serving => "SERVING",
            Self::NotServing => "NOT_SERVING",
            Self::Unknown => "UNKNOWN",
        })
    }
}

/// Asks grpc.health.v1 `Check` for `service` ("" is the whole server).
pub async fn health(channel: Channel, service: &str) -> Result<Health> {
    let mut c = HealthClient::new(channel);
    let mut req = tonic::Request::new(HealthCheckRequest { service: service.to_string() });
    req.set_timeout(Duration::from_secs(5));
    let resp = c.check(req).await.context("grpc.health.v1 Check failed")?.into_inner();
    Ok(match PbStatus::try_from(resp.status) {
        Ok(PbStatus::Serving) => Health::Serving,
        Ok(PbStatus::NotServing) => Health::NotServing,
        _ => Health::Unknown,
    })
}

/// Lists the gRPC services a server offers, through server reflection (v1).
pub async fn list_services(channel: Channel) -> Result<Vec<String>> {
    let mut c = ServerReflectionClient::new(channel);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = c
        .server_reflection_info(tokio_stream::once(req))
        .await
        .context("grpc.reflection.v1 ServerReflectionInfo failed")?
        .into_inner();
    let Some(resp) = stream.message().await? else { bail!("reflection answered nothing") };
    match resp.message_response {
        Some(MessageResponse::ListServicesResponse(l)) => Ok(l.service.into_iter().map(|s| s.name).collect()),
        Some(MessageResponse::ErrorResponse(e)) => bail!("reflection error {}: {}", e.error_code, e.error_message),
        other => bail!("unexpected reflection answer: {other:?}"),
    }
}

/// Calls `berth.types.v1.ServiceInfo/GetInfo`.
pub async fn info(channel: Channel) -> Result<pb::GetInfoResponse> {
    let mut c = pb::service_info_client::ServiceInfoClient::new(channel);
    let mut req = tonic::Request::new(pb::GetInfoRequest {});
    req.set_timeout(Duration::from_secs(5));
    Ok(c.get_info(req).await.context("berth.types.v1.ServiceInfo/GetInfo failed")?.into_inner())
}
