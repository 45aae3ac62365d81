//! Probes for orchestrators: `GET /healthz` (the process is alive) and `GET /readyz` (it can
//! serve protected writes), for Kubernetes-style liveness and readiness checks.
//!
//! Both are unauthenticated, cheap (`/readyz` reads one row count of idem's migrations table,
//! bounded by a two-second timeout) and are not protected operations: they write nothing and
//! are never counted as writes.
//!
//! | probe | `200` | `503` (problem+json, `#not-ready`) |
//! | --- | --- | --- |
//! | `/healthz` | always, while the process serves | never |
//! | `/readyz` | registry verified, migrations applied, database reachable | draining after a shutdown signal, migrations pending, or the database unreachable |

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actix_web::web::{self, ServiceConfig};
use actix_web::{HttpResponse, Responder};
use idem_runtime::{Backend, IdempotencyStore};

use crate::VerifiedRoutes;
use crate::problem::{Problem, ProblemKind};

/// How long `/readyz` waits for the database before it answers `503`.
const READINESS_TIMEOUT: Duration = Duration::from_secs(2);

/// The probes of one application: build it from the [`VerifiedRoutes`] (the registry is then
/// verified), mount it with [`Health::configure`], and call [`Health::start_draining`] when a
/// shutdown signal arrives, so the load balancer stops sending requests before the server stops
/// accepting them.
///
/// ```no_run
/// use actix_web::{App, HttpServer};
/// use idem_actix::VerifiedRoutes;
/// use idem_actix::health::Health;
///
/// async fn serve(routes: VerifiedRoutes<sqlx::Sqlite>) -> std::io::Result<()> {
///     let health = Health::new(&routes);
///     let server = HttpServer::new({
///         let health = health.clone();
///         move || {
///             let (routes, health) = (routes.clone(), health.clone());
///             App::new()
///                 .wrap(routes.mutation_gate())
///                 .configure(move |config| {
///                     routes.configure(config);
///                     health.configure(config);
///                 })
///         }
///     })
///     .disable_signals()
///     .bind("127.0.0.1:8080")?
///     .run();
///     let handle = server.handle();
///     actix_web::rt::spawn(async move {
///         let _ = actix_web::rt::signal::ctrl_c().await;
///         // `/readyz` answers 503 from now on; the load balancer stops sending requests,
///         // then the server stops accepting them and finishes those in flight.
///         health.start_draining();
///         actix_web::rt::time::sleep(std::time::Duration::from_secs(5)).await;
///         handle.stop(true).await;
///     });
///     server.await
/// }
/// ```
pub struct Health<DB: Backend> {
    store: IdempotencyStore<DB>,
    draining: Arc<AtomicBool>,
}

impl<DB: Backend> Clone for Health<DB> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            draining: self.draining.clone(),
        }
    }
}

impl<DB: Backend> Health<DB> {
    /// The probes of the application that serves `routes`.
    pub fn new(routes: &VerifiedRoutes<DB>) -> Self {
        Self {
            store: routes.store().clone(),
            draining: Arc::default(),
        }
    }

    /// From now on `/readyz` answers `503`: the process is shutting down.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Whether [`Self::start_draining`] was called.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Mounts `GET /healthz` and `GET /readyz`.
    pub fn configure(&self, config: &mut ServiceConfig) {
        let health = self.clone();
        config.route("/healthz", web::get().to(alive)).route(
            "/readyz",
            web::get().to(move || {
                let health = health.clone();
                async move { health.readiness().await }
            }),
        );
    }

    async fn readiness(&self) -> HttpResponse {
        let not_ready = |detail: String| Problem::new(ProblemKind::NotReady, detail).to_response();
        if self.is_draining() {
            return not_ready("the process is shutting down: send requests elsewhere".to_owned());
        }
        match actix_web::rt::time::timeout(READINESS_TIMEOUT, self.store.pending_migrations()).await
        {
            Ok(Ok(pending)) if pending.is_empty() => {
                HttpResponse::Ok().json(serde_json::json!({ "status": "ready" }))
            }
            Ok(Ok(pending)) => not_ready(format!("idem's migrations {pending:?} are not applied")),
            Ok(Err(error)) => not_ready(format!("the database is unreachable: {error}")),
            Err(_) => not_ready(format!(
                "the database did not answer within {} s",
                READINESS_TIMEOUT.as_secs()
            )),
        }
    }
}

async fn alive() -> impl Responder {
    HttpResponse::Ok().json(serde_json::json!({ "status": "alive" }))
}
