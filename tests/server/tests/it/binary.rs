//! The binary's command line and its single ready line.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use serde_json::{json, Value};

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn binary_prints_one_ready_line_and_serves() {
    let mut child = Child(
        Command::new(env!("CARGO_BIN_EXE_token-server"))
            .args([
                "--port",
                "0",
                "--test-controls",
                "--access-ttl",
                "1.5",
                "--grace=2",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn"),
    );
    let stdout = child.0.stdout.take().expect("stdout");
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    })
    .await
    .expect("join")
    .expect("line");
    assert!(
        line.starts_with("{\"listening\":\"http://127.0.0.1:"),
        "{line}"
    );
    let v: Value = serde_json::from_str(line.trim()).expect("json line");
    let base = v["listening"].as_str().expect("listening").to_string();
    let foreign = v["foreign"].as_str().expect("foreign").to_string();
    assert_ne!(base, foreign);
    let http = crate::common::client();
    let cfg: Value = http
        .get(format!("{base}/__control/config"))
        .send()
        .await
        .expect("config")
        .json()
        .await
        .expect("json");
    assert_eq!(cfg["access_ttl"], json!(1.5));
    assert_eq!(cfg["grace"], json!(2.0));
    let login = http
        .post(format!("{base}/auth/login"))
        .json(&json!({"username": "demo", "password": "demo"}))
        .send()
        .await
        .expect("login");
    assert_eq!(login.status(), 200);
    let f = http.get(&foreign).send().await.expect("foreign");
    assert_eq!(f.status(), 200);
}

#[test]
fn binary_rejects_bad_arguments() {
    let out = Command::new(env!("CARGO_BIN_EXE_token-server"))
        .args(["--access-ttl", "soon"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        out.stdout.is_empty(),
        "nothing on stdout that a harness could mistake"
    );
    let help = Command::new(env!("CARGO_BIN_EXE_token-server"))
        .arg("--help")
        .output()
        .expect("run");
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("--test-controls"));
}
