//! The `hookit` binary: key creation, signature verification, configuration
//! errors, and standalone mode with its embedded PostgreSQL.

use std::process::Stdio;
use std::time::Duration;

use hookit::domain::signing::Secret;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::common::{eventually, fresh_database};

fn hookit() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_hookit"));
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOOKIT_LOG_FORMAT", "text")
        .kill_on_drop(true);
    c
}

async fn verify(secret: &str, id: &str, ts: &str, sig: &str, body: &[u8]) -> (bool, String) {
    let mut child = hookit()
        .args([
            "verify",
            "--secret",
            secret,
            "--id",
            id,
            "--timestamp",
            ts,
            "--signature",
            sig,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // `verify` refuses a bad --secret before reading stdin, so the pipe may already
    // be closed: only the exit status and stderr say whether it verified.
    let mut stdin = child.stdin.take().unwrap();
    let _ = stdin.write_all(body).await;
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[tokio::test]
async fn verify_accepts_only_valid_fresh_signatures() {
    let s = Secret::generate();
    let now = chrono::Utc::now().timestamp();
    let body = br#"{"id":"evt_1","type":"a.b","data":{}}"#;
    let sig = s.sign("evt_1", now, body);
    let ts = now.to_string();
    assert!(verify(&s.expose(), "evt_1", &ts, &sig, body).await.0);
    let both = format!("{} {}", Secret::generate().sign("evt_1", now, body), sig);
    assert!(
        verify(&s.expose(), "evt_1", &ts, &both, body).await.0,
        "any matching signature in the list"
    );
    let (ok, why) = verify(&s.expose(), "evt_1", &ts, &sig, b"{}").await;
    assert!(!ok && why.contains("no signature matches"), "{why}");
    let old = now - 600;
    let (ok, why) = verify(
        &s.expose(),
        "evt_1",
        &old.to_string(),
        &s.sign("evt_1", old, body),
        body,
    )
    .await;
    assert!(!ok && why.contains("too old"), "{why}");
    let (ok, why) = verify("not-a-secret", "evt_1", &ts, &sig, body).await;
    assert!(!ok && why.contains("--secret"), "{why}");
}

#[tokio::test]
async fn bad_configuration_fails_at_start_naming_the_variable() {
    for (var, value) in [
        ("HOOKIT_RETRY_BASE", "soon"),
        ("HOOKIT_MASTER_KEY", "c2hvcnQ="),
        ("HOOKIT_ALLOW_PRIVATE_TARGETS", "10.0.0.0/33"),
    ] {
        let out = hookit()
            .arg("worker")
            .env(var, value)
            .output()
            .await
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{var}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(var), "{var}: {err}");
    }
    let out = hookit().arg("api").output().await.unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("DATABASE_URL"));
}

#[tokio::test]
async fn keys_create_prints_the_key_last_and_stores_only_its_hash() {
    let url = fresh_database().await;
    let out = hookit()
        .args(["keys", "create", "--tenant", "acme"])
        .env("DATABASE_URL", &url)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let key = stdout.lines().last().unwrap().trim().to_string();
    assert!(key.starts_with("hk_") && key.len() > 40);
    let pool = hookit::db::connect(&url, 1).await.unwrap();
    let (tenant, hash): (String, Vec<u8>) = sqlx::query_as("SELECT tenant, key_hash FROM api_keys")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(tenant, "acme");
    assert_eq!(hash, hookit::db::keys::hash_key(&key).to_vec());
    let bad = hookit()
        .args(["keys", "create", "--tenant", "Not Valid"])
        .env("DATABASE_URL", &url)
        .output()
        .await
        .unwrap();
    assert!(!bad.status.success());
}

#[tokio::test]
async fn standalone_runs_on_its_own_postgres_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let mut child = hookit()
        .arg("standalone")
        .env("HOOKIT_DATA_DIR", dir.path())
        .env("HOOKIT_LISTEN", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    eventually("standalone ready", Duration::from_secs(60), || async {
        matches!(http.get(format!("{base}/readyz")).send().await, Ok(r) if r.status() == 200)
    })
    .await;
    // `keys create` finds the running embedded cluster without a URL.
    let out = hookit()
        .args(["keys", "create", "--tenant", "acme"])
        .env("HOOKIT_DATA_DIR", dir.path())
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .to_string();
    let r = http
        .get(format!("{base}/v1/endpoints"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let key_file = dir.path().join("master.key");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777,
        0o600
    );

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id().unwrap() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("exits after SIGTERM")
        .unwrap();
    assert!(status.success());
    assert!(
        !dir.path().join("pgdata/postmaster.pid").exists(),
        "the embedded server was stopped"
    );
}
