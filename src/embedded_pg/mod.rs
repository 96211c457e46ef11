//! A private PostgreSQL cluster started from the server binaries installed on the
//! machine, or else from ones downloaded once ([`download`]): the default
//! database of `hookit standalone` and of the test harness.

pub mod download;

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use tokio::process::{Child, Command};

/// How to install what is missing, shown when no server binaries are found.
pub const INSTALL_HINT: &str = "PostgreSQL server binaries (initdb, postgres) were not found on PATH or under \
/usr/lib/postgresql/*/bin, and none could be downloaded. Install them (Debian/Ubuntu: `apt-get install postgresql`; \
macOS: `brew install postgresql`) or point HookIt at an existing database with DATABASE_URL=postgres://user:pass@host/db";

/// Finds the directory holding `initdb` and `postgres`: PATH first, then the
/// newest `/usr/lib/postgresql/<version>/bin`.
pub fn find_bin_dir() -> Option<PathBuf> {
    let has_both = |d: &Path| d.join("initdb").is_file() && d.join("postgres").is_file();
    if let Some(path) = std::env::var_os("PATH") {
        for d in std::env::split_paths(&path) {
            if has_both(&d) {
                return Some(d);
            }
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            has_both(&bin).then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, b)| b)
}

/// Options of [`EmbeddedPg::start_with`].
#[derive(Debug, Default, Clone)]
pub struct StartOptions {
    /// Listen on this port instead of a free one (to restart on the same address).
    pub port: Option<u16>,
    /// Fast-shut the server down when the thread that started it ends (tests: no
    /// orphaned servers after the test binary exits).
    pub die_with_parent: bool,
    /// Extra `-c name=value` settings.
    pub settings: Vec<(String, String)>,
}

/// A running private cluster; stopped by [`EmbeddedPg::stop`] (or on drop).
pub struct EmbeddedPg {
    child: Option<Child>,
    url_base: String,
    data: PathBuf,
    port: u16,
}

/// The unprivileged account the server runs as when we are root (initdb and
/// postgres refuse to run as root).
fn run_as() -> anyhow::Result<Option<nix::unistd::User>> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    let user = nix::unistd::User::from_name("postgres")?
        .ok_or_else(|| anyhow!("running as root, and PostgreSQL refuses to; create a `postgres` user or run HookIt as another user"))?;
    Ok(Some(user))
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn command(bin: &Path, user: &Option<nix::unistd::User>) -> Command {
    let mut c = Command::new(bin);
    if let Some(u) = user {
        c.uid(u.uid.as_raw()).gid(u.gid.as_raw());
    }
    c.env_remove("PGDATA").stdin(Stdio::null());
    c
}

fn chown_tree(p: &Path, user: &nix::unistd::User) -> anyhow::Result<()> {
    nix::unistd::chown(p, Some(user.uid), Some(user.gid))?;
    if p.is_dir() {
        for e in std::fs::read_dir(p)? {
            chown_tree(&e?.path(), user)?;
        }
    }
    Ok(())
}

impl EmbeddedPg {
    /// Initialises (first time) and starts a cluster under `dir`, listening only on
    /// 127.0.0.1 with password authentication. `fsync` stays on: a 2xx from ingestion
    /// must survive a crash, in standalone mode as anywhere.
    pub async fn start(dir: &Path) -> anyhow::Result<Self> {
        Self::start_with(dir, &StartOptions::default()).await
    }

    /// [`EmbeddedPg::start`] with options.
    pub async fn start_with(dir: &Path, opts: &StartOptions) -> anyhow::Result<Self> {
        let bin = match find_bin_dir() {
            Some(b) => b,
            None => download::ensure(dir)
                .await
                .map_err(|e| anyhow!("{e:#}\n{INSTALL_HINT}"))?,
        };
        let user = run_as()?;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let data = dir.join("pgdata");
        let pw_file = dir.join("pg-password");
        if !data.join("PG_VERSION").exists() {
            let password = crate::db::keys::generate_key();
            std::fs::write(&pw_file, &password)?;
            std::fs::set_permissions(&pw_file, std::fs::Permissions::from_mode(0o600))?;
            std::fs::create_dir_all(&data)?;
            std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700))?;
            if let Some(u) = &user {
                // The server account must reach its data through our directory.
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711))?;
                chown_tree(&data, u)?;
                nix::unistd::chown(&pw_file, Some(u.uid), Some(u.gid))?;
            }
            let out = command(&bin.join("initdb"), &user)
                .arg("-D")
                .arg(&data)
                .args([
                    "-U",
                    "hookit",
                    "--auth=scram-sha-256",
                    "-E",
                    "UTF8",
                    "--locale=C",
                ])
                .arg(format!("--pwfile={}", pw_file.display()))
                .output()
                .await
                .context("running initdb")?;
            if !out.status.success() {
                let _ = std::fs::remove_dir_all(&data);
                bail!("initdb failed: {}", String::from_utf8_lossy(&out.stderr));
            }
        }
        let password =
            std::fs::read_to_string(&pw_file).context("reading the embedded database password")?;
        let port = match opts.port {
            Some(p) => p,
            None => free_port()?,
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("postgres.log"))?;
        if let Some(u) = &user {
            nix::unistd::chown(&dir.join("postgres.log"), Some(u.uid), Some(u.gid))?;
        }
        let mut cmd = command(&bin.join("postgres"), &user);
        // Linux only (prctl); elsewhere the server is stopped on drop, and a
        // killed test process can leave it running.
        #[cfg(target_os = "linux")]
        if opts.die_with_parent {
            // SAFETY: prctl is async-signal-safe; it runs in the forked child after
            // the uid switch (which would otherwise clear the setting), before exec.
            unsafe {
                cmd.pre_exec(|| {
                    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGINT)
                        .map_err(std::io::Error::from)
                });
            }
        }
        let child = cmd
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string()])
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "unix_socket_directories=",
            ])
            .args([
                "-c",
                "max_connections=300",
                "-c",
                "shared_buffers=256MB",
                "-c",
                "max_wal_size=4GB",
            ])
            .args(["-c", "fsync=on", "-c", "synchronous_commit=on"])
            // Fewer full-page images in the WAL: checkpoints less often, and compressed.
            .args(["-c", "checkpoint_timeout=15min", "-c", "wal_compression=on"])
            .args(
                opts.settings
                    .iter()
                    .flat_map(|(k, v)| ["-c".to_string(), format!("{k}={v}")]),
            )
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("starting postgres")?;
        let url_base = format!(
            "postgres://hookit:{}@127.0.0.1:{port}",
            urlencode(password.trim())
        );
        let mut pg = Self {
            child: Some(child),
            url_base,
            data,
            port,
        };
        pg.wait_ready(dir).await?;
        Ok(pg)
    }

    async fn wait_ready(&mut self, dir: &Path) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    let log = std::fs::read_to_string(dir.join("postgres.log")).unwrap_or_default();
                    let tail: String = log
                        .lines()
                        .rev()
                        .take(10)
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .collect::<Vec<_>>()
                        .join("\n");
                    bail!("postgres exited during start-up ({status}):\n{tail}");
                }
            }
            use sqlx::Connection;
            if sqlx::PgConnection::connect(&self.url("postgres"))
                .await
                .is_ok()
            {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "postgres did not accept connections within 60 s; see {}",
                    dir.join("postgres.log").display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Connection URL of database `db`.
    pub fn url(&self, db: &str) -> String {
        format!("{}/{db}", self.url_base)
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// Fast shutdown: disconnects clients, checkpoints, exits.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown().await
    }

    async fn shutdown(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            if let Some(pid) = child.id() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGINT,
                );
            }
            match tokio::time::timeout(Duration::from_secs(30), child.wait()).await {
                Ok(r) => {
                    r?;
                }
                Err(_) => {
                    child.kill().await?;
                }
            }
        }
        Ok(())
    }

    /// The postmaster's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(|c| c.id())
    }
}

impl Drop for EmbeddedPg {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_ref().and_then(|c| c.id()) {
            // Fast shutdown on a best-effort basis; kill_on_drop covers the rest.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child as i32),
                nix::sys::signal::Signal::SIGINT,
            );
        }
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The default data directory of standalone mode.
pub fn default_data_dir() -> PathBuf {
    if nix::unistd::geteuid().is_root() {
        PathBuf::from("/var/lib/hookit")
    } else {
        dirs::data_dir()
            .unwrap_or_else(|| PathBuf::from("."))
            .join("hookit")
    }
}
