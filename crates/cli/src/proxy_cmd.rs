//! `pgpilot proxy`: settings from flags or a config file, the proxy and
//! admin listeners, SIGHUP reload, Ctrl-C / SIGTERM shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use pgpilot_config::{QuickStart, Settings};
use pgpilot_proxy::{RunningProxy, Runtime};

/// Flags of `pgpilot proxy`.
#[derive(clap::Args, Debug)]
pub struct ProxyArgs {
    /// Address clients connect to.
    #[arg(long, default_value = "127.0.0.1:6432")]
    pub listen: SocketAddr,
    /// The primary, as postgres://user:pass@host:port/db; its user and password become the client login.
    #[arg(long, required_unless_present = "config")]
    pub primary: Option<String>,
    /// A read replica URL (repeatable).
    #[arg(long = "replica")]
    pub replicas: Vec<String>,
    /// Admin HTTP address (health, metrics); "off" disables it.
    #[arg(long, default_value = "127.0.0.1:9930")]
    pub admin_listen: String,
    /// Cache the results of every eligible read (see docs/configuration.md, [cache]).
    #[arg(long, conflicts_with = "config")]
    pub cache: bool,
    /// With --cache: also invalidate from the primary's WAL (logical replication; the login needs REPLICATION, and superuser to create the publication).
    #[arg(long, requires = "cache")]
    pub cache_wal: bool,
    /// With --cache: share invalidations with the other pgpilot instances using this Redis, e.g. redis://127.0.0.1:6379.
    #[arg(long, requires = "cache")]
    pub cache_redis: Option<String>,
    /// A TOML configuration file (see docs/configuration.md); reloaded on SIGHUP.
    #[arg(long, conflicts_with_all = ["primary", "replicas"])]
    pub config: Option<PathBuf>,
}

/// Settings from the flags.
pub fn settings(args: &ProxyArgs) -> anyhow::Result<Settings> {
    if let Some(path) = &args.config {
        return pgpilot_config::load(path).with_context(|| format!("loading {}", path.display()));
    }
    let admin_listen = match args.admin_listen.as_str() {
        "" | "off" => None,
        a => Some(a.parse().with_context(|| format!("--admin-listen {a:?}"))?),
    };
    let q = QuickStart {
        listen: args.listen,
        primary_url: args.primary.clone().unwrap_or_default(),
        replica_urls: args.replicas.clone(),
        admin_listen,
    };
    let mut settings = Settings::quick_start(&q)?;
    settings.cache.enabled = args.cache;
    settings.cache.wal.enabled = args.cache_wal;
    settings.cache.redis_url = args.cache_redis.clone();
    Ok(settings)
}

pub async fn run(args: ProxyArgs) -> anyhow::Result<()> {
    let settings = settings(&args)?;
    let running = start(settings).await?;
    tracing::info!(listen = %running.proxy.addr, "pgpilot is accepting connections");
    wait_for_shutdown(&running.proxy.rt, args.config.as_deref()).await
}

/// A proxy and its admin listener.
pub struct Running {
    pub proxy: RunningProxy,
    pub admin: Option<SocketAddr>,
    _admin_task: Option<tokio::task::JoinHandle<()>>,
}

/// Starts the proxy and, when configured, the admin API.
pub async fn start(settings: Settings) -> anyhow::Result<Running> {
    let admin_addr = settings.admin_listen;
    let listen = settings.listen;
    let proxy = RunningProxy::start(settings)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    let (admin, task) = match admin_addr {
        None => (None, None),
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("admin listener on {addr}"))?;
            let bound = listener.local_addr()?;
            let rt = proxy.rt.clone();
            let task = tokio::spawn(async move {
                if let Err(e) = pgpilot_admin::serve(rt, listener).await {
                    tracing::error!(error = %e, "admin listener failed");
                }
            });
            (Some(bound), Some(task))
        }
    };
    Ok(Running {
        proxy,
        admin,
        _admin_task: task,
    })
}

/// Serves until Ctrl-C or SIGTERM; SIGHUP reloads `config` when there is one.
pub async fn wait_for_shutdown(
    rt: &Arc<Runtime>,
    config: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = hup.recv() => reload(rt, config),
        }
    }
    tracing::info!("shutting down");
    Ok(())
}

fn reload(rt: &Runtime, config: Option<&std::path::Path>) {
    let Some(path) = config else {
        tracing::warn!("SIGHUP ignored: no --config file to reload");
        return;
    };
    match pgpilot_config::load(path) {
        Ok(new) => {
            rt.reload(new);
            tracing::info!(file = %path.display(), "configuration reloaded");
        }
        Err(e) => {
            tracing::error!(file = %path.display(), error = %e, "reload failed; keeping the running configuration")
        }
    }
}
