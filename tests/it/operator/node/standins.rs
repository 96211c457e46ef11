//! Images this machine cannot pull (no registry is reachable), replaced by
//! stand-ins that do the same job on the pod's address and port:
//! - `postgres:*`: a PostgreSQL server from the installed binaries, with the
//!   role and database created from `POSTGRES_USER` / `POSTGRES_PASSWORD` /
//!   `POSTGRES_DB`, as the image's entrypoint does; the pod's port forwards to it.
//! - `mendhak/http-https-echo:*`: a recording HTTP receiver on `HTTP_PORT`,
//!   which the test reads instead of the echo server's log.
//!
//! Any other image that is not HookIt's is refused, like an image pull that fails.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use hookit::embedded_pg::{EmbeddedPg, StartOptions};
use sqlx::Connection;

use super::net::NodeNet;
use crate::common::Receiver;

/// What runs a container.
pub enum Image {
    /// HookIt's image: the binary under test, sandboxed.
    Hookit,
    Postgres,
    Echo,
}

impl Image {
    /// The stand-in for `image`, or None when nothing here can run it.
    pub fn of(image: &str) -> Option<Self> {
        let repo = image.split(['@', ':']).next().unwrap_or_default();
        let last = repo.rsplit('/').next().unwrap_or_default();
        match (repo, last) {
            (_, "hookit") => Some(Image::Hookit),
            ("postgres" | "docker.io/library/postgres", _) => Some(Image::Postgres),
            (_, "http-https-echo") => Some(Image::Echo),
            _ => None,
        }
    }
}

/// A running stand-in; its tasks stop when it is dropped.
pub enum Running {
    Postgres {
        forward: tokio::task::JoinHandle<()>,
        _server: Box<EmbeddedPg>,
        _dir: tempfile::TempDir,
    },
    Echo(Arc<Receiver>),
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Running::Postgres { forward, .. } = self {
            forward.abort();
        }
    }
}

fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Starts the stand-in for `image` on `ip`, with the container's environment.
pub async fn start(
    net: &NodeNet,
    image: &Image,
    ip: Ipv4Addr,
    env: &HashMap<String, String>,
) -> Result<Running, String> {
    match image {
        Image::Hookit => Err("HookIt's image runs sandboxed, not as a stand-in".into()),
        Image::Echo => {
            let port: u16 = env
                .get("HTTP_PORT")
                .map(String::as_str)
                .unwrap_or("8080")
                .parse()
                .map_err(|_| "HTTP_PORT is not a port".to_string())?;
            let listener = net
                .listen(SocketAddr::from((ip, port)))
                .await
                .map_err(|e| format!("echo stand-in on {ip}:{port}: {e}"))?;
            Ok(Running::Echo(Arc::new(Receiver::start_on(listener))))
        }
        Image::Postgres => {
            let user = env
                .get("POSTGRES_USER")
                .cloned()
                .unwrap_or("postgres".into());
            let password = env
                .get("POSTGRES_PASSWORD")
                .cloned()
                .ok_or("POSTGRES_PASSWORD is not set (the image refuses to start)")?;
            let db = env.get("POSTGRES_DB").cloned().unwrap_or(user.clone());
            // A server of its own, like the image's: the test's shared server
            // already has a superuser named like the README's `hookit` role.
            let dir = tempfile::Builder::new()
                .prefix("hookit-node-pg-")
                .tempdir()
                .map_err(|e| e.to_string())?;
            let opts = StartOptions {
                die_with_parent: true,
                ..Default::default()
            };
            let pg = EmbeddedPg::start_with(dir.path(), &opts)
                .await
                .map_err(|e| format!("postgres stand-in: {e:#}"))?;
            let mut admin = sqlx::PgConnection::connect(&pg.url("postgres"))
                .await
                .map_err(|e| format!("postgres stand-in: {e}"))?;
            let role: Option<(i32,)> = sqlx::query_as("SELECT 1 FROM pg_roles WHERE rolname = $1")
                .bind(&user)
                .fetch_optional(&mut admin)
                .await
                .map_err(|e| e.to_string())?;
            let verb = if role.is_some() { "ALTER" } else { "CREATE" };
            let sql = format!(
                "{verb} ROLE {} LOGIN PASSWORD {}",
                quote_ident(&user),
                quote_literal(&password)
            );
            sqlx::query(&sql)
                .execute(&mut admin)
                .await
                .map_err(|e| e.to_string())?;
            let exists: Option<(i32,)> =
                sqlx::query_as("SELECT 1 FROM pg_database WHERE datname = $1")
                    .bind(&db)
                    .fetch_optional(&mut admin)
                    .await
                    .map_err(|e| e.to_string())?;
            if exists.is_none() {
                let sql = format!(
                    "CREATE DATABASE {} OWNER {}",
                    quote_ident(&db),
                    quote_ident(&user)
                );
                sqlx::query(&sql)
                    .execute(&mut admin)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            let listener = net
                .listen(SocketAddr::from((ip, 5432)))
                .await
                .map_err(|e| format!("postgres stand-in on {ip}:5432: {e}"))?;
            let server = SocketAddr::from(([127, 0, 0, 1], pg.port()));
            let forward = tokio::spawn(async move {
                while let Ok((mut conn, _)) = listener.accept().await {
                    tokio::spawn(async move {
                        if let Ok(mut up) = tokio::net::TcpStream::connect(server).await {
                            let _ = tokio::io::copy_bidirectional(&mut conn, &mut up).await;
                        }
                    });
                }
            });
            Ok(Running::Postgres {
                forward,
                _server: Box::new(pg),
                _dir: dir,
            })
        }
    }
}
