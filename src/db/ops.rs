//! Operational webhooks: HookIt's own signed events about its endpoints and
//! deliveries (`endpoint.disabled`, `endpoint.circuit_opened`, `delivery.dead`,
//! `delivery.recovered`), sent to an operator-chosen URL. They travel the ordinary
//! path — an event of the reserved tenant `hookit-system`, fanned out to its one
//! endpoint — so they are signed, retried and dead-lettered like any webhook.

use serde_json::value::RawValue;

use super::endpoints::{check_target, Endpoint, EndpointPatch, EndpointSpec};
use super::events::NewEvent;
use super::Store;
use crate::domain::ids::EndpointId;
use crate::domain::signing::Secret;
use crate::domain::ssrf::SsrfPolicy;
use crate::error::{Error, Result};

/// The tenant that owns operational events and their endpoint. A key for it
/// (`hookit keys create --tenant hookit-system`) reads the endpoint's secret.
pub const OPS_TENANT: &str = "hookit-system";
/// Description that marks the operational endpoint.
const OPS_DESCRIPTION: &str = "HookIt operational webhooks";

impl Store {
    /// Creates, or points at `url`, the operational endpoint (at start-up).
    pub async fn ensure_ops_endpoint(
        &self,
        url: &str,
        secret: Option<&Secret>,
        ssrf: &SsrfPolicy,
    ) -> Result<Endpoint> {
        check_target(ssrf, url).await?;
        let existing = self
            .list_endpoints(OPS_TENANT, None, 1000)
            .await?
            .into_iter()
            .find(|e| e.description == OPS_DESCRIPTION);
        let ep = match existing {
            Some(e) if e.url == url => e,
            Some(e) => {
                let patch = EndpointPatch {
                    url: Some(url.to_string()),
                    ..Default::default()
                };
                self.update_endpoint(OPS_TENANT, e.id, &patch, ssrf).await?
            }
            None => {
                let spec = EndpointSpec {
                    url: url.to_string(),
                    description: Some(OPS_DESCRIPTION.into()),
                    secret: secret.map(Secret::expose),
                    ..Default::default()
                };
                spec.validate(ssrf)?;
                self.create_endpoint(OPS_TENANT, &spec, i64::MAX).await?
            }
        };
        if let Some(s) = secret {
            self.install_endpoint_secret(ep.id, s).await?;
        }
        Ok(ep)
    }

    /// Publishes one operational event.
    pub async fn emit_ops(&self, event_type: &str, payload: serde_json::Value) -> Result<()> {
        let raw = RawValue::from_string(payload.to_string())
            .map_err(|e| Error::invalid("invalid-payload", e.to_string()))?;
        self.ingest(
            OPS_TENANT,
            &NewEvent {
                event_type,
                payload: &raw,
                idempotency_key: None,
                traceparent: None,
                only_endpoint: None,
            },
        )
        .await?;
        Ok(())
    }

    /// Makes `secret` the operational endpoint's signing secret (no-op if it is).
    async fn install_endpoint_secret(&self, id: EndpointId, secret: &Secret) -> Result<()> {
        self.install_secret(id.uuid(), secret).await.map(|_| ())
    }
}
