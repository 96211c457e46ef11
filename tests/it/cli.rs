//! The `hookit` binary: key creation, signature verification, configuration
//! errors, and standalone mode with its embedded PostgreSQL.

use std::process::Stdio;
use std::time::Duration;

use hookit::domain::signing::Secret;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::common::{eventually, free_port, fresh_database};

/// SIGTERM, then the process must exit successfully within 30 s.
async fn stop_cleanly(child: &mut tokio::process::Child) {
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
}

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
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut child = hookit()
        .arg("standalone")
        .env("HOOKIT_DATA_DIR", dir.path())
        .env("HOOKIT_LISTEN", format!("127.0.0.1:{port}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let banner = {
        use tokio::io::AsyncBufReadExt;
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let mut text = String::new();
        tokio::time::timeout(Duration::from_secs(60), async {
            while let Ok(Some(l)) = lines.next_line().await {
                text.push_str(&l);
                text.push('\n');
                if l.contains("keys create") {
                    break;
                }
            }
        })
        .await
        .expect("the startup banner within 60 s");
        text
    };
    assert!(
        banner.contains(&format!("Dashboard:  {base}/"))
            && banner.contains(&format!("{base}/v1/"))
            && banner.contains("hookit keys create --tenant"),
        "the banner says where the API and dashboard are and how to get a key:\n{banner}"
    );
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

    stop_cleanly(&mut child).await;
    assert!(
        !dir.path().join("pgdata/postmaster.pid").exists(),
        "the embedded server was stopped"
    );
}

/// What Kubernetes injects into a pod for a Service named `hookit` with port 80
/// (`http`) when service links are on: the binary's own settings prefix.
const SERVICE_LINKS: &[(&str, &str)] = &[
    ("HOOKIT_SERVICE_HOST", "10.96.0.10"),
    ("HOOKIT_SERVICE_PORT", "80"),
    ("HOOKIT_SERVICE_PORT_HTTP", "80"),
    ("HOOKIT_PORT", "tcp://10.96.0.10:80"),
    ("HOOKIT_PORT_80_TCP", "tcp://10.96.0.10:80"),
    ("HOOKIT_PORT_80_TCP_PROTO", "tcp"),
    ("HOOKIT_PORT_80_TCP_PORT", "80"),
    ("HOOKIT_PORT_80_TCP_ADDR", "10.96.0.10"),
];

#[tokio::test]
async fn service_link_variables_change_nothing() {
    let url = fresh_database().await;
    let migrate = hookit()
        .arg("migrate")
        .env("DATABASE_URL", &url)
        .envs(SERVICE_LINKS.iter().copied())
        .output()
        .await
        .unwrap();
    assert!(
        migrate.status.success(),
        "{}",
        String::from_utf8_lossy(&migrate.stderr)
    );
    let (_api, _base) = spawn_api(&url, SERVICE_LINKS).await;
}

/// `hookit api` on a free port of 127.0.0.1 with `extra` variables, once ready;
/// returns the process and its base URL.
async fn spawn_api(url: &str, extra: &[(&str, &str)]) -> (tokio::process::Child, String) {
    let port = free_port();
    let api = hookit()
        .arg("api")
        .env("DATABASE_URL", url)
        .env(
            "HOOKIT_MASTER_KEY",
            hookit::domain::crypto::MasterKey::generate_base64(),
        )
        .env("HOOKIT_LISTEN", format!("127.0.0.1:{port}"))
        .envs(extra.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let ready = format!("{base}/readyz");
    eventually(
        "the API ready on its own address",
        Duration::from_secs(30),
        || async { matches!(http.get(&ready).send().await, Ok(r) if r.status() == 200) },
    )
    .await;
    (api, base)
}

/// `hookit keys …` against `url`: (success, stdout, stderr).
async fn keys(url: &str, args: &[&str]) -> (bool, String, String) {
    let out = hookit()
        .arg("keys")
        .args(args)
        .env("DATABASE_URL", url)
        .output()
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A created key: (id, key).
async fn create_key(url: &str, extra: &[&str]) -> (String, String) {
    let mut args = vec!["create", "--tenant", "acme"];
    args.extend_from_slice(extra);
    let (ok, out, err) = keys(url, &args).await;
    assert!(ok, "{err}");
    let key = out.lines().last().unwrap().trim().to_string();
    let id = out
        .split_whitespace()
        .nth(3)
        .expect("`Created API key <id> …`")
        .to_string();
    (id, key)
}

#[tokio::test]
async fn keys_can_be_listed_revoked_and_made_to_expire() {
    let url = fresh_database().await;
    let (_api, base) = spawn_api(&url, &[]).await;
    let (_, lasting) = create_key(&url, &["--name", "ci"]).await;
    let (_, brief) = create_key(&url, &["--expires-in", "2s"]).await;
    let (doomed_id, doomed) = create_key(&url, &[]).await;
    let http = reqwest::Client::new();
    let status = |key: String| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            http.get(format!("{base}/v1/endpoints"))
                .bearer_auth(key)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    for k in [&lasting, &brief, &doomed] {
        assert_eq!(status(k.clone()).await, 200);
    }

    let (ok, listed, _) = keys(&url, &["list", "--tenant", "acme"]).await;
    assert!(ok);
    assert_eq!(
        listed.lines().count(),
        4,
        "a header and three keys:\n{listed}"
    );
    for k in [&lasting, &brief, &doomed] {
        assert!(!listed.contains(k.as_str()), "a key was printed:\n{listed}");
        assert!(
            listed.contains(&format!("{}…", &k[..11])),
            "its prefix is shown:\n{listed}"
        );
    }
    assert!(listed.contains(" ci"), "{listed}");
    let (_, other, _) = keys(&url, &["list", "--tenant", "nobody"]).await;
    assert_eq!(other.lines().count(), 1, "only the header:\n{other}");

    // Revoked and expired keys are refused within the cache period (5 s).
    let (ok, out, err) = keys(&url, &["revoke", &doomed_id]).await;
    assert!(ok && out.contains("Revoked"), "{out}{err}");
    for (what, key) in [("revoked", doomed), ("expired", brief)] {
        eventually(
            &format!("the {what} key refused"),
            Duration::from_secs(15),
            || {
                let s = status(key.clone());
                async move { s.await == 401 }
            },
        )
        .await;
    }
    assert_eq!(status(lasting.clone()).await, 200);
    let (ok, _, err) = keys(&url, &["revoke", &uuid::Uuid::now_v7().to_string()]).await;
    assert!(!ok && err.contains("not found"), "{err}");
    let (ok, _, err) = keys(&url, &["revoke", "not-an-id"]).await;
    assert!(
        !ok && err.contains("ID"),
        "the bad argument is named: {err}"
    );

    // Last used, without a write per request: it shows up in the list.
    eventually("last used recorded", Duration::from_secs(10), || async {
        let (_, listed, _) = keys(&url, &["list"]).await;
        let row = listed
            .lines()
            .find(|l| l.contains(" ci"))
            .unwrap_or_default()
            .to_string();
        let states: Vec<&str> = listed
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().nth(3).unwrap_or(""))
            .collect();
        // created, last used and expires: the row of the lasting key has a time
        // (two words) where a never-used key has "-".
        row.split_whitespace().nth(6).is_some_and(|w| w != "-")
            && states.contains(&"revoked")
            && states.contains(&"expired")
    })
    .await;
}

/// Runs `hookit migrate` with stderr on a terminal (util-linux `script` gives it
/// a pseudo-terminal) or on a pipe, with HOOKIT_LOG_FORMAT unset; returns stderr.
async fn migrate_log(on_terminal: bool) -> String {
    let url = fresh_database().await;
    let bin = env!("CARGO_BIN_EXE_hookit");
    let out = if on_terminal {
        Command::new("script")
            .args(["-q", "-e", "-c", &format!("{bin} migrate"), "/dev/null"])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", &url)
            .output()
            .await
            .unwrap()
    } else {
        Command::new(bin)
            .arg("migrate")
            .env_clear()
            .env("DATABASE_URL", &url)
            .output()
            .await
            .unwrap()
    };
    assert!(out.status.success(), "{out:?}");
    // `script` puts the terminal's output on its stdout.
    let text = if on_terminal { out.stdout } else { out.stderr };
    String::from_utf8_lossy(&text).into_owned()
}

#[tokio::test]
async fn logs_are_text_on_a_terminal_and_json_otherwise() {
    if which("script").is_none() {
        eprintln!("SKIPPING: no `script` (util-linux) to make a terminal");
        return;
    }
    let piped = migrate_log(false).await;
    let line = piped
        .lines()
        .find(|l| l.contains("migrations applied"))
        .unwrap_or_else(|| panic!("{piped}"));
    let v: serde_json::Value = serde_json::from_str(line).expect("JSON on a pipe");
    assert_eq!(v["message"], "migrations applied");

    let terminal = migrate_log(true).await;
    let line = terminal
        .lines()
        .find(|l| l.contains("migrations applied"))
        .unwrap_or_else(|| panic!("{terminal}"));
    assert!(
        !line.trim_start().starts_with('{') && line.contains("INFO"),
        "text on a terminal: {line}"
    );
}

fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// `hookit standalone` on a machine without PostgreSQL server binaries: they are
/// hidden (a private mount namespace puts an empty tmpfs over
/// /usr/lib/postgresql, and PATH has no server), so standalone must download a
/// release, verify it, unpack it into its data dir and run on it.
#[tokio::test]
async fn standalone_downloads_postgres_when_none_is_installed() {
    if !nix::unistd::geteuid().is_root() || which("unshare").is_none() {
        eprintln!("SKIPPING: hiding the installed PostgreSQL needs root and unshare");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let path: Vec<_> = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .filter(|d| !d.join("initdb").exists())
        .collect();
    let mut child = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg("mount -t tmpfs tmpfs /usr/lib/postgresql && exec \"$0\" standalone")
        .arg(env!("CARGO_BIN_EXE_hookit"))
        .env_clear()
        .env("PATH", std::env::join_paths(path).unwrap())
        .env("HOOKIT_LOG_FORMAT", "text")
        .env("HOOKIT_DATA_DIR", dir.path())
        .env("HOOKIT_LISTEN", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    let ready = format!("http://127.0.0.1:{port}/readyz");
    eventually(
        "standalone ready on downloaded binaries",
        Duration::from_secs(180),
        || async { matches!(http.get(&ready).send().await, Ok(r) if r.status() == 200) },
    )
    .await;
    let bin = hookit::embedded_pg::download::bin_dir(dir.path());
    assert!(bin.join("initdb").is_file(), "unpacked into the data dir");
    let url = std::fs::read_to_string(dir.path().join("database.url")).unwrap();
    let pool = hookit::db::connect(url.trim(), 1).await.unwrap();
    let version: String = sqlx::query_scalar("SHOW server_version")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(
        hookit::embedded_pg::download::VERSION.starts_with(&version),
        "runs the downloaded release: {version}"
    );
    pool.close().await;
    stop_cleanly(&mut child).await;
}
