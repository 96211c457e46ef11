//! `hookit demo`: standalone mode with a built-in receiver and an event generator.
//! (Being written; see issue 6.)

use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// Runs the demo until `shutdown`.
pub async fn run(_cfg: Config, _shutdown: CancellationToken) -> anyhow::Result<()> {
    anyhow::bail!("the demo is not built yet")
}
