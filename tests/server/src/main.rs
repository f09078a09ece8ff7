use std::io::Write;
use std::process::ExitCode;

use token_server::{start, Command, Config, USAGE};

fn main() -> ExitCode {
    let cfg = match Config::from_args(std::env::args().skip(1)) {
        Ok(Command::Run(cfg)) => cfg,
        Ok(Command::Help) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("token-server: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("token-server: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let server = match start(cfg).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("token-server: cannot listen: {e}");
                return ExitCode::FAILURE;
            }
        };
        // Exactly one line on stdout, flushed at once: test harnesses wait for it.
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}", server.ready_line());
        let _ = out.flush();
        drop(out);
        let c = server.config();
        // DPoP is named only when on, so the default summary reads as it always did.
        let dpop = match c.dpop {
            token_server::dpop::Mode::Off => String::new(),
            m => format!(
                " dpop={} nonces={}",
                m.name(),
                c.dpop_nonces.unwrap_or(m.default_nonces())
            ),
        };
        eprintln!(
            "token-server: {} (foreign {}), access_ttl={}s grace={}s test_controls={} cors=[{}] header_timeout={}ms body_timeout={}ms{}{}",
            server.url(),
            server.foreign_url(),
            c.access_ttl,
            c.grace,
            c.test_controls,
            server.cors_origins().join(", "),
            c.header_timeout_ms,
            c.body_timeout_ms,
            dpop,
            c.static_dir
                .as_ref()
                .map(|d| format!(" static={}", d.display()))
                .unwrap_or_default()
        );
        std::future::pending::<ExitCode>().await
    })
}
