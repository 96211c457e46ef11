//! `hookit`: one binary, a subcommand per role.

use std::io::Read;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use hookit::config::Config;
use hookit::domain::signing::{verify, Secret};
use hookit::{roles, telemetry};

/// mimalloc rather than glibc's malloc: the request and delivery paths allocate
/// many small, short-lived buffers from several threads, and glibc's allocator
/// spent about a tenth of the API's and the worker's CPU (measured with `perf`
/// under `hookit bench`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "hookit",
    version,
    about = "Webhook delivery with at-least-once guarantees on PostgreSQL"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// API and workers in one process; starts a private PostgreSQL when DATABASE_URL is unset.
    Standalone,
    /// The HTTP API only.
    Api,
    /// A delivery worker only (run as many as you like).
    Worker,
    /// Apply the database migrations.
    Migrate,
    /// The Kubernetes controller for WebhookEndpoint resources.
    Controller,
    /// Print the WebhookEndpoint CustomResourceDefinition as YAML.
    Crd,
    /// Standalone mode with a built-in receiver you can take down, and live events
    /// (optionally real prices, into a real Discord or Slack channel).
    Demo(hookit::demo::options::DemoArgs),
    /// Benchmark HookIt (starts its own, or drives one at --target).
    Bench(BenchCli),
    /// Manage API keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Verify a webhook signature (body on stdin); exit 0 only if it is valid.
    Verify {
        /// The endpoint secret, `whsec_…`.
        #[arg(long)]
        secret: String,
        /// The `webhook-id` header.
        #[arg(long)]
        id: String,
        /// The `webhook-timestamp` header.
        #[arg(long)]
        timestamp: String,
        /// The `webhook-signature` header.
        #[arg(long)]
        signature: String,
    },
}

#[derive(clap::Args)]
struct BenchCli {
    /// Scenarios to run, comma-separated: ingest, ingest-batch, deliver, latency, backlog,
    /// noisy, fleet (1,000 slow endpoints on distinct loopback hosts), scale (1-8 worker
    /// and 1-4 API processes, with Postgres's wait events) and transform (delivery with
    /// and without a 10-line transformation, and the engine's compile and call cost) and
    /// tracing (delivery with OpenTelemetry export off, on, and sampled at 10 %);
    /// the last four are not in the default set.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "ingest,ingest-batch,deliver,latency,backlog,noisy"
    )]
    scenario: Vec<String>,
    /// Measurement window of each case, seconds.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Concurrent publishers.
    #[arg(long, default_value_t = 64)]
    publishers: usize,
    /// Deliveries to queue in the backlog scenario.
    #[arg(long, default_value_t = 1_000_000)]
    backlog: u64,
    /// Worker process counts of the deliver scenario.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    workers: Vec<usize>,
    /// Offered rates of the latency scenario, events/s.
    #[arg(long, value_delimiter = ',', default_value = "100,500,2000")]
    rates: Vec<u64>,
    /// Drive a running HookIt at this URL instead of starting one.
    #[arg(long)]
    target: Option<String>,
    /// API key for --target.
    #[arg(long)]
    api_key: Option<String>,
    /// Print the results as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create an API key for a tenant; the key alone is the last line of stdout.
    Create {
        /// Tenant name (lowercase letters, digits, '-').
        #[arg(long)]
        tenant: String,
        /// A label for the key.
        #[arg(long)]
        name: Option<String>,
        /// Refuse the key after this long, e.g. 90d, 12h (default: never).
        #[arg(long, value_parser = humantime::parse_duration)]
        expires_in: Option<std::time::Duration>,
    },
    /// List API keys: id, prefix, tenant, state, created, last used, expiry. Never the key.
    List {
        /// Only this tenant's.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Revoke an API key by id (from `hookit keys list`); the API refuses it
    /// within 5 seconds (each process caches key lookups that long).
    Revoke {
        /// The key's id.
        id: uuid::Uuid,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Verify {
        secret,
        id,
        timestamp,
        signature,
    } = &cli.command
    {
        return verify_command(secret, id, timestamp, signature);
    }
    if let Command::Crd = &cli.command {
        return match hookit::operator::crd_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("hookit crd: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let cfg = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("hookit: {e}");
            return ExitCode::from(2);
        }
    };
    // The demo's flags are checked before anything starts; the error names the
    // flag and never echoes a webhook URL (clap would, for a value parser's error).
    let demo = match &cli.command {
        Command::Demo(args) => match args.validate(&cfg.ssrf_policy()) {
            Ok(o) => Some(o),
            Err(e) => {
                eprintln!("hookit demo: {e}");
                return ExitCode::from(2);
            }
        },
        _ => None,
    };
    // rustls' process-wide provider: ring, the one every HTTP client here uses
    // (the OTLP exporter's client asks for the default rather than bring its own).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let _otel = match telemetry::init(cfg.log_format, cfg.tracing.as_ref()) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("hookit: cannot start the OpenTelemetry exporter: {e:#}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hookit: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async move {
        let shutdown = CancellationToken::new();
        roles::shutdown_on_signals(shutdown.clone());
        match cli.command {
            Command::Standalone => roles::standalone(cfg, shutdown).await,
            Command::Api => roles::api(cfg, shutdown).await,
            Command::Worker => roles::worker(cfg, shutdown).await,
            Command::Migrate => roles::migrate(cfg).await,
            Command::Controller => hookit::operator::run(cfg, shutdown).await,
            Command::Demo(_) => {
                let opts = demo.unwrap_or_default();
                hookit::demo::run(cfg, opts, shutdown).await
            }
            Command::Bench(b) => {
                let args = hookit::bench::BenchArgs {
                    scenarios: b.scenario,
                    duration: std::time::Duration::from_secs(b.duration.max(1)),
                    publishers: b.publishers.max(1),
                    backlog: b.backlog,
                    workers: b.workers,
                    rates: b.rates,
                    target: b.target,
                    api_key: b.api_key,
                    data_dir: cfg.data_dir.clone(),
                    database_url: cfg.database_url.clone(),
                };
                let rows = hookit::bench::run(&args).await?;
                if b.json {
                    println!("{}", serde_json::to_string_pretty(&rows)?);
                } else {
                    hookit::bench::print_table(&rows);
                }
                Ok(())
            }
            Command::Keys { command: KeysCommand::Create { tenant, name, expires_in } } => {
                let (id, key, expires) =
                    hookit::keys::create(&cfg, &tenant, name.as_deref(), expires_in).await?;
                let until = expires
                    .map(|e| format!(", valid until {}", e.format("%Y-%m-%d %H:%M:%S UTC")))
                    .unwrap_or_default();
                println!("Created API key {id} for tenant `{tenant}`{until}. It is shown only once; store it now:");
                println!("{key}");
                Ok(())
            }
            Command::Keys { command: KeysCommand::List { tenant } } => {
                let keys = hookit::keys::list(&cfg, tenant.as_deref()).await?;
                print!("{}", hookit::keys::table(&keys));
                Ok(())
            }
            Command::Keys { command: KeysCommand::Revoke { id } } => {
                let k = hookit::keys::revoke(&cfg, id).await?;
                println!("Revoked API key {} of tenant `{}`.", k.id, k.tenant);
                Ok(())
            }
            Command::Verify { .. } | Command::Crd => unreachable!("handled before the runtime starts"),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hookit: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn verify_command(secret: &str, id: &str, timestamp: &str, signature: &str) -> ExitCode {
    let secret = match Secret::parse(secret) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("hookit verify: --secret: {e}");
            return ExitCode::from(2);
        }
    };
    let mut body = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut body) {
        eprintln!("hookit verify: cannot read the body from stdin: {e}");
        return ExitCode::from(2);
    }
    let now = chrono::Utc::now().timestamp();
    match verify(&secret, id, timestamp, signature, &body, now) {
        Ok(()) => {
            println!("valid signature");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("hookit verify: invalid: {e}");
            ExitCode::FAILURE
        }
    }
}
