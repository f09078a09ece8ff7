//! Command-line configuration of the reference server.

use std::path::PathBuf;

use crate::dpop::Mode;

pub const USAGE: &str = "\
token-server: reference token server for token-broker tests

USAGE: token-server [OPTIONS]

  --port N                    main listener on 127.0.0.1:N (0 = free port; default 0)
  --foreign-port N            second, \"foreign origin\" listener (0 = free port; default 0)
  --access-ttl SECONDS        access-token lifetime, fractional allowed (default 60)
  --grace SECONDS             refresh-token reuse grace window (default 0 = strict)
  --grace-max-uses N          replays allowed per rotated token inside the window (default 100)
  --family-lifetime SECONDS   absolute refresh-token family lifetime (default 2592000 = 30 days)
  --idle-timeout SECONDS      refresh-token family idle timeout (default: none)
  --cors-origin ORIGIN        also allow this CORS origin (scheme://host[:port]), repeatable.
                              The server's own origins (http://127.0.0.1:PORT and
                              http://localhost:PORT) are always allowed; nothing else by default
  --header-timeout-ms MS      close a connection whose request head is not complete within MS,
                              and an idle keep-alive connection after MS (default 10000; 0 = off)
  --body-timeout-ms MS        answer 408 and close when a request body is not complete within MS
                              of its head (default 10000; 0 = off)
  --no-expose-www-authenticate  leave WWW-Authenticate out of Access-Control-Expose-Headers
  --dpop off|optional|required  DPoP (RFC 9449) at the token endpoints and the API (default off)
  --dpop-nonces on|off        proofs must carry the server's DPoP-Nonce (default: on with
                              --dpop required, else off)
  --no-expose-dpop-nonce      leave DPoP-Nonce out of Access-Control-Expose-Headers
  --test-controls             enable the /__control/... API
  --static DIR                serve DIR at / (index.html fallback)
  --help                      this text

On start, exactly one line is printed to stdout:
  {\"listening\":\"http://127.0.0.1:PORT\",\"foreign\":\"http://127.0.0.1:PORT2\"}
";

/// Origins allowed in addition to the server's own two (`127.0.0.1` and `localhost` on the main
/// port), which are only known once the listener is bound. There is deliberately no "any
/// origin" policy: credentials are allowed, so reflecting every origin would let any page on
/// the machine drive the token endpoints with the user's cookie.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum CorsPolicy {
    #[default]
    OwnOnly,
    Origins(Vec<String>),
}

impl CorsPolicy {
    pub fn extra(&self) -> &[String] {
        match self {
            CorsPolicy::OwnOnly => &[],
            CorsPolicy::Origins(list) => list,
        }
    }
}

/// A serialized origin as browsers send it: lower-case `http(s)://host[:port]`, nothing after.
/// A value with a path or a trailing slash would silently never match, so it is refused.
pub fn parse_origin(raw: &str) -> Result<String, String> {
    let o = raw.trim().to_ascii_lowercase();
    if o == "*" {
        return Err(
            "--cors-origin: '*' is not supported (credentials are allowed); list each origin"
                .into(),
        );
    }
    let rest = o
        .strip_prefix("http://")
        .or_else(|| o.strip_prefix("https://"))
        .ok_or_else(|| format!("--cors-origin: '{raw}' must start with http:// or https://"))?;
    let ok = !rest.is_empty()
        && !rest.starts_with(':')
        && rest
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']' | '_'));
    if !ok {
        return Err(format!(
            "--cors-origin: '{raw}' is not an origin (scheme://host[:port], no path or trailing slash)"
        ));
    }
    Ok(o)
}

#[derive(Clone, Debug)]
pub struct Config {
    pub port: u16,
    pub foreign_port: u16,
    /// Seconds; fractional values are honoured to the millisecond.
    pub access_ttl: f64,
    pub grace: f64,
    pub grace_max_uses: u32,
    pub family_lifetime: f64,
    pub idle_timeout: Option<f64>,
    pub cors: CorsPolicy,
    pub expose_www_authenticate: bool,
    pub expose_dpop_nonce: bool,
    pub dpop: Mode,
    /// `None` = the mode's default (on exactly when DPoP is required).
    pub dpop_nonces: Option<bool>,
    pub test_controls: bool,
    pub static_dir: Option<PathBuf>,
    /// Milliseconds; 0 = off. Also the keep-alive idle limit (hyper arms the same timer while
    /// it waits for the next request head).
    pub header_timeout_ms: u64,
    /// Milliseconds from the request head to the end of its body; 0 = off.
    pub body_timeout_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            port: 0,
            foreign_port: 0,
            access_ttl: 60.0,
            grace: 0.0,
            grace_max_uses: 100,
            family_lifetime: 30.0 * 24.0 * 3600.0,
            idle_timeout: None,
            cors: CorsPolicy::OwnOnly,
            expose_www_authenticate: true,
            expose_dpop_nonce: true,
            dpop: Mode::Off,
            dpop_nonces: None,
            test_controls: false,
            static_dir: None,
            header_timeout_ms: 10_000,
            body_timeout_ms: 10_000,
        }
    }
}

/// What the command line asked for.
#[derive(Debug)]
pub enum Command {
    Run(Config),
    Help,
}

/// Non-negative, finite seconds; `what` names the flag in the error.
pub fn parse_seconds(what: &str, raw: &str) -> Result<f64, String> {
    let v: f64 = raw
        .trim()
        .parse()
        .map_err(|_| format!("{what}: '{raw}' is not a number of seconds"))?;
    check_seconds(what, v)
}

pub fn check_seconds(what: &str, v: f64) -> Result<f64, String> {
    if !v.is_finite() || v < 0.0 {
        return Err(format!("{what}: must be a finite number >= 0, got {v}"));
    }
    // Beyond ~100 years the millisecond arithmetic would only invite overflow.
    if v > 3.2e9 {
        return Err(format!("{what}: {v} seconds is too large"));
    }
    Ok(v)
}

impl Config {
    pub fn from_args<I, S>(args: I) -> Result<Command, String>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut cfg = Config::default();
        let mut origins: Vec<String> = Vec::new();
        let mut it = args.into_iter().map(Into::into);
        while let Some(arg) = it.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
                _ => (arg.clone(), None),
            };
            let mut value = |name: &str| -> Result<String, String> {
                match &inline {
                    Some(v) => Ok(v.clone()),
                    None => it.next().ok_or_else(|| format!("{name} needs a value")),
                }
            };
            match flag.as_str() {
                "--help" | "-h" => return Ok(Command::Help),
                "--port" => cfg.port = parse_port("--port", &value("--port")?)?,
                "--foreign-port" => {
                    cfg.foreign_port = parse_port("--foreign-port", &value("--foreign-port")?)?
                }
                "--access-ttl" => {
                    let v = parse_seconds("--access-ttl", &value("--access-ttl")?)?;
                    if v < 0.001 {
                        return Err("--access-ttl: must be at least 0.001 seconds".into());
                    }
                    cfg.access_ttl = v;
                }
                "--grace" => cfg.grace = parse_seconds("--grace", &value("--grace")?)?,
                "--grace-max-uses" => {
                    let raw = value("--grace-max-uses")?;
                    cfg.grace_max_uses = raw
                        .trim()
                        .parse()
                        .map_err(|_| format!("--grace-max-uses: '{raw}' is not a count"))?;
                }
                "--family-lifetime" => {
                    cfg.family_lifetime =
                        parse_seconds("--family-lifetime", &value("--family-lifetime")?)?
                }
                "--idle-timeout" => {
                    let v = parse_seconds("--idle-timeout", &value("--idle-timeout")?)?;
                    cfg.idle_timeout = if v > 0.0 { Some(v) } else { None };
                }
                "--cors-origin" => origins.push(parse_origin(&value("--cors-origin")?)?),
                "--header-timeout-ms" => {
                    cfg.header_timeout_ms =
                        parse_ms("--header-timeout-ms", &value("--header-timeout-ms")?)?
                }
                "--body-timeout-ms" => {
                    cfg.body_timeout_ms =
                        parse_ms("--body-timeout-ms", &value("--body-timeout-ms")?)?
                }
                "--no-expose-www-authenticate" => cfg.expose_www_authenticate = false,
                "--no-expose-dpop-nonce" => cfg.expose_dpop_nonce = false,
                "--dpop" => cfg.dpop = Mode::parse(&value("--dpop")?)?,
                "--dpop-nonces" => {
                    cfg.dpop_nonces = Some(match value("--dpop-nonces")?.trim() {
                        "on" => true,
                        "off" => false,
                        other => return Err(format!("--dpop-nonces: '{other}' is not on or off")),
                    })
                }
                "--test-controls" => cfg.test_controls = true,
                "--static" => cfg.static_dir = Some(PathBuf::from(value("--static")?)),
                other => return Err(format!("unknown argument '{other}'")),
            }
        }
        if !origins.is_empty() {
            cfg.cors = CorsPolicy::Origins(origins);
        }
        Ok(Command::Run(cfg))
    }
}

/// A day is far beyond any sensible request timeout, and keeps `Duration` arithmetic trivial.
const MAX_TIMEOUT_MS: u64 = 86_400_000;

fn parse_ms(what: &str, raw: &str) -> Result<u64, String> {
    let v: u64 = raw
        .trim()
        .parse()
        .map_err(|_| format!("{what}: '{raw}' is not a whole number of milliseconds"))?;
    if v > MAX_TIMEOUT_MS {
        return Err(format!(
            "{what}: {v} ms is too large (at most {MAX_TIMEOUT_MS})"
        ));
    }
    Ok(v)
}

fn parse_port(what: &str, raw: &str) -> Result<u16, String> {
    raw.trim()
        .parse()
        .map_err(|_| format!("{what}: '{raw}' is not a port number"))
}
