//! The life of a service around its actix server: the background work started with it, and a
//! shutdown in bounded time on SIGTERM or Ctrl-C (readiness withdrawn, a drain delay, in-flight
//! requests finished or cut, the background stopped, the audit log flushed).

use std::process::ExitCode;
use std::time::Duration;

use actix_http::Request;
use actix_service::IntoServiceFactory;
use actix_web::HttpServer;
use actix_web::body::MessageBody;
use actix_web::dev::{AppConfig, Response, Service, ServiceFactory};
use idem_runtime::{Backend, IdempotencyStore, Maintenance, OutboxDispatcher};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::health::Health;

/// Runs an actix server for the life of a service, and stops it in bounded time.
///
/// It starts the outbox dispatcher and the maintenance task beside the server, then waits for
/// SIGTERM or SIGINT (Ctrl-C). On the first signal it withdraws readiness (`GET /readyz`
/// answers `503`), waits the drain delay so the load balancer stops sending, stops accepting,
/// lets in-flight requests finish, stops the background work between two events or batches,
/// and writes every queued audit row, all within the shutdown timeout: a request still running
/// when it passes is cut (its write rolls back whole), and audit rows still queued are counted
/// lost (`idempotent_write_audit_rows_lost_total`). A second signal cuts everything short.
///
/// It takes the server unstarted, to start it with actix-web's own signal handling off (it
/// would stop the server at the first signal, without the drain) and actix-web's own bound on
/// in-flight requests set to what is left of the shutdown timeout after the drain delay.
///
/// ```no_run
/// use std::time::Duration;
///
/// use actix_web::{App, HttpServer};
/// use idem_actix::health::Health;
/// use idem_actix::{IdempotencyStore, Lifecycle, Maintenance, StoreConfig, VerifiedRoutes};
/// use sqlx::Sqlite;
///
/// # async fn verified_routes(_: IdempotencyStore<Sqlite>) -> Result<VerifiedRoutes<Sqlite>, idem_actix::StartupError> {
/// #     unimplemented!("ProtectedRoutes::new(…).financial(…).verify().await, as in the crate's example")
/// # }
/// #[actix_web::main]
/// async fn main() -> Result<std::process::ExitCode, Box<dyn std::error::Error>> {
///     let store = IdempotencyStore::<Sqlite>::connect("sqlite://payments.db", StoreConfig::default()).await?;
///     store.migrate().await?;
///     let routes = verified_routes(store.clone()).await?;
///     let health = Health::new(&routes);
///     let (probes, served) = (health.clone(), routes.clone());
///     let server = HttpServer::new(move || {
///         let (probes, served) = (probes.clone(), served.clone());
///         App::new()
///             .wrap(served.mutation_gate())
///             .configure(move |config| {
///                 probes.configure(config);
///                 served.configure(config);
///             })
///     })
///     .bind("127.0.0.1:8080")?;
///     let stopped = Lifecycle::new(store.clone())
///         .with_health(health)
///         .with_maintenance(Maintenance::new(store))
///         .with_drain_delay(Duration::from_secs(5))
///         .run(server)
///         .await?;
///     Ok(stopped.exit_code())
/// }
/// ```
#[must_use = "a lifecycle does nothing until it runs a server"]
pub struct Lifecycle<DB: Backend> {
    store: IdempotencyStore<DB>,
    health: Option<Health<DB>>,
    outbox: Option<(OutboxDispatcher<DB>, Duration)>,
    maintenance: Option<Maintenance<DB>>,
    shutdown_timeout: Duration,
    drain_delay: Duration,
}

/// How a service stopped: what [`Lifecycle::run`] answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Stopped {
    /// On one signal, within the shutdown timeout.
    Graceful,
    /// A second signal cut the drain, the in-flight requests (they rolled back) and the audit
    /// flush short.
    Forced,
}

impl Stopped {
    /// The process's exit code: success for [`Stopped::Graceful`], failure for
    /// [`Stopped::Forced`].
    pub fn exit_code(self) -> ExitCode {
        match self {
            Self::Graceful => ExitCode::SUCCESS,
            Self::Forced => ExitCode::FAILURE,
        }
    }
}

/// Why [`Lifecycle::run`] could not run the service to a signal.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LifecycleError {
    /// The signal handlers could not be installed.
    #[error("could not listen for SIGTERM and SIGINT")]
    Signals(#[source] std::io::Error),
    /// The server stopped without a signal (it failed, or was stopped through its handle). The
    /// background work was stopped and the audit log flushed all the same.
    #[error("the server stopped without a signal")]
    ServerStopped(#[source] Option<std::io::Error>),
}

impl<DB: Backend> Lifecycle<DB> {
    /// A lifecycle for a service writing through `store`, with a shutdown timeout of 30 s and
    /// no drain delay.
    pub fn new(store: IdempotencyStore<DB>) -> Self {
        Self {
            store,
            health: None,
            outbox: None,
            maintenance: None,
            shutdown_timeout: Duration::from_secs(30),
            drain_delay: Duration::ZERO,
        }
    }

    /// The probes to withdraw readiness from when the shutdown starts.
    pub fn with_health(mut self, health: Health<DB>) -> Self {
        self.health = Some(health);
        self
    }

    /// Runs `dispatcher` beside the server, polling every `poll`, until the shutdown.
    pub fn with_outbox(mut self, dispatcher: OutboxDispatcher<DB>, poll: Duration) -> Self {
        self.outbox = Some((dispatcher, poll));
        self
    }

    /// Runs `maintenance` beside the server until the shutdown.
    pub fn with_maintenance(mut self, maintenance: Maintenance<DB>) -> Self {
        self.maintenance = Some(maintenance);
        self
    }

    /// The bound on the whole shutdown, from the first signal to the return of
    /// [`Self::run`], drain delay included. Default 30 s: keep it below the orchestrator's
    /// grace period (Kubernetes' `terminationGracePeriodSeconds`, also 30 s by default).
    pub fn with_shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// How long readiness answers `503` before the server stops accepting, so that the load
    /// balancer notices first (set it to its probe interval). Default 0; it counts within the
    /// shutdown timeout.
    pub fn with_drain_delay(mut self, delay: Duration) -> Self {
        self.drain_delay = delay;
        self
    }

    /// Starts `server` (bound, not yet running) and the background work, runs them until a
    /// signal, then stops them all within the shutdown timeout. Call it on the actix runtime
    /// (`#[actix_web::main]`): the background work runs on it, beside the server's workers,
    /// and outlives them.
    pub async fn run<F, I, S, B>(
        self,
        server: HttpServer<F, I, S, B>,
    ) -> Result<Stopped, LifecycleError>
    where
        F: Fn() -> I + Send + Clone + 'static,
        I: IntoServiceFactory<S, Request>,
        S: ServiceFactory<Request, Config = AppConfig> + 'static,
        S::Error: Into<actix_web::Error> + 'static,
        S::InitError: std::fmt::Debug,
        S::Response: Into<Response<B>> + 'static,
        <S::Service as Service<Request>>::Future: 'static,
        S::Service: 'static,
        B: MessageBody + 'static,
    {
        let mut signals = Signals::new().map_err(LifecycleError::Signals)?;
        // actix-web's own bound on in-flight requests starts after the drain: what is left of
        // the whole stop's bound then (whole seconds, as actix-web counts them).
        let in_flight = self.shutdown_timeout.saturating_sub(self.drain_delay);
        let server = server
            .disable_signals()
            .shutdown_timeout(in_flight.as_secs())
            .run();
        let (stop_background, background_stopped) = watch::channel(false);
        let stopped = |mut receiver: watch::Receiver<bool>| async move {
            let _ = receiver.wait_for(|stop| *stop).await;
        };
        let outbox = self.outbox.map(|(dispatcher, poll)| {
            actix_web::rt::spawn(dispatcher.run_until(poll, stopped(background_stopped.clone())))
        });
        let maintenance = self.maintenance.map(|maintenance| {
            actix_web::rt::spawn(maintenance.run_until(stopped(background_stopped.clone())))
        });

        let handle = server.handle();
        let server = actix_web::rt::spawn(server);
        tokio::pin!(server);
        let signal = tokio::select! {
            served = &mut server => Err(served.ok().and_then(Result::err)),
            name = signals.next() => Ok(name),
        };
        let deadline = Instant::now() + self.shutdown_timeout;
        if let Some(health) = &self.health {
            health.start_draining();
        }
        let mut forced = false;
        if let Ok(name) = signal {
            tracing::info!(signal = name, "shutdown started: draining");
            tokio::select! {
                () = tokio::time::sleep(self.drain_delay.min(self.shutdown_timeout)) => {}
                name = signals.next() => {
                    tracing::warn!(signal = name, "second signal: stopping at once");
                    forced = true;
                }
            }
            // In-flight requests may take what is left of the bound, no more.
            if !forced {
                tracing::info!("no longer accepting; waiting for in-flight requests");
                let stop = handle.stop(true);
                tokio::pin!(stop);
                tokio::select! {
                    () = &mut stop => {}
                    () = tokio::time::sleep_until(deadline) => {
                        tracing::warn!("the shutdown timeout passed: cutting in-flight requests");
                        handle.stop(false).await;
                    }
                    name = signals.next() => {
                        tracing::warn!(signal = name, "second signal: cutting in-flight requests");
                        forced = true;
                    }
                }
            }
            if forced {
                // Dropped requests roll back: a write lands whole or not at all.
                handle.stop(false).await;
            }
            let _ = server.await;
        }

        let _ = stop_background.send(true);
        let remaining = || deadline.saturating_duration_since(Instant::now());
        let background = async {
            for task in outbox.into_iter().chain(maintenance) {
                let _ = task.await;
            }
        };
        if tokio::time::timeout(remaining(), background).await.is_err() {
            tracing::warn!("the outbox dispatcher or the maintenance task did not stop in time");
        }
        let bound = if forced {
            remaining().min(Duration::from_secs(1))
        } else {
            remaining()
        };
        let lost = self.store.flush_audit_within(bound).await;
        tracing::info!(lost_audit_rows = lost, forced, "stopped");
        match signal {
            Err(error) => Err(LifecycleError::ServerStopped(error)),
            Ok(_) if forced => Ok(Stopped::Forced),
            Ok(_) => Ok(Stopped::Graceful),
        }
    }
}

/// SIGTERM and SIGINT (Ctrl-C), as one stream; Ctrl-C alone where there is no SIGTERM.
struct Signals {
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                terminate: signal(SignalKind::terminate())?,
                interrupt: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// The next signal's name.
    async fn next(&mut self) -> &'static str {
        #[cfg(unix)]
        tokio::select! {
            _ = self.terminate.recv() => "SIGTERM",
            _ = self.interrupt.recv() => "SIGINT",
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "Ctrl-C"
        }
    }
}
