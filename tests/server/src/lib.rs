//! Reference token server for the token-broker tests: rotating refresh tokens in families
//! with reuse detection and an optional grace window, short-lived HS256 access tokens, the
//! dashboard API of the original question, and fault injection under `/__control`.
//!
//! Start it in-process with [`start`], or run the `token-server` binary.

pub mod api;
pub mod app;
pub mod config;
pub mod controls;
pub mod dpop;
pub mod jwt;
pub mod realtime;
pub mod store;
pub mod web;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::middleware::{from_fn, from_fn_with_state};
use axum::routing::{any, get, post};
use axum::Router;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use config::{Command, Config, CorsPolicy, USAGE};

/// A running server. Dropping it stops both listeners (open connections end with the runtime).
pub struct Server {
    pub addr: SocketAddr,
    pub foreign_addr: SocketAddr,
    app: Arc<app::App>,
    tasks: Vec<JoinHandle<()>>,
}

impl Server {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn foreign_url(&self) -> String {
        format!("http://{}", self.foreign_addr)
    }

    /// The single machine-readable line the binary prints once it listens.
    pub fn ready_line(&self) -> String {
        // Written by hand to keep the documented key order.
        format!(
            "{{\"listening\":\"{}\",\"foreign\":\"{}\"}}",
            self.url(),
            self.foreign_url()
        )
    }

    pub fn config(&self) -> &Config {
        &self.app.cfg
    }

    /// Every origin the main listener answers with CORS headers (its own two first).
    pub fn cors_origins(&self) -> &[String] {
        &self.app.origins
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn main_router(app: Arc<app::App>) -> Router {
    let live = realtime::Live::new(app.clone());
    let mut r = Router::new()
        .route("/auth/login", post(api::login))
        .route("/auth/refresh-token", post(api::refresh))
        .route("/auth/logout", post(api::logout))
        .route("/auth/revoke", post(api::revoke))
        .route("/statistics", get(api::protected))
        .route("/other-statistics", get(api::protected))
        .route("/event-more-statistics", get(api::protected))
        .route("/final-statistics", get(api::protected))
        .route("/scoped", get(api::protected))
        .route("/graphql", get(api::protected).post(api::protected))
        .route("/orders", post(api::protected))
        .route("/forbidden", any(api::forbidden))
        .route("/ws", get(realtime::ws).with_state(live.clone()))
        .route("/events", get(realtime::events).with_state(live.clone()));
    if app.cfg.test_controls {
        r = r.nest("/__control", controls::router());
    }
    r.fallback(api::fallback)
        .layer(from_fn_with_state(app.clone(), dpop::nonce_mw))
        .layer(from_fn_with_state(live, realtime::control_mw))
        .layer(from_fn_with_state(app.clone(), web::cors_mw))
        .layer(from_fn(web::json_errors_mw))
        .layer(from_fn_with_state(app.clone(), web::log_mw))
        .with_state(app)
}

fn foreign_router(app: Arc<app::App>) -> Router {
    Router::new().fallback(web::foreign_handler).with_state(app)
}

/// Binds 127.0.0.1 on the configured ports (0 = any free port) and starts serving.
pub async fn start(cfg: Config) -> std::io::Result<Server> {
    let main = TcpListener::bind(("127.0.0.1", cfg.port)).await?;
    let foreign = TcpListener::bind(("127.0.0.1", cfg.foreign_port)).await?;
    let addr = main.local_addr()?;
    let foreign_addr = foreign.local_addr()?;
    let limits = web::ConnLimits::from_ms(cfg.header_timeout_ms, cfg.body_timeout_ms);
    let app = Arc::new(app::App::new(cfg, addr.port())?);
    let tasks = vec![
        tokio::spawn(web::serve(main, main_router(app.clone()), limits)),
        tokio::spawn(web::serve(foreign, foreign_router(app.clone()), limits)),
    ];
    Ok(Server {
        addr,
        foreign_addr,
        app,
        tasks,
    })
}
