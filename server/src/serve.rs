//! `nexus serve`: wires the subsystems, serves HTTP(S) and drains on SIGTERM/SIGINT.

use crate::config::Config;
use crate::edge::Edge;
use crate::metrics::Metrics;
use anyhow::{Context, Result};
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use nexus_api::mail::DirMailer;
use nexus_api::{ApiState, AuthSettings};
use nexus_auth::TokenKeys;
use nexus_store::Store;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// Opens the configured store and applies migrations.
pub async fn open_store(config: &Config) -> Result<Store> {
    let url = config.database_url();
    let store = Store::connect(&url)
        .await
        .with_context(|| format!("cannot open store {}", nexus_store::db::redact_url(&url)))?;
    let applied = store.migrate().await.context("migrations failed")?;
    if !applied.is_empty() {
        tracing::info!(?applied, "store migrated");
    }
    Ok(store)
}

/// The token keys from config (or the generated secret in the data dir).
pub fn token_keys(config: &Config) -> Result<TokenKeys> {
    let current = crate::secrets::jwt_secret(
        config.jwt.secret.as_ref().map(|s| s.expose()),
        &config.data_dir,
    )?;
    let previous: Vec<&[u8]> = config
        .jwt
        .previous_secrets
        .iter()
        .map(|s| s.expose().as_bytes())
        .collect();
    Ok(TokenKeys::checked(&current, &previous)?)
}

fn tls_acceptor(config: &Config) -> Result<Option<TlsAcceptor>> {
    let (Some(cert), Some(key)) = (&config.tls.cert, &config.tls.key) else {
        return Ok(None);
    };
    let certs = rustls_pemfile::certs(&mut std::io::BufReader::new(
        std::fs::File::open(cert)
            .with_context(|| format!("cannot open TLS cert {}", cert.display()))?,
    ))
    .collect::<Result<Vec<_>, _>>()
    .with_context(|| format!("bad PEM in {}", cert.display()))?;
    let key = rustls_pemfile::private_key(&mut std::io::BufReader::new(
        std::fs::File::open(key)
            .with_context(|| format!("cannot open TLS key {}", key.display()))?,
    ))
    .with_context(|| format!("bad PEM in {}", key.display()))?
    .with_context(|| format!("no private key in {}", key.display()))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut server = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("TLS certificate and key do not match")?;
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Some(TlsAcceptor::from(Arc::new(server))))
}

/// Resolves when SIGTERM or SIGINT arrives.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

/// Runs the server until a shutdown signal, then drains within `shutdown_grace`.
pub async fn run(config: Config) -> Result<()> {
    let store = open_store(&config).await?;
    let keys = token_keys(&config)?;
    let gateway = crate::realtime::start(&config, keys.clone(), store.clone()).await?;
    // Other nodes' writes after this instant reach the index through the bus (see
    // `events::start`); earlier ones are in the store the index is built from.
    let index_since = nexus_store::now_ms();
    let geo = nexus_api::crisis::start_geo_service(&store)
        .await
        .context("cannot rebuild the geo index from the store")?;
    let targets = nexus_api::alert_targets::AlertTargets::load(&store)
        .await
        .context("cannot build the alert targeting index from the store")?;
    let mut sfu_config = nexus_sfu_net::SfuConfig::new(config.sfu.udp_addr);
    sfu_config.shards = config.sfu.shards.unwrap_or(sfu_config.shards);
    sfu_config.public_ip = config.sfu.public_ip;
    sfu_config.max_busy = f64::from(config.sfu.max_busy_percent) / 100.0;
    let sfu = nexus_sfu_net::SfuHandle::start(sfu_config)
        .await
        .with_context(|| format!("cannot start the SFU on {}", config.sfu.udp_addr))?;
    let tls = tls_acceptor(&config)?;
    let listener = TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("cannot bind HTTP listener on {}", config.http_addr))?;
    let local = listener.local_addr()?;
    let jwt_secret = crate::secrets::jwt_secret(
        config.jwt.secret.as_ref().map(|s| s.expose()),
        &config.data_dir,
    )?;
    let alerting_keys = crate::alerting::keys(&config, &jwt_secret)?;
    let geocodes = Arc::new(crate::alert_ingest::geocode_table(&config)?);
    let api = ApiState {
        store: store.clone(),
        keys: keys.clone(),
        auth: Arc::new(AuthSettings {
            access_ttl_secs: config.jwt.access_ttl.as_secs().max(1),
            refresh_ttl_secs: config.jwt.refresh_ttl.as_secs().max(1),
            ..AuthSettings::default()
        }),
        mailer: Arc::new(DirMailer::new(config.data_dir.join("mail"))),
        geo: geo.clone(),
        realtime: Arc::new(crate::realtime::GatewayRealtime(gateway.clone())),
        rooms: Arc::new(crate::rooms::SfuRooms(sfu.clone())),
        alerting: Arc::new(crate::alerting::settings(
            &config,
            &alerting_keys,
            local,
            tls.is_some(),
        )),
        geocodes,
        targets: targets.clone(),
    };
    let metrics = Metrics::new();
    let turn = crate::turn::Turn::from_config(&config.turn);
    let rtc = crate::rtc::routes(sfu.clone(), keys.clone(), turn);
    metrics.register(Box::new(crate::realtime::GatewayCollector::new(
        gateway.stats_handle(),
    )));
    metrics.register(Box::new(crate::sfu_metrics::SfuCollector::start(
        sfu.clone(),
    )));
    let rtc = rtc.merge(nexus_gateway::router(gateway.clone()));
    let rtc = rtc.merge(crate::realtime::map_page());
    let edge = Edge::new(
        metrics.clone(),
        keys,
        &config.rate_limit,
        config.trusted_proxies.clone(),
        config.request_timeout,
    );
    let reminders = api.clone();
    let alerting_api = api.clone();
    let ingest_api = api.clone();
    let app = crate::http::app(api, edge.clone(), &config, rtc);
    tracing::info!(addr = %local, scheme = if tls.is_some() { "https" } else { "http" }, "listening");
    for addr in sfu.local_addrs() {
        tracing::info!(addr = %addr, scheme = "udp", "listening");
    }

    let shutdown = CancellationToken::new();
    let background = tokio_util::task::TaskTracker::new();
    let bus = crate::events::start(
        &config,
        &store,
        &metrics,
        &shutdown,
        &background,
        crate::events::Core {
            gateway: gateway.clone(),
            geo: geo.clone(),
            targets,
            index_since,
        },
    )
    .await?;
    crate::alerting::start(
        &config,
        &alerting_api,
        &alerting_keys,
        &gateway,
        bus,
        &shutdown,
        &background,
    )?;
    crate::alert_ingest::start(&config, &ingest_api, &shutdown, &background)?;
    {
        let edge = edge.clone();
        let shutdown = shutdown.clone();
        background.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tokio::select! {
                    _ = tick.tick() => edge.prune(),
                    () = shutdown.cancelled() => break,
                }
            }
        });
    }
    {
        // Appointment reminders: every node runs a pass every 10 s; the store hands each
        // appointment to one pass only.
        let shutdown = shutdown.clone();
        background.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(10));
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        let now = nexus_store::now_ms();
                        let pass = nexus_api::healthcare::send_due_reminders(&reminders, now);
                        if let Err(e) = pass.await {
                            tracing::warn!(error = %e, "appointment reminders failed");
                        }
                    }
                    () = shutdown.cancelled() => break,
                }
            }
        });
    }
    {
        // On shutdown, SFU participants are told to leave; their WebSockets then close.
        let shutdown = shutdown.clone();
        let sfu = sfu.clone();
        background.spawn(async move {
            shutdown.cancelled().await;
            sfu.shutdown().await;
        });
    }
    {
        // On shutdown, gateway clients get 3001 (shutdown) and reconnect elsewhere.
        let shutdown = shutdown.clone();
        let gateway = gateway.clone();
        background.spawn(async move {
            shutdown.cancelled().await;
            gateway.shutdown().await;
        });
    }
    {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            tracing::info!("shutdown signal received; draining");
            shutdown.cancel();
        });
    }

    serve_http(
        listener,
        app,
        tls,
        shutdown.clone(),
        config.shutdown_grace,
        config.max_connections,
    )
    .await;
    background.close();
    let _ = tokio::time::timeout(config.shutdown_grace, background.wait()).await;
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// Accepts connections until `shutdown`, then waits up to `grace` for open ones to finish.
async fn serve_http(
    listener: TcpListener,
    app: axum::Router,
    tls: Option<TlsAcceptor>,
    shutdown: CancellationToken,
    grace: Duration,
    max_connections: usize,
) {
    let graceful = GracefulShutdown::new();
    let builder = Builder::new(TokioExecutor::new());
    let slots = Arc::new(Semaphore::new(max_connections));
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!("connection limit reached; refusing a connection");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        // On plain TCP the gateway takes a WebSocket upgrade's socket over (it writes
        // deliveries straight to it): a duplicate descriptor, closed with the connection
        // unless an upgrade takes it.
        let socket = match tls {
            None => socket2::SockRef::from(&stream)
                .try_clone()
                .ok()
                .map(|s| nexus_gateway::ConnSocket::new(s.into())),
            Some(_) => None,
        };
        let service =
            app.clone()
                .map_request(move |mut req: hyper::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
                    if let Some(s) = &socket {
                        req.extensions_mut().insert(s.clone());
                    }
                    req
                });
        let service = TowerToHyperService::new(service);
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => {
                    let conn = builder
                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .into_owned();
                    let _ = watcher.watch(conn).await;
                }
                Some(acceptor) => {
                    let Ok(Ok(stream)) =
                        tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream))
                            .await
                    else {
                        tracing::debug!("TLS handshake failed");
                        return;
                    };
                    let conn = builder
                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .into_owned();
                    let _ = watcher.watch(conn).await;
                }
            }
            drop(permit);
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections drained"),
        () = tokio::time::sleep(grace) => tracing::warn!(?grace, "grace period over; closing remaining connections"),
    }
}
