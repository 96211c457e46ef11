//! API keys the Kubernetes way: a Secret labelled `hookit.dev/api-key: "true"`
//! grants the value of its `key` entry to the tenant of its namespace.
//!
//! A finalizer on the granting Secret makes revocation certain: deleting the
//! Secret, or taking the label off, revokes the key before the finalizer goes.
//! That is why the controller watches the metadata of every Secret and not just
//! labelled ones: a label-filtered watch would see a removed label as the Secret
//! vanishing, and could then neither revoke nor release the finalizer.

use std::sync::Arc;

use super::events::EventType;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{PartialObjectMeta, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use tracing::{info, instrument, warn};

use super::{Context, Error, FIELD_MANAGER};

/// Label that marks a Secret as an API key grant.
pub const LABEL: &str = "hookit.dev/api-key";
/// Finalizer on granting Secrets.
pub const FINALIZER: &str = "hookit.dev/api-key";
/// Entry of the Secret holding the key.
pub const KEY: &str = "key";

/// How often a Secret refused for a key value granted elsewhere is looked at again.
const CONFLICT_RECHECK: std::time::Duration = std::time::Duration::from_secs(30);

/// What the controller watches: Secret metadata only (never the values).
pub type SecretMeta = PartialObjectMeta<Secret>;

/// Entry point of the API-key controller.
#[instrument(skip_all, fields(namespace = meta.namespace(), name = meta.name_any()))]
pub async fn reconcile(meta: Arc<SecretMeta>, ctx: Arc<Context>) -> Result<Action, Error> {
    let key = super::object_key(&*meta);
    let result = reconcile_secret(&meta, &ctx).await;
    ctx.settle(&key, result.is_ok());
    result
}

/// Backoff by error kind and by how often this Secret failed in a row.
pub fn error_policy(meta: Arc<SecretMeta>, err: &Error, ctx: Arc<Context>) -> Action {
    super::retry_after_error("apikey", &super::object_key(&*meta), err, &ctx)
}

async fn reconcile_secret(meta: &SecretMeta, ctx: &Context) -> Result<Action, Error> {
    let grants = meta.labels().get(LABEL).is_some_and(|v| v == "true");
    let has_finalizer = meta.finalizers().iter().any(|f| f == FINALIZER);
    let deleting = meta.metadata.deletion_timestamp.is_some();
    if !has_finalizer && (!grants || deleting) {
        // Not ours: the common case for every other Secret in the cluster.
        return Ok(Action::await_change());
    }
    let ns = meta.namespace().ok_or(Error::Incomplete("namespace"))?;
    let name = meta.name_any();
    let secret_ref = format!("{ns}/{name}");
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);

    if grants && !deleting {
        if !has_finalizer {
            // The finalizer goes on first, so there is never a grant that a
            // deletion could slip past; the patch triggers the next reconcile.
            set_finalizers(&api, meta, true).await?;
            return Ok(Action::await_change());
        }
        let Some(secret) = api.get_opt(&name).await? else {
            return Ok(Action::await_change());
        };
        let value = secret
            .data
            .as_ref()
            .and_then(|d| d.get(KEY))
            .and_then(|v| std::str::from_utf8(&v.0).ok())
            .map(str::trim);
        let refused = match value {
            None => Some((
                "ApiKeyRefused",
                format!("the Secret has no text entry `{KEY}`"),
            )),
            Some(key) => match ctx.store.upsert_k8s_api_key(&secret_ref, &ns, key).await {
                Ok(()) => None,
                Err(crate::error::Error::Invalid { detail, .. }) => Some(("ApiKeyRefused", detail)),
                Err(crate::error::Error::Conflict { detail, .. }) => {
                    Some(("ApiKeyConflict", detail))
                }
                Err(e) => return Err(e.into()),
            },
        };
        match refused {
            None => {
                info!(tenant = %ns, "API key granted");
                super::count_reconcile("apikey", "granted");
                ctx.publish(
                    &meta.object_ref(&()),
                    EventType::Normal,
                    "ApiKeyGranted",
                    "Grant",
                    &format!("the key in `{KEY}` is an API key of tenant {ns}"),
                )
                .await;
            }
            Some((reason, why)) => {
                // Whatever this Secret granted before no longer stands.
                ctx.store.revoke_k8s_api_key(&secret_ref).await?;
                warn!(reason, why = %why, "API key refused");
                super::count_reconcile("apikey", "refused");
                ctx.publish(
                    &meta.object_ref(&()),
                    EventType::Warning,
                    reason,
                    "Grant",
                    &format!("not granted: {why}"),
                )
                .await;
                if reason == "ApiKeyConflict" {
                    // Nothing about this Secret changes when the grant in the way
                    // goes, so look again now and then: it is granted once free.
                    return Ok(Action::requeue(CONFLICT_RECHECK));
                }
            }
        }
        return Ok(Action::await_change());
    }

    // Deleted, or no longer labelled: revoke, then let the Secret go.
    let revoked = ctx.store.revoke_k8s_api_key(&secret_ref).await?;
    set_finalizers(&api, meta, false).await?;
    info!(tenant = %ns, revoked, "API key revoked");
    super::count_reconcile("apikey", "revoked");
    if !deleting {
        ctx.publish(
            &meta.object_ref(&()),
            EventType::Normal,
            "ApiKeyRevoked",
            "Revoke",
            &format!("the label {LABEL} is no longer \"true\"; the key was revoked"),
        )
        .await;
    }
    Ok(Action::await_change())
}

/// Adds or removes our finalizer. The merge patch carries the resourceVersion we
/// saw, so a concurrent change of the list fails with 409 (retried) instead of
/// being overwritten.
async fn set_finalizers(api: &Api<Secret>, meta: &SecretMeta, present: bool) -> Result<(), Error> {
    let mut finalizers: Vec<String> = meta
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .cloned()
        .collect();
    if present {
        finalizers.push(FINALIZER.into());
    }
    let patch = json!({
        "metadata": {
            "finalizers": finalizers,
            "resourceVersion": meta.resource_version(),
        }
    });
    let pp = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    match api
        .patch(&meta.name_any(), &pp, &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        // Already gone: nothing left to hold back.
        Err(kube::Error::Api(s)) if s.is_not_found() && !present => Ok(()),
        Err(e) => Err(e.into()),
    }
}
