//! The signing secret of a WebhookEndpoint: read from the Secret that
//! `spec.secretRef` names, or from the `<name>-signing` Secret the controller
//! generates and owns.
//!
//! Generated Secrets are read from the controller's cache, not the API. The
//! controller watches them anyway (a change of their content rotates the
//! secret), through the label it puts on them, and that watch now fills a
//! store whose changes reach the reconciler only after the store has them: a
//! reconcile triggered by a rotation reads the new value. This took the
//! controller's Secret reads from 2.4 per new endpoint to none (counted by the
//! API server during `scripts/operator-scale.sh`). A Secret that is not in the
//! cache (a new endpoint, a Secret without our label in the way, a cache that
//! has not listed yet) is created; if the API answers that it exists, it is
//! read from the API and judged as before.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret as KubeSecret;
use k8s_openapi::ByteString;
use kube::api::{ObjectMeta, PostParams};
use kube::runtime::reflector::{ObjectRef, Store as Cache};
use kube::{Api, Resource, ResourceExt};

use super::crd::{WebhookEndpoint, WebhookEndpointStatus, DEFAULT_SECRET_KEY};
use super::endpoint::{Rejection, SLOW_RETRY, SOON_RETRY};
use super::events::EventType;
use super::{Context, Error, FIELD_MANAGER};
use crate::domain::ids::EndpointId;
use crate::domain::signing;

/// Label on generated signing Secrets (the controller watches them through it).
pub const SIGNING_LABEL: &str = "hookit.dev/signing-secret";

/// Suffix of generated signing Secrets; the Secret watch maps a Secret of such a
/// name back to its endpoint, whoever owns it (see `referencing` in the module root).
pub(super) const SIGNING_SUFFIX: &str = "-signing";

/// The signing secret and the Secret it came from.
pub(super) struct Signing {
    pub secret: signing::Secret,
    pub secret_name: String,
}

/// The generated signing Secrets the controller has seen, by namespace and name.
/// Replaced at the start of every leadership term (the watch behind it runs
/// only while this replica leads).
pub(super) struct SigningCache(std::sync::RwLock<Cache<KubeSecret>>);

impl SigningCache {
    /// An empty cache (no term started yet).
    pub fn empty() -> Self {
        Self(std::sync::RwLock::new(
            kube::runtime::reflector::store::<KubeSecret>().0,
        ))
    }

    /// Serve reads from `cache` from now on.
    pub fn replace(&self, cache: Cache<KubeSecret>) {
        if let Ok(mut c) = self.0.write() {
            *c = cache;
        }
    }

    fn get(&self, ns: &str, name: &str) -> Option<Arc<KubeSecret>> {
        let key = ObjectRef::new(name).within(ns);
        self.0.read().ok().and_then(|c| c.get(&key))
    }
}

/// The signing secret: from `spec.secretRef`, or the generated `<name>-signing`.
pub(super) async fn signing_secret(
    we: &WebhookEndpoint,
    ctx: &Context,
    previous: &WebhookEndpointStatus,
) -> Result<Result<Signing, Rejection>, Error> {
    let ns = we.namespace().ok_or(Error::Incomplete("namespace"))?;
    let secrets: Api<KubeSecret> = Api::namespaced(ctx.client.clone(), &ns);
    let Some(r) = &we.spec.secret_ref else {
        return generated_secret(we, ctx, &secrets, previous).await;
    };
    let key = r.key.as_deref().unwrap_or(DEFAULT_SECRET_KEY);
    let Some(s) = secrets.get_opt(&r.name).await? else {
        return Ok(Err(Rejection {
            reason: "SecretNotFound",
            message: format!("Secret {} (spec.secretRef) does not exist", r.name),
            retry: SOON_RETRY,
        }));
    };
    Ok(match read_key(&s, key) {
        Ok(secret) => Ok(Signing {
            secret,
            secret_name: r.name.clone(),
        }),
        Err(why) => Err(Rejection {
            reason: "InvalidSecret",
            message: format!("Secret {} (spec.secretRef): {why}", r.name),
            retry: SLOW_RETRY,
        }),
    })
}

/// Reads and parses a `whsec_…` value; the error never contains the value.
fn read_key(s: &KubeSecret, key: &str) -> Result<signing::Secret, String> {
    let bytes = s
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .ok_or_else(|| format!("has no key `{key}`"))?;
    let text = std::str::from_utf8(&bytes.0).map_err(|_| format!("key `{key}` is not text"))?;
    signing::Secret::parse(text.trim()).map_err(|e| format!("key `{key}`: {e}"))
}

/// Name of the Secret generated for WebhookEndpoint `name`.
pub(super) fn signing_secret_name(name: &str) -> String {
    format!("{name}{SIGNING_SUFFIX}")
}

/// Ensures Secret `<name>-signing`, owned by the resource. A missing Secret is
/// recreated with the secret the endpoint already signs with (so deleting it by
/// mistake does not rotate); a fresh one is generated only for a new endpoint.
async fn generated_secret(
    we: &WebhookEndpoint,
    ctx: &Context,
    secrets: &Api<KubeSecret>,
    previous: &WebhookEndpointStatus,
) -> Result<Result<Signing, Rejection>, Error> {
    let ns = we.namespace().ok_or(Error::Incomplete("namespace"))?;
    let name = signing_secret_name(&we.name_any());
    let uid = we.uid().ok_or(Error::Incomplete("uid"))?;
    let owned = |s: &KubeSecret| s.owner_references().iter().any(|o| o.uid == uid);
    // Owned by an earlier WebhookEndpoint of the same name, which is gone (names are
    // unique, so a different UID means it was deleted and recreated).
    let stale = |s: &KubeSecret| {
        s.owner_references().iter().any(|o| {
            o.kind == WebhookEndpoint::kind(&()) && o.name == we.name_any() && o.uid != uid
        })
    };
    let existing = match ctx.signing.get(&ns, &name) {
        // Ours, as of the last watch event: the cache is the API's word.
        Some(s) if owned(&s) => Some(s),
        // Someone else's, or an earlier endpoint's: judged on a fresh read.
        Some(_) => secrets.get_opt(&name).await?.map(Arc::new),
        // Not seen: most likely a new endpoint, so create it; an unlabelled
        // Secret of that name (never in the cache) answers 409, and is read.
        None => match create(we, ctx, secrets, &name, previous).await? {
            Created::Yes(signing) => return Ok(Ok(signing)),
            Created::AlreadyExists(_) => secrets.get_opt(&name).await?.map(Arc::new),
        },
    };
    match existing {
        Some(s) if owned(&s) => Ok(read_key(&s, DEFAULT_SECRET_KEY)
            .map(|secret| Signing {
                secret,
                secret_name: name.clone(),
            })
            .map_err(|why| Rejection {
                reason: "InvalidSecret",
                message: format!(
                    "Secret {name}: {why}; write a valid whsec_ value into it, or delete it to have it recreated"
                ),
                retry: SLOW_RETRY,
            })),
        Some(s) if stale(&s) => {
            let secret = signing::Secret::generate();
            let mut object = signing_secret_object(we, &name, &secret)?;
            object.metadata.resource_version = s.resource_version();
            secrets
                .replace(&name, &post_params(), &object)
                .await?;
            ctx.publish(
                &we.object_ref(&()),
                EventType::Normal,
                "SigningSecretCreated",
                "CreateSecret",
                &format!("took over Secret {name} left by an earlier WebhookEndpoint of this name, with a new signing secret"),
            )
            .await;
            Ok(Ok(Signing {
                secret,
                secret_name: name,
            }))
        }
        Some(_) => Ok(Err(Rejection {
            reason: "SecretConflict",
            message: format!(
                "Secret {name} exists and is not owned by this WebhookEndpoint; rename or delete it, or point spec.secretRef at it"
            ),
            retry: SLOW_RETRY,
        })),
        // Gone between a 409 and the read: create it again. A second 409 means
        // it is being churned; the conflict's short backoff retries.
        None => match create(we, ctx, secrets, &name, previous).await? {
            Created::Yes(signing) => Ok(Ok(signing)),
            Created::AlreadyExists(e) => Err(Error::Kube(e)),
        },
    }
}

/// Whether [`create`] made the Secret.
enum Created {
    Yes(Signing),
    /// The API's 409.
    AlreadyExists(kube::Error),
}

/// Creates `<name>-signing` with the secret the endpoint already signs with, or
/// a fresh one for a new endpoint.
async fn create(
    we: &WebhookEndpoint,
    ctx: &Context,
    secrets: &Api<KubeSecret>,
    name: &str,
    previous: &WebhookEndpointStatus,
) -> Result<Created, Error> {
    let current = match previous
        .endpoint_id
        .as_deref()
        .and_then(|id| id.parse::<EndpointId>().ok())
    {
        Some(id) => match ctx
            .store
            .get_endpoint_secret(&we.namespace().unwrap_or_default(), id)
            .await
        {
            Ok(s) => Some(s),
            Err(crate::error::Error::NotFound(_)) => None,
            Err(e) => return Err(e.into()),
        },
        None => None,
    };
    let restored = current.is_some();
    let secret = current.unwrap_or_else(signing::Secret::generate);
    match secrets
        .create(&post_params(), &signing_secret_object(we, name, &secret)?)
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.is_already_exists() => {
            return Ok(Created::AlreadyExists(kube::Error::Api(s)))
        }
        Err(e) => return Err(e.into()),
    }
    let note = if restored {
        format!("recreated Secret {name} with the endpoint's current signing secret")
    } else {
        format!("generated a signing secret into Secret {name}")
    };
    ctx.publish(
        &we.object_ref(&()),
        EventType::Normal,
        "SigningSecretCreated",
        "CreateSecret",
        &note,
    )
    .await;
    Ok(Created::Yes(Signing {
        secret,
        secret_name: name.to_string(),
    }))
}

fn post_params() -> PostParams {
    PostParams {
        dry_run: false,
        field_manager: Some(FIELD_MANAGER.into()),
    }
}

fn signing_secret_object(
    we: &WebhookEndpoint,
    name: &str,
    secret: &signing::Secret,
) -> Result<KubeSecret, Error> {
    let mut owner = we
        .controller_owner_ref(&())
        .ok_or(Error::Incomplete("uid"))?;
    owner.block_owner_deletion = Some(true);
    Ok(KubeSecret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: we.namespace(),
            owner_references: Some(vec![owner]),
            labels: Some(BTreeMap::from([
                (SIGNING_LABEL.to_string(), "true".to_string()),
                (
                    "app.kubernetes.io/managed-by".to_string(),
                    "hookit".to_string(),
                ),
            ])),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(
            DEFAULT_SECRET_KEY.to_string(),
            ByteString(secret.expose().into_bytes()),
        )])),
        ..Default::default()
    })
}
