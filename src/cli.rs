//! Command-line flags (each also read from `PUSHROLL_<FLAG>`), in one group
//! per concern, flattened into the subcommands that share it. Each
//! subcommand's flags resolve into the plain config struct of its command
//! (`cmd::*`), which tests build directly.

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::auth::{AuthConfig, AuthMode};
use crate::cmd::approve::ApproveConfig;
use crate::cmd::index::{IndexConfig, IndexMode, Output};
use crate::cmd::lookup::LookupConfig;
use crate::cmd::pending::PendingConfig;
use crate::cmd::serve::ServeConfig;
use crate::cmd::{ClusterConfig, SourceConfig};
use crate::index::store::OnMiss;
use crate::indexer::WatchSettings;
use crate::k8s::Pod;
use crate::pull::PullConfig;
use crate::server::conn::ConnLimits;
use crate::workload::{Kind, Mode, NamespaceFilter};

/// The demo's index, compiled in so `serve --demo` works from any directory.
pub(crate) const DEMO_INDEX: &str = include_str!("../examples/index.json");
const DEMO_INDEX_PATH: &str = "examples/index.json";
const DEMO_LISTEN: &str = "127.0.0.1:8080";

#[derive(Debug, Parser)]
#[command(
    name = "pushroll",
    version,
    about = "Restarts Kubernetes workloads the moment a new container image is pushed"
)]
pub struct Cli {
    #[command(flatten)]
    pub log: LogArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the Pub/Sub push webhook server.
    Serve(Box<ServeArgs>),
    /// Scan the cluster and write the index ConfigMap (or `--output`); with
    /// `--watch`, keep it current.
    Index(IndexArgs),
    /// Print the workloads that a push of IMAGE would restart.
    Lookup(LookupArgs),
    /// Approve the push waiting on a workload (`pushroll.io/approval: required`).
    Approve(ApproveArgs),
    /// List the pushes waiting on workloads (approval, window, interval).
    Pending(PendingArgs),
}

// ---- flag groups shared by several subcommands ----

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// JSON when stdout is not a terminal (in a cluster), text on a terminal.
    Auto,
    Json,
    Text,
}

#[derive(Debug, Args)]
pub struct LogArgs {
    /// Log format.
    #[arg(long, global = true, env = "PUSHROLL_LOG_FORMAT", value_enum, default_value_t = LogFormat::Auto)]
    pub log_format: LogFormat,
    /// Log filter in `tracing` syntax (e.g. `info`, `pushroll=debug`).
    #[arg(
        long,
        global = true,
        env = "PUSHROLL_LOG_LEVEL",
        default_value = "info"
    )]
    pub log_level: String,
}

impl LogArgs {
    /// Whether logs are JSON: `auto` means JSON unless stderr is a terminal.
    pub fn json(&self) -> bool {
        match self.log_format {
            LogFormat::Json => true,
            LogFormat::Text => false,
            LogFormat::Auto => !std::io::stderr().is_terminal(),
        }
    }
}

/// The cluster connection and the index ConfigMap (serve, lookup, index).
#[derive(Debug, Clone, Args)]
pub struct ClusterArgs {
    /// `NAME` or `NAMESPACE/NAME` of the index ConfigMap.
    #[arg(
        long,
        env = "PUSHROLL_INDEX_CONFIGMAP",
        default_value = "pushroll-index"
    )]
    pub index_configmap: String,
    /// Timeout of each Kubernetes API call.
    #[arg(long, env = "PUSHROLL_API_TIMEOUT", value_parser = humantime::parse_duration, default_value = "5s")]
    pub api_timeout: Duration,
}

impl ClusterArgs {
    pub fn resolve(&self) -> Result<ClusterConfig, ConfigError> {
        let (configmap_namespace, configmap_name) = parse_configmap(&self.index_configmap)?;
        Ok(ClusterConfig {
            configmap_namespace,
            configmap_name,
            api_timeout: self.api_timeout,
        })
    }
}

/// The namespaces pushroll indexes and restarts (serve, index).
#[derive(Debug, Clone, Args)]
pub struct NamespaceArgs {
    /// Namespaces to index and restart (all when empty).
    #[arg(long, env = "PUSHROLL_NAMESPACE", value_delimiter = ',')]
    pub namespace: Vec<String>,
    /// Namespaces never indexed or restarted.
    #[arg(long, env = "PUSHROLL_EXCLUDE_NAMESPACE", value_delimiter = ',')]
    pub exclude_namespace: Vec<String>,
}

impl NamespaceArgs {
    pub fn filter(&self) -> NamespaceFilter {
        NamespaceFilter {
            include: self.namespace.clone(),
            exclude: self.exclude_namespace.clone(),
        }
    }
}

/// Where the index comes from (serve, lookup).
#[derive(Debug, Clone, Args)]
pub struct SourceArgs {
    /// The mounted index (a ConfigMap volume); a sibling `index.json.gz` is read too.
    #[arg(long, env = "PUSHROLL_INDEX_FILE")]
    pub index_file: Option<PathBuf>,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// What a lookup that finds nothing in the mounted index does.
    #[arg(long, env = "PUSHROLL_ON_MISS", value_enum, default_value_t = OnMiss::Configmap)]
    pub on_miss: OnMiss,
    /// At most one ConfigMap GET per interval on misses, shared by concurrent misses.
    #[arg(long, env = "PUSHROLL_MISS_REFRESH_INTERVAL", value_parser = humantime::parse_duration, default_value = "10s")]
    pub miss_refresh_interval: Duration,
    /// With `--on-miss scan`: at most one cluster scan per interval.
    #[arg(long, env = "PUSHROLL_SCAN_INTERVAL", value_parser = humantime::parse_duration, default_value = "30s")]
    pub scan_interval: Duration,
    /// Safety-net re-read of the index file (it is also watched for changes).
    #[arg(long, env = "PUSHROLL_INDEX_RELOAD_INTERVAL", value_parser = humantime::parse_duration, default_value = "30s")]
    pub index_reload_interval: Duration,
    /// The largest index read, in bytes of (decompressed) JSON; a larger one
    /// is refused and the last good index stays [default: an eighth of the
    /// container's memory limit, within 2-64 MiB; 16 MiB without a limit].
    #[arg(long, env = "PUSHROLL_MAX_INDEX_BYTES", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_index_bytes: Option<u64>,
}

impl SourceArgs {
    pub fn resolve(&self, demo: bool) -> Result<SourceConfig, ConfigError> {
        let file = match (&self.index_file, demo) {
            (Some(f), _) => f.clone(),
            (None, true) => PathBuf::from(DEMO_INDEX_PATH),
            (None, false) => PathBuf::from("/etc/pushroll/index.json"),
        };
        // The embedded copy stands in only for the demo's own default path.
        let embedded = (demo && self.index_file.is_none()).then_some(DEMO_INDEX);
        Ok(SourceConfig {
            file,
            embedded,
            cluster: self.cluster.resolve()?,
            on_miss: self.on_miss,
            miss_refresh_interval: self.miss_refresh_interval,
            scan_interval: self.scan_interval,
            reload_interval: self.index_reload_interval,
            max_index_bytes: self.max_index_bytes,
        })
    }
}

/// Settings of the watch indexer, shared by `index --watch` and
/// `serve --indexer` (one definition: same flags, defaults and variables).
#[derive(Debug, Clone, Args)]
pub struct WatchArgs {
    /// Quiet time after a change before the index is rebuilt and the ConfigMap written.
    #[arg(long, env = "PUSHROLL_DEBOUNCE", value_parser = humantime::parse_duration, default_value = "2s")]
    pub debounce: Duration,
    /// The coordination.k8s.io Lease that elects the one writer.
    #[arg(long, env = "PUSHROLL_LEASE_NAME", default_value = "pushroll-indexer")]
    pub lease_name: String,
    /// How long a leader's Lease lasts without renewal.
    #[arg(long, env = "PUSHROLL_LEASE_DURATION", value_parser = humantime::parse_duration, default_value = "15s")]
    pub lease_duration: Duration,
    /// A watch task that spends longer than this on one step (not waiting on the API server) is stalled: `/healthz` then fails, so the kubelet restarts the process. Above the slowest write (three API calls of --api-timeout each).
    #[arg(long, env = "PUSHROLL_STALL_TIMEOUT", value_parser = humantime::parse_duration, default_value = "60s")]
    pub stall_timeout: Duration,
    /// A rollout pushroll started that is not complete this long after its restartedAt is reported failed (PushRolloutFailed); older rollouts found at start are not reported.
    #[arg(long, env = "PUSHROLL_ROLLOUT_TIMEOUT", value_parser = humantime::parse_duration, default_value = "10m")]
    pub rollout_timeout: Duration,
    /// POST one JSON document per happening (restarted, pending, rollout-complete, rollout-failed, image-stale, undone) to this URL; repeatable. A secret: only its host is logged.
    #[arg(
        long,
        env = "PUSHROLL_NOTIFY_URL",
        value_delimiter = ',',
        hide_env_values = true,
        value_parser = SecretUrl
    )]
    pub notify_url: Vec<reqwest::Url>,
    /// `json` (the documented document) or `slack` (an incoming-webhook `{"text": …}`, which Google Chat takes too).
    #[arg(long, env = "PUSHROLL_NOTIFY_FORMAT", value_enum, default_value_t = crate::notify::Format::Json)]
    pub notify_format: crate::notify::Format,
}

/// Parses `--notify-url` without ever echoing it: clap's own errors quote
/// the value, and a webhook URL's path is its key (a URL missing its
/// scheme would land whole in the pod's log).
#[derive(Clone)]
struct SecretUrl;

impl clap::builder::TypedValueParser for SecretUrl {
    type Value = reqwest::Url;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<reqwest::Url, clap::Error> {
        let why = match value.to_str() {
            Some(text) => match crate::notify::parse_receiver(text) {
                Ok(url) => return Ok(url),
                Err(why) => why,
            },
            None => "not UTF-8".to_owned(),
        };
        let name = arg.map_or_else(|| "--notify-url".to_owned(), ToString::to_string);
        let message = format!("invalid value for {name}: {why} (not shown: the URL is a secret)\n");
        Err(clap::Error::raw(clap::error::ErrorKind::ValueValidation, message).with_cmd(cmd))
    }
}

impl WatchArgs {
    /// The Lease holder is the pod (`POD_NAME`), or this process when not
    /// in a pod.
    pub fn resolve(&self) -> WatchSettings {
        let identity = Pod::from_env()
            .name
            .unwrap_or_else(|| format!("pushroll-indexer-{}", std::process::id()));
        WatchSettings {
            debounce: self.debounce,
            lease_name: self.lease_name.clone(),
            lease_duration: self.lease_duration,
            identity,
            stall_timeout: self.stall_timeout,
            rollout_timeout: self.rollout_timeout,
            notify: self.notify(),
        }
    }

    pub fn notify(&self) -> crate::notify::NotifyConfig {
        crate::notify::NotifyConfig {
            urls: self.notify_url.clone(),
            format: self.notify_format,
        }
    }
}

/// Token verification (serve).
#[derive(Debug, Args)]
pub struct AuthArgs {
    /// Token verification [default: google].
    #[arg(long, env = "PUSHROLL_AUTH", value_enum)]
    pub auth: Option<AuthMode>,
    /// Accepted `aud` values; required with `--auth google`.
    #[arg(long, env = "PUSHROLL_AUDIENCE", value_delimiter = ',')]
    pub audience: Vec<String>,
    /// Accepted service-account `email` values (any verified one when empty).
    #[arg(long, env = "PUSHROLL_ALLOWED_EMAIL", value_delimiter = ',')]
    pub allowed_email: Vec<String>,
    /// Google's signing keys (JWK set).
    #[arg(
        long,
        env = "PUSHROLL_JWKS_URL",
        default_value = "https://www.googleapis.com/oauth2/v3/certs"
    )]
    pub jwks_url: String,
    // Why a day: Google's certs endpoint answers with a `max-age` of about
    // 5 to 7 hours, and Google publishes a key before it signs with it and
    // keeps a retired one published for days. A day is several missed
    // refresh windows (an outage of the endpoint, or of our egress, rides
    // through), yet well inside a rotation: a key Google has withdrawn is
    // trusted at most a day after we last heard from Google.
    /// Signing keys not refreshed for this long are no longer trusted: not
    /// ready, and pushes 503, until a fetch succeeds.
    #[arg(long, env = "PUSHROLL_MAX_KEY_AGE", value_parser = humantime::parse_duration, default_value = "24h")]
    pub max_key_age: Duration,
    /// Accepted `iss` values.
    #[arg(
        long,
        env = "PUSHROLL_ISSUER",
        value_delimiter = ',',
        default_value = "https://accounts.google.com,accounts.google.com"
    )]
    pub issuer: Vec<String>,
    /// Only these `projects/P/subscriptions/S` are accepted when given.
    #[arg(long, env = "PUSHROLL_SUBSCRIPTION", value_delimiter = ',')]
    pub subscription: Vec<String>,
}

impl AuthArgs {
    /// `demo`: verification defaults to off.
    pub fn resolve(&self, demo: bool) -> Result<AuthConfig, ConfigError> {
        let mode = self.auth.unwrap_or(if demo {
            AuthMode::None
        } else {
            AuthMode::Google
        });
        if mode == AuthMode::Google && self.audience.is_empty() {
            return Err(ConfigError::NoAudience);
        }
        if self.max_key_age < Duration::from_secs(1) {
            return Err(ConfigError::KeyAge);
        }
        Ok(AuthConfig {
            mode,
            audiences: self.audience.clone(),
            allowed_emails: self.allowed_email.clone(),
            jwks_url: self.jwks_url.clone(),
            issuers: self.issuer.clone(),
            subscriptions: self.subscription.clone(),
            max_key_age: self.max_key_age,
        })
    }
}

/// Limits on connections and request heads (serve).
#[derive(Debug, Args)]
pub struct ConnArgs {
    /// Larger request heads (request line and headers) are refused.
    #[arg(long, env = "PUSHROLL_MAX_HEADER_BYTES", default_value_t = 16384)]
    pub max_header_bytes: usize,
    /// A connection that has not started a request this long after it was
    /// accepted is closed (silent clients, a stalled HTTP/2 preface, a slow head).
    #[arg(long, env = "PUSHROLL_HEADER_READ_TIMEOUT", value_parser = humantime::parse_duration, default_value = "10s")]
    pub header_read_timeout: Duration,
    /// A kept-alive connection with no request for this long is closed; keep it
    /// above the load balancer's own (Google's: 600s) so that it closes first.
    #[arg(long, env = "PUSHROLL_IDLE_TIMEOUT", value_parser = humantime::parse_duration, default_value = "620s")]
    pub idle_timeout: Duration,
    /// Connections open at once; further ones are closed as soon as accepted.
    #[arg(long, env = "PUSHROLL_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,
}

impl ConnArgs {
    pub fn resolve(&self) -> Result<ConnLimits, ConfigError> {
        if self.max_header_bytes < 8192 {
            return Err(ConfigError::HeaderBytes);
        }
        if self.header_read_timeout.is_zero() {
            return Err(ConfigError::HeaderReadTimeout);
        }
        if self.idle_timeout <= self.header_read_timeout {
            return Err(ConfigError::IdleTimeout {
                idle: self.idle_timeout,
                header: self.header_read_timeout,
            });
        }
        if !(1..=ConnLimits::MAX_MAX_CONNECTIONS).contains(&self.max_connections) {
            return Err(ConfigError::MaxConnections {
                max: ConnLimits::MAX_MAX_CONNECTIONS,
            });
        }
        Ok(ConnLimits {
            max_header_bytes: self.max_header_bytes,
            header_read_timeout: self.header_read_timeout,
            idle_timeout: self.idle_timeout,
            max_connections: self.max_connections,
        })
    }
}

// ---- the subcommands ----

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The embedded default: `--listen 127.0.0.1:8080 --index-file examples/index.json
    /// --auth none --dry-run`, no cluster; flags given beside it override it.
    #[arg(long, env = "PUSHROLL_DEMO")]
    pub demo: bool,
    /// Address to bind [default: 0.0.0.0:8080].
    #[arg(long, env = "PUSHROLL_LISTEN")]
    pub listen: Option<String>,
    #[command(flatten)]
    pub index: SourceArgs,
    /// Also run the watch indexer in this process (as `index --watch` does:
    /// one replica writes the ConfigMap through the Lease), and answer
    /// lookups from its index as soon as its initial lists are done.
    #[arg(long, env = "PUSHROLL_INDEXER")]
    pub indexer: bool,
    // --debounce, --lease-name, --lease-duration: used with --indexer.
    #[command(flatten)]
    pub watch_args: WatchArgs,
    /// Resolve and report, patch nothing.
    #[arg(long, env = "PUSHROLL_DRY_RUN", num_args = 0..=1, default_missing_value = "true")]
    pub dry_run: Option<bool>,
    /// How a push rolls a workload without a `pushroll.io/mode` annotation: `restart` (the pod template's annotations only, as `kubectl rollout restart`) or `pin` (also the matching containers' images, to `R:T@sha256:D`).
    #[arg(long, env = "PUSHROLL_MODE", value_enum, default_value_t = Mode::Restart)]
    pub mode: Mode,
    /// Restart only workloads annotated `pushroll.io/restart: "true"`; the others are `excluded`.
    #[arg(long, env = "PUSHROLL_OPT_IN")]
    pub opt_in: bool,
    #[command(flatten)]
    pub auth: AuthArgs,
    #[command(flatten)]
    pub namespaces: NamespaceArgs,
    /// Larger bodies get 413.
    #[arg(long, env = "PUSHROLL_MAX_BODY_BYTES", default_value_t = 65536)]
    pub max_body_bytes: usize,
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Workloads patched at once, across all pushes.
    #[arg(long, env = "PUSHROLL_MAX_CONCURRENT_RESTARTS", default_value_t = 8)]
    pub max_concurrent_restarts: usize,
    /// A push not answered by then gets 503 (Pub/Sub redelivers).
    #[arg(long, env = "PUSHROLL_REQUEST_TIMEOUT", value_parser = humantime::parse_duration, default_value = "60s")]
    pub request_timeout: Duration,
    /// How long in-flight pushes may finish after SIGTERM.
    #[arg(long, env = "PUSHROLL_SHUTDOWN_TIMEOUT", value_parser = humantime::parse_duration, default_value = "25s")]
    pub shutdown_timeout: Duration,
    /// Registry webhook secrets: one file per source (`distribution`, `harbor`, `github`, `ecr`, `dockerhub`, `quay`), re-read when it changes; a source without a file is disabled (404).
    #[arg(
        long,
        env = "PUSHROLL_WEBHOOK_SECRETS",
        default_value = "/etc/pushroll/webhooks"
    )]
    pub webhook_secrets: PathBuf,
    /// `HOST=URL`: send a registry's API calls (the digest lookups of Docker Hub and Quay webhooks) to URL instead, e.g. a mirror or a local registry. Repeatable.
    #[arg(long, env = "PUSHROLL_REGISTRY_ENDPOINT", value_delimiter = ',', value_parser = crate::webhook::resolve::parse_endpoint)]
    pub registry_endpoint: Vec<(String, String)>,
    #[command(flatten)]
    pub pull: PullArgs,
}

/// Pub/Sub pull (serve): for clusters with no public endpoint.
#[derive(Debug, Args)]
pub struct PullArgs {
    /// Also receive the messages of this `projects/P/subscriptions/S` by
    /// StreamingPull (repeatable): Application Default Credentials, or the
    /// emulator when `PUBSUB_EMULATOR_HOST` is set.
    #[arg(long, env = "PUSHROLL_PULL_SUBSCRIPTION", value_delimiter = ',')]
    pub pull_subscription: Vec<String>,
    /// Messages received and not yet acked, per subscription (flow control).
    #[arg(long, env = "PUSHROLL_PULL_MAX_OUTSTANDING", default_value_t = 64)]
    pub pull_max_outstanding: usize,
    /// `/readyz` is 503 once no stream to a subscription has been open this long.
    #[arg(long, env = "PUSHROLL_PULL_READY_TIMEOUT", value_parser = humantime::parse_duration, default_value = "60s")]
    pub pull_ready_timeout: Duration,
}

impl PullArgs {
    fn resolve(&self) -> Result<Option<PullConfig>, ConfigError> {
        if self.pull_subscription.is_empty() {
            return Ok(None);
        }
        for s in &self.pull_subscription {
            if !is_subscription_name(s) {
                return Err(ConfigError::PullSubscription(s.clone()));
            }
        }
        if self.pull_max_outstanding == 0 {
            return Err(ConfigError::PullMaxOutstanding);
        }
        Ok(Some(PullConfig {
            subscriptions: self.pull_subscription.clone(),
            max_outstanding: self.pull_max_outstanding,
            ready_timeout: self.pull_ready_timeout,
        }))
    }
}

/// `projects/P/subscriptions/S`, both parts non-empty and without `/`.
fn is_subscription_name(s: &str) -> bool {
    matches!(
        s.split('/').collect::<Vec<_>>().as_slice(),
        ["projects", p, "subscriptions", n] if !p.is_empty() && !n.is_empty()
    )
}

impl ServeArgs {
    /// Applies `--demo`'s defaults under the flags given and checks them.
    pub fn resolve(&self) -> Result<ServeConfig, ConfigError> {
        let demo = self.demo;
        let listen = match (&self.listen, demo) {
            (Some(l), _) => l.clone(),
            (None, true) => DEMO_LISTEN.to_owned(),
            (None, false) => "0.0.0.0:8080".to_owned(),
        };
        let auth = self.auth.resolve(demo)?;
        let conn = self.conn.resolve()?;
        if self.indexer && demo {
            return Err(ConfigError::IndexerDemo);
        }
        // An error rather than a warning: a setting that silently does
        // nothing (and that RBAC was widened for) is worse than a clear stop.
        if self.indexer && self.index.on_miss == OnMiss::Scan {
            return Err(ConfigError::IndexerScan);
        }
        Ok(ServeConfig {
            listen: parse_listen(&listen)?,
            index: self.index.resolve(demo)?,
            dry_run: self.dry_run.unwrap_or(demo),
            mode: self.mode,
            opt_in: self.opt_in,
            notify: self.watch_args.notify(),
            offline: demo,
            auth,
            namespaces: self.namespaces.filter(),
            indexer: self.indexer.then(|| self.watch_args.resolve()),
            max_body_bytes: self.max_body_bytes,
            conn,
            max_concurrent_restarts: self.max_concurrent_restarts,
            request_timeout: self.request_timeout,
            shutdown_timeout: self.shutdown_timeout,
            pull: self.pull.resolve()?,
            webhook_secrets: self.webhook_secrets.clone(),
            registry_endpoints: self.registry_endpoint.iter().cloned().collect(),
        })
    }
}

#[derive(Debug, Args)]
pub struct IndexArgs {
    /// Write the index JSON to FILE (`-`: standard output) instead of the ConfigMap.
    #[arg(long, env = "PUSHROLL_OUTPUT", conflicts_with = "watch")]
    pub output: Option<String>,
    /// Keep the ConfigMap current from watches (one leader among replicas).
    #[arg(long, env = "PUSHROLL_WATCH")]
    pub watch: bool,
    /// Address of `/healthz`, `/readyz`, `/metrics` with `--watch`.
    #[arg(long, env = "PUSHROLL_LISTEN", default_value = "0.0.0.0:8081")]
    pub listen: String,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[command(flatten)]
    pub namespaces: NamespaceArgs,
    #[command(flatten)]
    pub watch_args: WatchArgs,
}

impl IndexArgs {
    pub fn resolve(&self) -> Result<IndexConfig, ConfigError> {
        let mode = if self.watch {
            IndexMode::Watch {
                listen: parse_listen(&self.listen)?,
                settings: self.watch_args.resolve(),
            }
        } else {
            IndexMode::Once {
                output: self.output.as_deref().map(|o| match o {
                    "-" => Output::Stdout,
                    path => Output::File(PathBuf::from(path)),
                }),
            }
        };
        Ok(IndexConfig {
            cluster: self.cluster.resolve()?,
            namespaces: self.namespaces.filter(),
            mode,
        })
    }
}

#[derive(Debug, Args)]
pub struct LookupArgs {
    /// The image reference, e.g. `us-east1-docker.pkg.dev/p/r/app:v1`.
    pub image: String,
    #[command(flatten)]
    pub index: SourceArgs,
    /// Print JSON instead of a table.
    #[arg(long, env = "PUSHROLL_JSON")]
    pub json: bool,
}

impl LookupArgs {
    pub fn resolve(&self) -> Result<LookupConfig, ConfigError> {
        Ok(LookupConfig {
            image: self.image.clone(),
            index: self.index.resolve(false)?,
            json: self.json,
        })
    }
}

#[derive(Debug, Args)]
pub struct ApproveArgs {
    /// The workload: `deployment/NAME`, `statefulset/NAME` or `daemonset/NAME` (kubectl's short names `deploy`, `sts`, `ds` work too).
    #[arg(value_parser = parse_workload)]
    pub workload: (Kind, String),
    /// The workload's namespace; default: the kubeconfig's.
    #[arg(short = 'n', long, env = "PUSHROLL_NAMESPACE")]
    pub namespace: Option<String>,
    /// The digest to approve; default: the one waiting. Given while nothing waits, it approves that digest ahead of its push.
    #[arg(long, env = "PUSHROLL_DIGEST")]
    pub digest: Option<String>,
    /// Timeout of each API call.
    #[arg(long, env = "PUSHROLL_API_TIMEOUT", value_parser = humantime::parse_duration, default_value = "5s")]
    pub api_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
}

#[derive(Debug, Args)]
pub struct PendingArgs {
    /// Only this namespace; default: every namespace.
    #[arg(short = 'n', long, env = "PUSHROLL_NAMESPACE")]
    pub namespace: Option<String>,
    /// `table` or `json` (one array of records with their workloads).
    #[arg(short = 'o', long, env = "PUSHROLL_OUTPUT", value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
    /// Timeout of each API call.
    #[arg(long, env = "PUSHROLL_API_TIMEOUT", value_parser = humantime::parse_duration, default_value = "5s")]
    pub api_timeout: Duration,
}

impl ApproveArgs {
    pub fn resolve(&self) -> ApproveConfig {
        ApproveConfig {
            kind: self.workload.0,
            name: self.workload.1.clone(),
            namespace: self.namespace.clone(),
            digest: self.digest.clone(),
            api_timeout: self.api_timeout,
        }
    }
}

impl PendingArgs {
    pub fn resolve(&self) -> PendingConfig {
        PendingConfig {
            namespace: self.namespace.clone(),
            json: self.output == OutputFormat::Json,
            api_timeout: self.api_timeout,
        }
    }
}

/// `KIND/NAME` as kubectl writes it (singular, plural or short kind).
pub fn parse_workload(s: &str) -> Result<(Kind, String), String> {
    let (kind, name) = s
        .split_once('/')
        .ok_or_else(|| format!("{s:?} is not KIND/NAME (e.g. deployment/api)"))?;
    let kind = match kind.to_ascii_lowercase().as_str() {
        "deployment" | "deployments" | "deploy" => Kind::Deployment,
        "statefulset" | "statefulsets" | "sts" => Kind::StatefulSet,
        "daemonset" | "daemonsets" | "ds" => Kind::DaemonSet,
        other => {
            return Err(format!(
                "{other:?} is not deployment, statefulset or daemonset"
            ));
        }
    };
    if name.is_empty() || name.contains('/') {
        return Err(format!("{s:?} is not KIND/NAME (e.g. deployment/api)"));
    }
    Ok((kind, name.to_owned()))
}

/// `NAME` or `NAMESPACE/NAME`.
pub(crate) fn parse_configmap(s: &str) -> Result<(Option<String>, String), ConfigError> {
    match s.split_once('/') {
        None if !s.is_empty() => Ok((None, s.to_owned())),
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok((Some(ns.to_owned()), name.to_owned()))
        }
        _ => Err(ConfigError::ConfigMap(s.to_owned())),
    }
}

/// `:8080` binds every interface, like Go servers accept.
pub fn parse_listen(s: &str) -> Result<SocketAddr, ConfigError> {
    let full = if s.starts_with(':') {
        format!("0.0.0.0{s}")
    } else {
        s.to_owned()
    };
    full.parse().map_err(|_| ConfigError::Listen(s.to_owned()))
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--listen {0:?} is not an address like 0.0.0.0:8080 or :8080")]
    Listen(String),
    #[error("--index-configmap {0:?} must be NAME or NAMESPACE/NAME")]
    ConfigMap(String),
    #[error(
        "--auth google needs --audience (the audience set on the Pub/Sub subscription, by default the push endpoint URL); use --auth none only for local trials"
    )]
    NoAudience,
    #[error("--max-header-bytes must be at least 8192")]
    HeaderBytes,
    #[error("--max-key-age must be at least 1s")]
    KeyAge,
    #[error("--pull-subscription {0:?} must be projects/PROJECT/subscriptions/NAME")]
    PullSubscription(String),
    #[error("--pull-max-outstanding must be at least 1")]
    PullMaxOutstanding,
    #[error("--header-read-timeout must be more than 0")]
    HeaderReadTimeout,
    #[error(
        "--idle-timeout ({idle:?}) must be longer than --header-read-timeout ({header:?}); in front of a load balancer, longer than its own idle timeout (Google's: 600s)"
    )]
    IdleTimeout { idle: Duration, header: Duration },
    #[error("--max-connections must be between 1 and {max}")]
    MaxConnections { max: usize },
    #[error(
        "--indexer watches the cluster's workloads and elects a writer through a Lease: it cannot run with --demo, which contacts no cluster; drop one of them"
    )]
    IndexerDemo,
    #[error(
        "--on-miss scan is pointless with --indexer: the in-process watch already holds every workload, so a miss is final; use --on-miss configmap (the default) or none"
    )]
    IndexerScan,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    fn serve(args: &[&str]) -> Result<ServeConfig, String> {
        let mut argv = vec!["pushroll", "serve"];
        argv.extend_from_slice(args);
        let cli = Cli::try_parse_from(argv).map_err(|e| e.to_string())?;
        let Command::Serve(s) = cli.command else {
            unreachable!()
        };
        s.resolve().map_err(|e| e.to_string())
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_flag_has_an_env_var() {
        fn walk(cmd: &clap::Command) {
            for arg in cmd.get_arguments() {
                if arg.is_positional() || ["help", "version"].contains(&arg.get_id().as_str()) {
                    continue;
                }
                let long = arg.get_long().expect("flags are long");
                let want = format!("PUSHROLL_{}", long.to_uppercase().replace('-', "_"));
                let env = arg.get_env().map(|e| e.to_string_lossy().into_owned());
                assert_eq!(env.as_deref(), Some(want.as_str()), "--{long}");
            }
            cmd.get_subcommands().for_each(walk);
        }
        walk(&Cli::command());
    }

    #[test]
    fn demo_defaults_and_overrides() {
        let c = serve(&["--demo"]).unwrap();
        assert_eq!(c.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(c.index.file, PathBuf::from("examples/index.json"));
        assert!(c.index.embedded.is_some());
        assert_eq!(c.auth.mode, AuthMode::None);
        assert!(c.dry_run && c.offline);
        let c = serve(&[
            "--demo",
            "--listen",
            ":9999",
            "--dry-run=false",
            "--index-file",
            "/x.json",
        ])
        .unwrap();
        assert_eq!(c.listen, "0.0.0.0:9999".parse().unwrap());
        assert!(!c.dry_run);
        assert_eq!(c.index.file, PathBuf::from("/x.json"));
        assert!(c.index.embedded.is_none());
    }

    #[test]
    fn serve_defaults_follow_the_contract() {
        let c = serve(&["--audience", "https://x/push"]).unwrap();
        assert_eq!(c.listen, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(c.index.file, PathBuf::from("/etc/pushroll/index.json"));
        assert_eq!(c.index.cluster.configmap_name, "pushroll-index");
        assert_eq!(c.index.cluster.configmap_namespace, None);
        assert_eq!(c.index.on_miss, OnMiss::Configmap);
        assert_eq!(c.index.miss_refresh_interval, Duration::from_secs(10));
        assert_eq!(c.auth.mode, AuthMode::Google);
        assert_eq!(
            c.auth.jwks_url,
            "https://www.googleapis.com/oauth2/v3/certs"
        );
        assert_eq!(
            c.auth.issuers,
            ["https://accounts.google.com", "accounts.google.com"]
        );
        assert_eq!(c.max_body_bytes, 65536);
        assert_eq!(c.max_concurrent_restarts, 8);
        assert_eq!(c.auth.max_key_age, Duration::from_secs(24 * 3600));
        assert_eq!(
            c.index.max_index_bytes, None,
            "derived from the memory limit"
        );
        assert!(!c.dry_run && !c.offline);
        assert_eq!(c.mode, Mode::Restart, "the contract's patch by default");
        let watch = serve(&["--auth", "none", "--indexer"])
            .unwrap()
            .indexer
            .unwrap();
        assert_eq!(watch.rollout_timeout, Duration::from_secs(600));
        let c = serve(&[
            "--auth",
            "none",
            "--mode",
            "pin",
            "--indexer",
            "--rollout-timeout",
            "90s",
        ])
        .unwrap();
        assert_eq!(c.mode, Mode::Pin);
        assert_eq!(c.indexer.unwrap().rollout_timeout, Duration::from_secs(90));
        // The flags' defaults are those `index --watch` gets without flags.
        let d = ConnLimits::with_defaults(c.conn.max_header_bytes);
        assert_eq!(c.conn.header_read_timeout, d.header_read_timeout);
        assert_eq!(c.conn.header_read_timeout, Duration::from_secs(10));
        assert_eq!(c.conn.idle_timeout, d.idle_timeout);
        assert!(
            c.conn.idle_timeout > Duration::from_secs(600),
            "above Google's LB"
        );
        assert_eq!(c.conn.max_connections, d.max_connections);
    }

    #[test]
    fn bad_flags_are_refused_clearly() {
        let table: &[(&[&str], &str)] = &[
            (&[], "--auth google needs --audience"),
            (&["--auth", "none", "--listen", "nope"], "--listen"),
            (
                &["--auth", "none", "--index-configmap", "a/b/c"],
                "--index-configmap",
            ),
            (
                &["--auth", "none", "--index-configmap", "/b"],
                "--index-configmap",
            ),
            (
                &["--auth", "none", "--on-miss", "sometimes"],
                "invalid value",
            ),
            (
                &["--auth", "none", "--miss-refresh-interval", "soon"],
                "invalid value",
            ),
            (
                &["--auth", "none", "--max-header-bytes", "100"],
                "at least 8192",
            ),
            (&["--demo", "--header-read-timeout", "0s"], "more than 0"),
            (
                &[
                    "--demo",
                    "--idle-timeout",
                    "5s",
                    "--header-read-timeout",
                    "5s",
                ],
                "--idle-timeout (5s) must be longer than --header-read-timeout (5s)",
            ),
            (&["--demo", "--idle-timeout", "1s"], "must be longer"),
            (
                &["--demo", "--max-connections", "0"],
                "--max-connections must be",
            ),
            (
                &["--demo", "--max-connections", "99999999"],
                "--max-connections must be",
            ),
            (&["--demo", "--indexer"], "cannot run with --demo"),
            (&["--demo", "--max-key-age", "0s"], "at least 1s"),
            (&["--demo", "--max-index-bytes", "0"], "invalid value"),
            (
                &["--auth", "none", "--indexer", "--on-miss", "scan"],
                "--on-miss scan is pointless with --indexer",
            ),
            (
                &["--auth", "none", "--indexer", "--lease-duration", "soon"],
                "invalid value",
            ),
            (&["--auth", "none", "--mode", "sideways"], "invalid value"),
            (
                &["--auth", "none", "--indexer", "--rollout-timeout", "soon"],
                "invalid value",
            ),
        ];
        for (args, want) in table {
            let err = serve(args).expect_err(&format!("{args:?}"));
            assert!(err.contains(want), "{args:?}: {err}");
        }
    }

    #[test]
    fn indexer_takes_the_index_commands_watch_settings() {
        let c = serve(&["--auth", "none"]).unwrap();
        assert!(c.indexer.is_none(), "off by default");
        let c = serve(&["--auth", "none", "--indexer"]).unwrap();
        let w = c.indexer.expect("--indexer");
        assert_eq!(w.debounce, Duration::from_secs(2));
        assert_eq!(w.lease_name, "pushroll-indexer");
        assert_eq!(w.lease_duration, Duration::from_secs(15));
        let c = serve(&[
            "--auth",
            "none",
            "--indexer",
            "--debounce",
            "200ms",
            "--lease-name",
            "l",
            "--lease-duration",
            "3s",
        ])
        .unwrap();
        let w = c.indexer.unwrap();
        assert_eq!(w.debounce, Duration::from_millis(200));
        assert_eq!(
            (w.lease_name.as_str(), w.lease_duration),
            ("l", Duration::from_secs(3))
        );
        // The same definition as `index --watch`: same defaults there.
        let cli = Cli::try_parse_from(["pushroll", "index", "--watch"]).unwrap();
        let Command::Index(i) = cli.command else {
            unreachable!()
        };
        assert_eq!(i.watch_args.debounce, Duration::from_secs(2));
        assert_eq!(i.watch_args.lease_name, "pushroll-indexer");
        assert_eq!(i.watch_args.lease_duration, Duration::from_secs(15));
    }

    #[test]
    fn lists_split_on_commas_and_configmap_namespace() {
        let c = serve(&[
            "--auth",
            "none",
            "--namespace",
            "a,b",
            "--exclude-namespace",
            "c",
            "--index-configmap",
            "ops/idx",
        ])
        .unwrap();
        assert_eq!(c.namespaces.include, ["a", "b"]);
        assert_eq!(c.namespaces.exclude, ["c"]);
        assert_eq!(c.index.cluster.configmap_namespace.as_deref(), Some("ops"));
        assert_eq!(c.index.cluster.configmap_name, "idx");
    }
}
