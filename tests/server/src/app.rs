//! Shared application object: configuration, signing key and the one state mutex.

use std::sync::{Mutex, MutexGuard, PoisonError};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use crate::config::Config;
use crate::dpop::{self, Role};
use crate::jwt::{self, Claims, JwtError};
use crate::store::{hash_token, Fresh, Runtime, State};

pub struct App {
    /// The configuration given at start; `/__control/reset` returns to it.
    pub cfg: Config,
    /// CORS allowlist: the main listener's own origins, then every `--cors-origin`.
    pub origins: Vec<String>,
    key: [u8; 32],
    state: Mutex<State>,
}

pub fn random_b64(n: usize) -> Result<String, getrandom::Error> {
    let mut buf = vec![0u8; n];
    getrandom::fill(&mut buf)?;
    Ok(URL_SAFE_NO_PAD.encode(buf))
}

impl Fresh {
    pub fn generate() -> Result<Fresh, getrandom::Error> {
        let refresh = random_b64(32)?;
        Ok(Fresh {
            refresh_hash: hash_token(&refresh),
            refresh,
            jti: random_b64(16)?,
        })
    }
}

impl App {
    /// `port` is the bound main port: with `--port 0` the own origins are only known now.
    pub fn new(cfg: Config, port: u16) -> std::io::Result<App> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(|e| std::io::Error::other(e.to_string()))?;
        let state = State::new(Runtime::from_config(&cfg));
        // Both host names: the browser tests load the page from localhost and call 127.0.0.1.
        let mut origins = vec![
            format!("http://127.0.0.1:{port}"),
            format!("http://localhost:{port}"),
        ];
        origins.extend(cfg.cors.extra().iter().cloned());
        Ok(App {
            cfg,
            origins,
            key,
            state: Mutex::new(state),
        })
    }

    pub fn origin_allowed(&self, origin: &str) -> bool {
        self.origins.iter().any(|o| o == origin)
    }

    /// A panic elsewhere must not wedge the server: the state stays usable after poisoning.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn sign(&self, claims: &Claims) -> String {
        jwt::sign(&self.key, claims)
    }

    pub fn verify(&self, token: &str) -> Result<Claims, JwtError> {
        jwt::verify(&self.key, token)
    }

    pub fn nonce(&self, role: Role, gen: u64) -> String {
        dpop::derive_nonce(&self.key, role, gen)
    }
}
