//! Kubernetes operator: the `WebhookEndpoint` CRD, its controller, API-key
//! Secrets and leader election. (Being written; see issue 3.)

use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// The CRD as YAML (`hookit crd`).
pub fn crd_yaml() -> anyhow::Result<String> {
    anyhow::bail!("the operator is not built yet")
}

/// `hookit controller`.
pub async fn run(_cfg: Config, _shutdown: CancellationToken) -> anyhow::Result<()> {
    anyhow::bail!("the operator is not built yet")
}
