//! Reconciles `WebhookEndpoint` resources into endpoint rows.
//!
//! Apply: check the spec against the same SSRF policy as the REST API, resolve the
//! signing secret (the referenced Secret, or a generated `<name>-signing` Secret
//! owned by the resource), upsert the row keyed by the resource's UID, and report
//! in `.status`. Cleanup (behind a finalizer): retire the row, which dead-letters
//! its pending deliveries rather than dropping them.
//!
//! A healthy endpoint is not reconciled periodically: the change feed (`feed`)
//! reconciles it when its delivery figures change, and the watches when the
//! resource or its Secrets do.

use std::sync::Arc;
use std::time::Duration;

use super::events::EventType;
use chrono::{DateTime, SecondsFormat, Utc};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{finalizer, Event as Finalizer};
use kube::{Api, Resource, ResourceExt};
use rand::Rng;
use serde_json::json;
use sha2::{Digest, Sha256};
use tracing::{info, instrument, warn};

use super::crd::{Condition, DeliveryFigures, WebhookEndpoint, WebhookEndpointStatus, READY};
use super::signing::signing_secret;
use super::subscriptions::event_types_condition;
use super::{Context, Error, FIELD_MANAGER};
use crate::db::endpoints::{check_target, EndpointSpec, ManagedEndpoint};
use crate::db::figures::DeliverySummary;
use crate::domain::ids::EndpointId;
use crate::domain::ssrf::SsrfError;

/// Finalizer that retires the endpoint before the resource goes.
pub const FINALIZER: &str = "hookit.dev/endpoint";
/// Window of the delivery figures in `.status.deliveries`.
const FIGURES_WINDOW_HOURS: i64 = 24;
/// Requeue after a refusal that only a spec change can fix.
pub(super) const SLOW_RETRY: Duration = Duration::from_secs(300);
/// Requeue after a refusal that may fix itself (DNS, a Secret yet to be created).
pub(super) const SOON_RETRY: Duration = Duration::from_secs(60);
/// Requeue of an applied endpoint: a safety net only. Its figures follow the
/// change feed and its inputs are watched; this catches what neither sees: a
/// URL whose DNS name now resolves to a refused address (the worker refuses to
/// send there anyway; this puts it in the status), figures changed by a purge
/// of dead letters, a feed signal lost to an attempt written later than the
/// feed allows for. At 10,000 endpoints an hour is under 3 reconciles/s, each
/// a few reads; spread by up to [`SAFETY_SPREAD`] so the endpoints reconciled
/// together at startup do not come back together.
const SAFETY_RESYNC: Duration = Duration::from_secs(3600);
/// Largest random addition to [`SAFETY_RESYNC`].
const SAFETY_SPREAD: Duration = Duration::from_secs(600);

/// Why the spec cannot be honoured: reported in `.status`, retried slowly.
pub(super) struct Rejection {
    pub reason: &'static str,
    pub message: String,
    pub retry: Duration,
}

impl Rejection {
    fn from_store(e: crate::error::Error) -> Self {
        match e {
            crate::error::Error::Ssrf(s @ SsrfError::Unresolvable(_)) => Rejection {
                reason: "UrlUnresolvable",
                message: s.to_string(),
                retry: SOON_RETRY,
            },
            crate::error::Error::Ssrf(s) => Rejection {
                reason: "UrlRefused",
                message: format!("the URL was refused by the SSRF policy: {s}"),
                retry: SLOW_RETRY,
            },
            other => Rejection {
                reason: "InvalidSpec",
                message: other.to_string(),
                retry: SLOW_RETRY,
            },
        }
    }
}

/// What was last written for a resource: a reconcile with the same generation
/// and secret has nothing to write.
pub struct Applied {
    generation: Option<i64>,
    secret_digest: [u8; 32],
    /// The code applied: a ConfigMap's can change with the same generation.
    transformation_digest: Option<[u8; 32]>,
    endpoint: Option<EndpointId>,
}

impl Applied {
    fn same_input(&self, other: &Applied) -> bool {
        self.generation == other.generation
            && self.secret_digest == other.secret_digest
            && self.transformation_digest == other.transformation_digest
    }
}

/// Entry point of the `WebhookEndpoint` controller.
#[instrument(skip_all, fields(namespace = we.namespace(), name = we.name_any()))]
pub async fn reconcile(we: Arc<WebhookEndpoint>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = we.namespace().ok_or(Error::Incomplete("namespace"))?;
    let api: Api<WebhookEndpoint> = Api::namespaced(ctx.client.clone(), &ns);
    let key = super::object_key(&*we);
    let result = finalizer(&api, FINALIZER, we, |event| async {
        match event {
            Finalizer::Apply(we) => apply(&we, &api, &ctx).await,
            Finalizer::Cleanup(we) => cleanup(&we, &ctx).await,
        }
    })
    .await
    .map_err(Error::from);
    ctx.settle(&key, result.is_ok());
    result
}

/// Backoff by error kind and by how often this object failed in a row.
pub fn error_policy(we: Arc<WebhookEndpoint>, err: &Error, ctx: Arc<Context>) -> Action {
    super::retry_after_error("webhookendpoint", &super::object_key(&*we), err, &ctx)
}

async fn apply(
    we: &WebhookEndpoint,
    api: &Api<WebhookEndpoint>,
    ctx: &Context,
) -> Result<Action, Error> {
    let ns = we.namespace().ok_or(Error::Incomplete("namespace"))?;
    let uid = we.uid().ok_or(Error::Incomplete("uid"))?;
    let previous = we.status.clone().unwrap_or_default();

    let spec = match desired_settings(we, ctx).await {
        Ok(spec) => spec,
        Err(r) => return reject(we, api, ctx, &previous, r).await,
    };
    let signing = match signing_secret(we, ctx, &previous).await? {
        Ok(s) => s,
        Err(r) => return reject(we, api, ctx, &previous, r).await,
    };
    let url = spec.url.clone();
    let applied = Applied {
        generation: we.metadata.generation,
        secret_digest: Sha256::digest(signing.secret.as_bytes()).into(),
        transformation_digest: spec
            .transformation
            .as_deref()
            .map(crate::transform::code_sha),
        endpoint: None,
    };
    // A refresh of an unchanged resource (the change feed, the safety resync)
    // only reads the row: writing it would, among other things, resume an
    // endpoint the worker disabled.
    let unchanged = ctx.applied.lock().ok().and_then(|m| {
        m.get(&uid)
            .filter(|a| a.same_input(&applied))
            .and_then(|a| a.endpoint)
    });
    let current = match unchanged {
        Some(id) => match ctx.store.get_endpoint(&ns, id).await {
            Ok(ep) => Some(ep),
            Err(crate::error::Error::NotFound(_)) => None,
            Err(e) => return Err(e.into()),
        },
        None => None,
    };
    let ep = match current {
        Some(ep) => ep,
        None => {
            ctx.store
                .upsert_managed_endpoint(&ManagedEndpoint {
                    uid: uid.clone(),
                    name: format!("{ns}/{}", we.name_any()),
                    tenant: ns.clone(),
                    spec,
                    paused: we.spec.paused,
                    secret: signing.secret,
                })
                .await?
        }
    };
    if let Ok(mut m) = ctx.applied.lock() {
        m.insert(
            uid,
            Applied {
                endpoint: Some(ep.id),
                ..applied
            },
        );
    }
    let figures = ctx
        .store
        .delivery_summary(&ns, ep.id, figures_since(Utc::now()))
        .await?;
    let catalog = ctx.store.event_type_names(&ns).await?;

    let (ready, reason, message) = match ep.status.as_str() {
        "disabled" => (
            "False",
            "Disabled",
            format!(
                "deliveries to {url} stopped: {}; set spec.paused to true and back to false to resume",
                ep.disabled_reason.as_deref().unwrap_or("disabled")
            ),
        ),
        "paused" => (
            "True",
            "Paused",
            format!("applied; deliveries to {url} are held while spec.paused is true"),
        ),
        _ => ("True", "Delivering", format!("delivering to {url}")),
    };
    let status = WebhookEndpointStatus {
        conditions: vec![
            ready_condition(&previous, ready, reason, message, we.metadata.generation),
            event_types_condition(
                &previous,
                &ep.event_types,
                &catalog,
                we.metadata.generation,
                &rfc3339(Utc::now()),
            ),
        ],
        observed_generation: we.metadata.generation,
        endpoint_id: Some(ep.id.to_string()),
        secret_name: Some(signing.secret_name),
        state: Some(ep.status),
        circuit_state: Some(ep.circuit_state),
        deliveries: Some(delivery_figures(figures)),
    };
    write_status(we, api, ctx, &previous, status).await?;
    super::count_reconcile("webhookendpoint", "applied");
    let spread = rand::thread_rng().gen_range(0..=SAFETY_SPREAD.as_secs());
    Ok(Action::requeue(SAFETY_RESYNC + Duration::from_secs(spread)))
}

/// Start of the figures' window for a look at `now`.
pub(super) fn figures_since(now: DateTime<Utc>) -> DateTime<Utc> {
    now - chrono::Duration::hours(FIGURES_WINDOW_HOURS)
}

/// The figures as `.status.deliveries` shows them.
fn delivery_figures(s: DeliverySummary) -> DeliveryFigures {
    DeliveryFigures {
        succeeded: s.succeeded,
        failed: s.failed,
        dead: s.dead,
        pending: s.pending,
        last_delivery_time: s.last_success_at.map(rfc3339),
        last_failure_time: s.last_failure_at.map(rfc3339),
    }
}

/// Whether `status` is that of an applied spec, whose figures an apply keeps
/// current. A refused spec's status keeps the figures it had (see [`reject`]),
/// and it is retried on its own schedule; the feed leaves it alone.
pub(super) fn follows_deliveries(status: &WebhookEndpointStatus) -> bool {
    status
        .ready()
        .is_some_and(|c| matches!(c.reason.as_str(), "Delivering" | "Paused" | "Disabled"))
}

/// Whether `status` still shows what the database says of the endpoint: its
/// state, its circuit and its figures. When it does, an apply would write nothing.
pub(super) fn shows(
    status: &WebhookEndpointStatus,
    state: &str,
    circuit_state: &str,
    figures: DeliverySummary,
) -> bool {
    status.state.as_deref() == Some(state)
        && status.circuit_state.as_deref() == Some(circuit_state)
        && status.deliveries.as_ref() == Some(&delivery_figures(figures))
}

async fn cleanup(we: &WebhookEndpoint, ctx: &Context) -> Result<Action, Error> {
    let uid = we.uid().ok_or(Error::Incomplete("uid"))?;
    ctx.store.retire_managed_endpoint(&uid).await?;
    if let Ok(mut m) = ctx.applied.lock() {
        m.remove(&uid);
    }
    info!("endpoint retired; its pending deliveries were dead-lettered");
    ctx.publish(
        &we.object_ref(&()),
        EventType::Normal,
        "Retired",
        "Delete",
        "the endpoint was removed from delivery; its pending deliveries were dead-lettered",
    )
    .await;
    super::count_reconcile("webhookendpoint", "retired");
    Ok(Action::await_change())
}

/// Endpoint settings from the spec, checked like the REST API checks them
/// (syntax, limits, and the SSRF policy against every resolved address).
async fn desired_settings(we: &WebhookEndpoint, ctx: &Context) -> Result<EndpointSpec, Rejection> {
    let spec = we.spec.to_endpoint_spec().map_err(|e| Rejection {
        reason: "InvalidSpec",
        message: e.to_string(),
        retry: SLOW_RETRY,
    })?;
    let mut spec = spec;
    if let Some(from) = &we.spec.transformation_from {
        spec.transformation = Some(transformation_from(we, ctx, from).await?);
    }
    spec.validate(&ctx.ssrf).map_err(Rejection::from_store)?;
    check_target(&ctx.ssrf, &spec.url)
        .await
        .map_err(Rejection::from_store)?;
    if let Some(code) = &spec.transformation {
        let tenant = we.namespace().unwrap_or_default();
        ctx.transformer
            .check(crate::transform::key_for(&tenant), code)
            .await
            .map_err(|e| Rejection {
                reason: "TransformationInvalid",
                message: e.to_string(),
                retry: SLOW_RETRY,
            })?;
    }
    Ok(spec)
}

/// The code in the ConfigMap key `spec.transformationFrom` names. Read when
/// the resource is reconciled; the ConfigMap watch reconciles it again when
/// the ConfigMap changes (see `referencing_config_map`).
async fn transformation_from(
    we: &WebhookEndpoint,
    ctx: &Context,
    from: &super::crd::ConfigMapKeyRef,
) -> Result<String, Rejection> {
    let ns = we.namespace().unwrap_or_default();
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
    let missing = |message: String| Rejection {
        reason: "TransformationMissing",
        message,
        retry: SOON_RETRY,
    };
    let cm = match api.get_opt(&from.name).await {
        Ok(Some(cm)) => cm,
        Ok(None) => {
            return Err(missing(format!(
                "ConfigMap {} (spec.transformationFrom) does not exist",
                from.name
            )))
        }
        Err(e) => {
            return Err(missing(format!(
                "ConfigMap {} (spec.transformationFrom) cannot be read: {e}",
                from.name
            )))
        }
    };
    cm.data
        .and_then(|mut d| d.remove(&from.key))
        .ok_or_else(|| {
            missing(format!(
                "ConfigMap {} has no key {} (spec.transformationFrom)",
                from.name, from.key
            ))
        })
}

async fn reject(
    we: &WebhookEndpoint,
    api: &Api<WebhookEndpoint>,
    ctx: &Context,
    previous: &WebhookEndpointStatus,
    r: Rejection,
) -> Result<Action, Error> {
    warn!(reason = r.reason, message = %r.message, "spec not applied");
    let mut message = r.message;
    if previous.endpoint_id.is_some() {
        message.push_str("; the endpoint keeps its last accepted settings");
    }
    // Keep what is still true (endpoint id, figures, the other conditions,
    // which describe the settings still applied); only Ready changes.
    let mut status = previous.clone();
    status.conditions = std::iter::once(ready_condition(
        previous,
        "False",
        r.reason,
        message,
        we.metadata.generation,
    ))
    .chain(
        previous
            .conditions
            .iter()
            .filter(|c| c.type_ != READY)
            .cloned(),
    )
    .collect();
    status.observed_generation = we.metadata.generation;
    write_status(we, api, ctx, previous, status).await?;
    super::count_reconcile("webhookendpoint", "rejected");
    Ok(Action::requeue(r.retry))
}

/// The Ready condition, keeping its transition time while its status holds.
fn ready_condition(
    previous: &WebhookEndpointStatus,
    status: &str,
    reason: &str,
    message: String,
    generation: Option<i64>,
) -> Condition {
    let last_transition_time = previous
        .ready()
        .filter(|c| c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| rfc3339(Utc::now()));
    Condition {
        type_: READY.into(),
        status: status.into(),
        reason: reason.into(),
        message,
        last_transition_time,
        observed_generation: generation,
    }
}

fn rfc3339(t: chrono::DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Writes the status through the status subresource (server-side apply, our own
/// field manager), but only when it changed: every write is a watch event that
/// triggers another reconcile, so writing unchanged figures would loop. An Event
/// is recorded when the Ready condition changes.
async fn write_status(
    we: &WebhookEndpoint,
    api: &Api<WebhookEndpoint>,
    ctx: &Context,
    previous: &WebhookEndpointStatus,
    status: WebhookEndpointStatus,
) -> Result<(), Error> {
    if we.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let patch = json!({
        "apiVersion": WebhookEndpoint::api_version(&()),
        "kind": WebhookEndpoint::kind(&()),
        "status": status,
    });
    api.patch_status(
        &we.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    let summary =
        |c: Option<&Condition>| c.map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()));
    if let Some(c) = status.ready() {
        if summary(previous.ready()) != summary(Some(c)) {
            let kind = if c.status == "True" {
                EventType::Normal
            } else {
                EventType::Warning
            };
            ctx.publish(
                &we.object_ref(&()),
                kind,
                &c.reason,
                "Reconcile",
                &c.message,
            )
            .await;
        }
    }
    Ok(())
}
