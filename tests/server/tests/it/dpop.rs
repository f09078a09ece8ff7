//! DPoP (RFC 9449, security rules server 9, adversarial cases 32–34): proofs at the token
//! endpoints and the API, nonces, key-bound refresh families, and bound tokens never
//! accepted as bearer tokens. Proofs are made here with p256, as WebCrypto makes them.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use reqwest::RequestBuilder;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use token_server::dpop::Mode;
use token_server::Config;

use crate::common::*;

// ---------- a small proof builder ----------

pub(crate) struct Key {
    sk: SigningKey,
    jwk: Value,
    pub(crate) jkt: String,
}

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub(crate) fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn random_id() -> String {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).expect("random");
    b64(b)
}

impl Key {
    pub(crate) fn new() -> Key {
        let sk = loop {
            let mut b = [0u8; 32];
            getrandom::fill(&mut b).expect("random");
            if let Ok(k) = SigningKey::from_slice(&b) {
                break k;
            }
        };
        let p = sk.verifying_key().to_encoded_point(false);
        let (x, y) = (b64(p.x().expect("x")), b64(p.y().expect("y")));
        // RFC 7638: the required members in lexicographic order, no whitespace.
        let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
        let jkt = b64(Sha256::digest(canonical.as_bytes()));
        let jwk = json!({"kty": "EC", "crv": "P-256", "x": x, "y": y});
        Key { sk, jwk, jkt }
    }

    fn header(&self) -> Value {
        json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": self.jwk})
    }

    /// Signs any header and payload: the raw material for malformed proofs.
    fn sign(&self, header: &Value, payload: &Value) -> String {
        let input = format!("{}.{}", b64(header.to_string()), b64(payload.to_string()));
        let sig: Signature = self.sk.sign(input.as_bytes());
        format!("{input}.{}", b64(sig.to_bytes()))
    }

    /// A good proof for `method url`; `extra` adds or overrides claims (`null` removes one).
    pub(crate) fn proof(&self, method: &str, url: &str, extra: Value) -> String {
        self.sign(&self.header(), &claims_for(method, url, extra))
    }

    /// A resource request's proof: with `ath` of `at`, when given.
    pub(crate) fn api_proof(&self, method: &str, url: &str, at: Option<&str>, extra: Value) -> String {
        let mut claims = claims_for(method, url, extra);
        if let Some(at) = at {
            claims["ath"] = json!(ath(at));
        }
        self.sign(&self.header(), &claims)
    }
}

fn claims_for(method: &str, url: &str, extra: Value) -> Value {
    let mut p = json!({"jti": random_id(), "htm": method, "htu": url, "iat": now_s()});
    if let (Some(p), Some(e)) = (p.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            if v.is_null() {
                p.remove(k);
            } else {
                p.insert(k.clone(), v.clone());
            }
        }
    }
    p
}

fn ath(token: &str) -> String {
    b64(Sha256::digest(token.as_bytes()))
}

// ---------- requests ----------

pub(crate) async fn dpop_harness(mode: Mode) -> Harness {
    harness_with(|c: &mut Config| c.dpop = mode).await
}

fn demo() -> Value {
    json!({"username": "demo", "password": "demo"})
}

async fn login_with_proof(h: &Harness, proof: Option<&str>) -> Resp {
    let mut rb = h.http.post(h.url("/auth/login")).json(&demo());
    if let Some(p) = proof {
        rb = rb.header("dpop", p);
    }
    read(rb).await
}

/// Logs in with a fresh proof by `key`, answering one nonce challenge if there is one.
pub(crate) async fn dpop_login(h: &Harness, key: &Key) -> (String, String) {
    let url = h.url("/auth/login");
    let mut r = login_with_proof(h, Some(&key.proof("POST", &url, json!({})))).await;
    if r.body["error"] == "use_dpop_nonce" {
        let nonce = r.header("dpop-nonce").expect("challenge carries a nonce");
        let p = key.proof("POST", &url, json!({ "nonce": nonce }));
        r = login_with_proof(h, Some(&p)).await;
    }
    assert_eq!(r.status, 200, "dpop login: {}", r.text);
    assert_eq!(r.body["token_type"], "DPoP");
    (r.str("access_token"), r.str("refresh_token"))
}

async fn refresh_with_proof(h: &Harness, rt: &str, proof: Option<&str>) -> Resp {
    let mut rb = h
        .http
        .post(h.url("/auth/refresh-token"))
        .json(&json!({ "refresh_token": rt }));
    if let Some(p) = proof {
        rb = rb.header("dpop", p);
    }
    read(rb).await
}

fn dpop_get(h: &Harness, path: &str, at: &str, proof: Option<&str>) -> RequestBuilder {
    let mut rb = h
        .http
        .get(h.url(path))
        .header("authorization", format!("DPoP {at}"));
    if let Some(p) = proof {
        rb = rb.header("dpop", p);
    }
    rb
}

/// A good API proof for `GET path` with `at`'s hash.
fn api_proof(h: &Harness, key: &Key, path: &str, at: &str, extra: Value) -> String {
    let mut claims = json!({ "ath": ath(at) });
    if let (Some(c), Some(e)) = (claims.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            c.insert(k.clone(), v.clone());
        }
    }
    key.proof("GET", &h.url(path), claims)
}

async fn stats(h: &Harness) -> Value {
    h.control_get("/stats").await
}

fn assert_as_refusal(r: &Resp, error: &str, reason: &str) {
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.body["error"], error, "{}", r.text);
    assert_eq!(r.body["cause"], format!("dpop_{reason}"), "{}", r.text);
    assert!(r.body["error_description"].is_string(), "{}", r.text);
}

fn assert_rs_refusal(r: &Resp, error: &str) {
    assert_eq!(r.status, 401, "{}", r.text);
    let www = r.header("www-authenticate").unwrap_or_default();
    assert!(
        www.starts_with(&format!("DPoP error=\"{error}\", error_description=\"")),
        "{www}"
    );
    assert_eq!(r.body["error"], error, "{}", r.text);
}

// ---------- tests ----------

#[tokio::test]
async fn a_valid_proof_at_login_gets_a_dpop_token_bound_to_the_key() {
    let h = dpop_harness(Mode::Optional).await;
    let key = Key::new();
    let (at, _) = dpop_login(&h, &key).await;
    assert_eq!(claims(&at)["cnf"]["jkt"], key.jkt.as_str());
    // The family is bound from the start (RFC 9449 §5).
    assert_eq!(h.family_state().await["dpop_jkt"], key.jkt.as_str());
    let p = api_proof(&h, &key, "/statistics", &at, json!({}));
    let r = read(dpop_get(&h, "/statistics", &at, Some(&p))).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let s = stats(&h).await;
    assert_eq!(s["dpop_proofs_accepted"], 2);
    assert_eq!(s["dpop_proofs_rejected"], 0);
    assert_eq!(s["dpop_jkts"], 1);
    assert_eq!(
        h.control_get("/dpop").await["jkts"],
        json!([key.jkt.as_str()])
    );
}

#[tokio::test]
async fn optional_mode_without_a_proof_is_bearer_as_before() {
    let h = dpop_harness(Mode::Optional).await;
    let r = login_with_proof(&h, None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["token_type"], "Bearer");
    let at = r.str("access_token");
    assert!(claims(&at).get("cnf").is_none());
    assert_eq!(h.family_state().await["dpop_jkt"], Value::Null);
    assert_eq!(h.get("/statistics", Some(&at)).await.status, 200);
    let rt = h.rotate(&r.str("refresh_token")).await;
    assert!(claims(&rt.access).get("cnf").is_none());
    assert_eq!(stats(&h).await["dpop_rejected_missing"], 0);
}

#[tokio::test]
async fn required_mode_refuses_an_unbound_refresh_token_without_a_proof() {
    let h = harness_with(|c| {
        c.dpop = Mode::Optional;
        c.dpop_nonces = Some(false);
    })
    .await;
    let unbound = login_with_proof(&h, None).await;
    assert_eq!(unbound.status, 200, "{}", unbound.text);
    h.control("/config", json!({"dpop": "required", "dpop_nonces": false})).await;
    let r = refresh_with_proof(&h, &unbound.str("refresh_token"), None).await;
    assert_as_refusal(&r, "invalid_dpop_proof", "missing");
}

#[tokio::test]
async fn required_mode_refuses_token_requests_without_a_proof() {
    let h = harness_with(|c| {
        c.dpop = Mode::Required;
        c.dpop_nonces = Some(false);
    })
    .await;
    let r = login_with_proof(&h, None).await;
    assert_as_refusal(&r, "invalid_dpop_proof", "missing");
    let key = Key::new();
    let (_, rt) = dpop_login(&h, &key).await;
    // A bound refresh token without a proof is invalid_grant in this mode too (issue 13).
    let r = refresh_with_proof(&h, &rt, None).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.body["error"], "invalid_grant");
    assert_eq!(r.body["cause"], "dpop_proof_required");
    let s = stats(&h).await;
    assert_eq!(s["dpop_rejected_missing"], 2);
    assert_eq!(
        s["refresh_calls"], 1,
        "a refused proof is still a refresh call"
    );
    assert_eq!(s["refresh_errors"], 1);
    assert_eq!(s["dpop_bound_refresh_refused_no_proof"], 1);
    // Nothing was consumed: the same token refreshes with a proof.
    let url = h.url("/auth/refresh-token");
    let ok = refresh_with_proof(&h, &rt, Some(&key.proof("POST", &url, json!({})))).await;
    assert_eq!(ok.status, 200, "{}", ok.text);
}

#[tokio::test]
async fn each_malformed_proof_is_refused_with_its_reason() {
    let h = dpop_harness(Mode::Optional).await;
    let key = Key::new();
    let other = Key::new();
    let url = h.url("/auth/login");
    let good = claims_for("POST", &url, json!({}));
    let hdr = |patch: Value| {
        let mut v = key.header();
        if let (Some(o), Some(p)) = (v.as_object_mut(), patch.as_object()) {
            for (k, x) in p {
                if x.is_null() {
                    o.remove(k);
                } else {
                    o.insert(k.clone(), x.clone());
                }
            }
        }
        v
    };
    let mut private = key.jwk.clone();
    private["d"] = json!(b64([1u8; 32]));
    let mut p384 = key.jwk.clone();
    p384["crv"] = json!("P-384");
    let mut off_curve = key.jwk.clone();
    off_curve["y"] = json!(b64([1u8; 32]));
    // A proof carrying `key`'s jwk but signed by `other`.
    let forged = {
        let real = key.sign(&key.header(), &good);
        let (input, _) = real.rsplit_once('.').expect("three parts");
        let sig: Signature = other.sk.sign(input.as_bytes());
        format!("{input}.{}", b64(sig.to_bytes()))
    };
    let cases: Vec<(&str, String, &str)> = vec![
        ("two parts", "abc.def".into(), "malformed"),
        ("not base64", "%%%.###.!!!".into(), "malformed"),
        (
            "typ JWT",
            key.sign(&hdr(json!({"typ": "JWT"})), &good),
            "typ",
        ),
        ("no typ", key.sign(&hdr(json!({"typ": null})), &good), "typ"),
        (
            "alg none",
            key.sign(&hdr(json!({"alg": "none"})), &good),
            "alg",
        ),
        (
            "alg HS256",
            key.sign(&hdr(json!({"alg": "HS256"})), &good),
            "alg",
        ),
        ("no jwk", key.sign(&hdr(json!({"jwk": null})), &good), "jwk"),
        (
            "private jwk",
            key.sign(&hdr(json!({"jwk": private})), &good),
            "jwk",
        ),
        (
            "P-384 jwk",
            key.sign(&hdr(json!({"jwk": p384})), &good),
            "jwk",
        ),
        (
            "off-curve jwk",
            key.sign(&hdr(json!({"jwk": off_curve})), &good),
            "jwk",
        ),
        ("other signer", forged, "bad_signature"),
        ("htm", key.proof("GET", &url, json!({})), "htm"),
        (
            "htu path",
            key.proof("POST", &h.url("/auth/other"), json!({})),
            "htu",
        ),
        (
            "htu query",
            key.proof("POST", &format!("{url}?a=1"), json!({})),
            "htu",
        ),
        (
            "htu host",
            key.proof("POST", "http://evil.test/auth/login", json!({})),
            "htu",
        ),
        (
            "no jti",
            key.proof("POST", &url, json!({"jti": null})),
            "malformed",
        ),
        (
            "long jti",
            key.proof("POST", &url, json!({"jti": "j".repeat(129)})),
            "malformed",
        ),
        (
            "no iat",
            key.proof("POST", &url, json!({"iat": null})),
            "malformed",
        ),
        (
            "iat string",
            key.proof("POST", &url, json!({"iat": "now"})),
            "malformed",
        ),
    ];
    for (name, proof, reason) in &cases {
        let r = login_with_proof(&h, Some(proof)).await;
        assert_eq!(
            r.body["cause"],
            format!("dpop_{reason}"),
            "{name}: {}",
            r.text
        );
        assert_as_refusal(&r, "invalid_dpop_proof", reason);
    }
    let s = stats(&h).await;
    assert_eq!(s["dpop_proofs_rejected"], cases.len());
    for reason in [
        "malformed",
        "typ",
        "alg",
        "jwk",
        "bad_signature",
        "htm",
        "htu",
    ] {
        let n = cases.iter().filter(|c| c.2 == reason).count();
        assert_eq!(s[format!("dpop_rejected_{reason}")], n, "{reason}");
    }
    assert_eq!(s["logins"], 0);
    assert_eq!(s["login_failures"], 0);
}

#[tokio::test]
async fn more_than_one_dpop_header_is_refused() {
    let h = dpop_harness(Mode::Optional).await;
    let key = Key::new();
    let url = h.url("/auth/login");
    let r = read(
        h.http
            .post(&url)
            .json(&demo())
            .header("dpop", key.proof("POST", &url, json!({})))
            .header("dpop", key.proof("POST", &url, json!({}))),
    )
    .await;
    assert_as_refusal(&r, "invalid_dpop_proof", "malformed");
}

#[tokio::test]
async fn a_replayed_jti_is_refused() {
    let h = dpop_harness(Mode::Optional).await;
    let key = Key::new();
    let url = h.url("/auth/login");
    let proof = key.proof("POST", &url, json!({"jti": "once"}));
    assert_eq!(login_with_proof(&h, Some(&proof)).await.status, 200);
    let again = login_with_proof(&h, Some(&proof)).await;
    assert_as_refusal(&again, "invalid_dpop_proof", "jti_replay");
    // A new proof reusing the jti is the same replay; another key may use it.
    let resigned = key.proof("POST", &url, json!({"jti": "once", "iat": now_s() - 1}));
    let r = login_with_proof(&h, Some(&resigned)).await;
    assert_as_refusal(&r, "invalid_dpop_proof", "jti_replay");
    let other = Key::new().proof("POST", &url, json!({"jti": "once"}));
    assert_eq!(login_with_proof(&h, Some(&other)).await.status, 200);
    assert_eq!(stats(&h).await["dpop_rejected_jti_replay"], 2);
    assert_eq!(h.control_get("/dpop").await["jti_cache"], 2);
}

#[tokio::test]
async fn a_skewed_iat_is_challenged_and_a_valid_nonce_recovers_it() {
    // Case 34: the client clock is 10 minutes fast. Nonces are off: the iat challenge hands
    // one out all the same, and the retry with it passes despite the same skew.
    let h = dpop_harness(Mode::Optional).await;
    let key = Key::new();
    let url = h.url("/auth/login");
    let fast = now_s() + 600;
    let r = login_with_proof(&h, Some(&key.proof("POST", &url, json!({"iat": fast})))).await;
    assert_as_refusal(&r, "use_dpop_nonce", "iat");
    let nonce = r
        .header("dpop-nonce")
        .expect("the iat challenge carries a nonce");
    let retry = key.proof("POST", &url, json!({"iat": fast + 1, "nonce": nonce}));
    let ok = login_with_proof(&h, Some(&retry)).await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    // A slow clock too, and at the API with the RS nonce.
    let at = ok.str("access_token");
    let slow = now_s() - 600;
    let p = api_proof(&h, &key, "/statistics", &at, json!({"iat": slow}));
    let r = read(dpop_get(&h, "/statistics", &at, Some(&p))).await;
    assert_rs_refusal(&r, "use_dpop_nonce");
    let rs_nonce = r.header("dpop-nonce").expect("RS nonce");
    assert_ne!(rs_nonce, nonce, "separate AS and RS nonces");
    let p = api_proof(
        &h,
        &key,
        "/statistics",
        &at,
        json!({"iat": slow, "nonce": rs_nonce}),
    );
    let r = read(dpop_get(&h, "/statistics", &at, Some(&p))).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let s = stats(&h).await;
    assert_eq!(s["dpop_rejected_iat"], 2);
    assert_eq!(s["dpop_nonce_challenges_as"], 1);
    assert_eq!(s["dpop_nonce_challenges_rs"], 1);
    assert_eq!(s["logins"], 1);
    assert_eq!(
        s["unauthorized_sent"], 0,
        "a challenge is no verdict on the token"
    );
}

#[tokio::test]
async fn the_as_challenges_a_proof_without_the_current_nonce() {
    let h = dpop_harness(Mode::Required).await;
    let key = Key::new();
    let url = h.url("/auth/login");
    let r = login_with_proof(&h, Some(&key.proof("POST", &url, json!({})))).await;
    assert_as_refusal(&r, "use_dpop_nonce", "nonce");
    let nonce = r.header("dpop-nonce").expect("DPoP-Nonce on the challenge");
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    let ok = login_with_proof(&h, Some(&key.proof("POST", &url, json!({"nonce": nonce})))).await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    assert_eq!(ok.header("dpop-nonce").as_deref(), Some(nonce.as_str()));
    // A refresh challenged for its nonce is not a refresh call: one refresh, one count.
    let rt = ok.str("refresh_token");
    let refresh_url = h.url("/auth/refresh-token");
    let stale = key.proof("POST", &refresh_url, json!({"nonce": "stale"}));
    let r = refresh_with_proof(&h, &rt, Some(&stale)).await;
    assert_as_refusal(&r, "use_dpop_nonce", "nonce");
    let s = stats(&h).await;
    assert_eq!(s["refresh_calls"], 0);
    assert_eq!(s["refresh_errors"], 0);
    let p = key.proof("POST", &refresh_url, json!({"nonce": nonce}));
    let r = refresh_with_proof(&h, &rt, Some(&p)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let s = stats(&h).await;
    assert_eq!(s["refresh_calls"], 1);
    assert_eq!(s["refresh_ok"], 1);
    assert_eq!(s["dpop_nonce_challenges_as"], 2);
    assert_eq!(s["dpop_rejected_nonce"], 2);
    assert_eq!(s["login_failures"], 0);
}

#[tokio::test]
async fn the_rs_challenges_with_401_and_a_dpop_www_authenticate() {
    let h = dpop_harness(Mode::Required).await;
    let key = Key::new();
    let (at, _) = dpop_login(&h, &key).await;
    let as_nonce = h.control_get("/dpop").await["as_nonce"].clone();
    // The AS nonce is not the RS nonce.
    let p = api_proof(&h, &key, "/statistics", &at, json!({ "nonce": as_nonce }));
    let r = read(dpop_get(&h, "/statistics", &at, Some(&p))).await;
    assert_rs_refusal(&r, "use_dpop_nonce");
    let nonce = r.header("dpop-nonce").expect("DPoP-Nonce on the challenge");
    assert_ne!(Some(nonce.as_str()), as_nonce.as_str());
    let p = api_proof(&h, &key, "/statistics", &at, json!({ "nonce": nonce }));
    let r = read(dpop_get(&h, "/statistics", &at, Some(&p))).await;
    assert_eq!(r.status, 200, "{}", r.text);
    // GraphQL answers token problems in a 200, but a nonce challenge is HTTP's: a 401.
    let p = api_proof(&h, &key, "/graphql", &at, json!({}));
    let r = read(dpop_get(&h, "/graphql", &at, Some(&p))).await;
    assert_rs_refusal(&r, "use_dpop_nonce");
    let s = stats(&h).await;
    assert_eq!(s["dpop_nonce_challenges_rs"], 2);
    assert_eq!(s["unauthorized_sent"], 0);
}

#[tokio::test]
async fn every_as_and_rs_answer_carries_the_nonce_while_nonces_are_on() {
    let h = dpop_harness(Mode::Required).await;
    let d = h.control_get("/dpop").await;
    assert_eq!(d["mode"], "required");
    assert_eq!(
        d["nonces"], true,
        "nonces are on by default when DPoP is required"
    );
    let (as_nonce, rs_nonce) = (d["as_nonce"].clone(), d["rs_nonce"].clone());
    let key = Key::new();
    let (at, _) = dpop_login(&h, &key).await;
    let bad_login = h
        .post_json("/auth/login", json!({"username": "demo", "password": "x"}))
        .await;
    let bad_refresh = h.refresh("unknown").await;
    for r in [&bad_login, &bad_refresh] {
        assert_eq!(r.status, 400, "{}", r.text);
        assert_eq!(r.header("dpop-nonce").as_deref(), as_nonce.as_str());
    }
    let p = api_proof(&h, &key, "/statistics", &at, json!({ "nonce": rs_nonce }));
    let ok = read(dpop_get(&h, "/statistics", &at, Some(&p))).await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    let no_token = h.get("/statistics", None).await;
    assert_eq!(
        no_token.header("www-authenticate").as_deref(),
        Some("DPoP algs=\"ES256\"")
    );
    for r in [&ok, &no_token] {
        assert_eq!(r.header("dpop-nonce").as_deref(), rs_nonce.as_str());
    }
    // Endpoints that take no proofs carry no nonce.
    assert!(h
        .get("/forbidden", None)
        .await
        .header("dpop-nonce")
        .is_none());
    assert!(h
        .post_json("/auth/logout", json!({}))
        .await
        .header("dpop-nonce")
        .is_none());
}

#[tokio::test]
async fn a_rotated_nonce_stops_at_once() {
    let h = dpop_harness(Mode::Required).await;
    let key = Key::new();
    let (at, _) = dpop_login(&h, &key).await;
    let before = h.control_get("/dpop").await;
    let rotated = h.control("/dpop", json!({"rotate": "rs"})).await;
    assert_eq!(
        rotated["as_nonce"], before["as_nonce"],
        "only the RS nonce moved"
    );
    assert_ne!(rotated["rs_nonce"], before["rs_nonce"]);
    let p = api_proof(
        &h,
        &key,
        "/statistics",
        &at,
        json!({ "nonce": before["rs_nonce"] }),
    );
    let r = read(dpop_get(&h, "/statistics", &at, Some(&p))).await;
    assert_rs_refusal(&r, "use_dpop_nonce");
    assert_eq!(
        r.header("dpop-nonce").as_deref(),
        rotated["rs_nonce"].as_str()
    );
    // A reset moves every nonce on: none from before it is valid after it.
    let after_reset = h.control("/reset", json!({})).await;
    assert_eq!(after_reset["config"]["dpop"], "required");
    let d = h.control_get("/dpop").await;
    assert_ne!(d["as_nonce"], rotated["as_nonce"]);
    assert_ne!(d["rs_nonce"], rotated["rs_nonce"]);
    // The optional timer rotates lazily on the server clock.
    h.control("/config", json!({"dpop_nonce_rotate": 5})).await;
    h.advance_clock(6_000).await;
    assert_ne!(h.control_get("/dpop").await["as_nonce"], d["as_nonce"]);
}

#[tokio::test]
async fn a_bound_refresh_needs_a_proof_by_its_key_and_a_refusal_changes_nothing() {
    let h = dpop_harness(Mode::Optional).await;
    let key = Key::new();
    let thief = Key::new();
    let (_, rt) = dpop_login(&h, &key).await;
    let url = h.url("/auth/refresh-token");
    let none = refresh_with_proof(&h, &rt, None).await;
    assert_eq!(none.status, 400, "{}", none.text);
    assert_eq!(none.body["error"], "invalid_grant");
    assert_eq!(none.body["cause"], "dpop_proof_required");
    let other = refresh_with_proof(&h, &rt, Some(&thief.proof("POST", &url, json!({})))).await;
    assert_eq!(other.status, 400, "{}", other.text);
    assert_eq!(other.body["error"], "invalid_grant");
    assert_eq!(other.body["cause"], "dpop_key_mismatch");
    // Keycloak #36475 is the bug not to have: nothing rotated, no reuse detection.
    let fam = h.family_state().await;
    assert_eq!(fam["state"], "active");
    assert_eq!(fam["generation"], 1);
    let s = stats(&h).await;
    assert_eq!(s["reuse_detections"], 0);
    assert_eq!(s["dpop_bound_refresh_refused_no_proof"], 1);
    assert_eq!(s["dpop_bound_refresh_refused_other_key"], 1);
    // The rightful key carries on with the same token, and the new one is bound too.
    let ok = refresh_with_proof(&h, &rt, Some(&key.proof("POST", &url, json!({})))).await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    assert_eq!(ok.body["token_type"], "DPoP");
    assert_eq!(
        claims(&ok.str("access_token"))["cnf"]["jkt"],
        key.jkt.as_str()
    );
    let next = refresh_with_proof(&h, &ok.str("refresh_token"), None).await;
    assert_eq!(next.body["cause"], "dpop_proof_required");
}

#[tokio::test]
async fn the_first_refresh_with_a_proof_binds_an_unbound_family() {
    let h = dpop_harness(Mode::Optional).await;
    let p = h.login().await;
    let key = Key::new();
    let url = h.url("/auth/refresh-token");
    let r = refresh_with_proof(&h, &p.refresh, Some(&key.proof("POST", &url, json!({})))).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["token_type"], "DPoP");
    assert_eq!(h.family_state().await["dpop_jkt"], key.jkt.as_str());
    let r = refresh_with_proof(&h, &r.str("refresh_token"), None).await;
    assert_eq!(r.body["cause"], "dpop_proof_required");
}

#[tokio::test]
async fn a_bound_access_token_sent_as_bearer_is_refused() {
    let h = dpop_harness(Mode::Optional).await;
    let key = Key::new();
    let (at, _) = dpop_login(&h, &key).await;
    let r = h.get("/statistics", Some(&at)).await;
    assert_rs_refusal(&r, "invalid_dpop_proof");
    // Also with DPoP switched off: a stolen bound token is worth nothing as a bearer token.
    h.control("/config", json!({"dpop": "off"})).await;
    let r = h.get("/statistics", Some(&at)).await;
    assert_rs_refusal(&r, "invalid_dpop_proof");
    let r = h.get("/graphql", Some(&at)).await;
    assert_rs_refusal(&r, "invalid_dpop_proof");
    let s = stats(&h).await;
    assert_eq!(s["dpop_bearer_downgrades"], 3);
    assert_eq!(s["api_ok"], 0);
}

#[tokio::test]
async fn the_api_needs_a_proof_with_ath_and_the_bound_key() {
    let h = dpop_harness(Mode::Optional).await;
    let key = Key::new();
    let other = Key::new();
    let (at, _) = dpop_login(&h, &key).await;
    let url = h.url("/statistics");
    let cases: Vec<(Option<String>, &str)> = vec![
        (None, "missing"),
        (Some(key.proof("GET", &url, json!({}))), "ath"),
        (
            Some(key.proof("GET", &url, json!({"ath": ath("another token")}))),
            "ath",
        ),
        (
            Some(other.proof("GET", &url, json!({"ath": ath(&at)}))),
            "jkt_mismatch",
        ),
        (
            Some(key.proof("POST", &url, json!({"ath": ath(&at)}))),
            "htm",
        ),
        (
            Some(key.proof("GET", &h.url("/other-statistics"), json!({"ath": ath(&at)}))),
            "htu",
        ),
    ];
    for (proof, reason) in &cases {
        let counter = format!("dpop_rejected_{reason}");
        let before = stats(&h).await[&counter].as_u64();
        let r = read(dpop_get(&h, "/statistics", &at, proof.as_deref())).await;
        assert_rs_refusal(&r, "invalid_dpop_proof");
        let after = stats(&h).await[&counter].as_u64();
        assert_eq!(after, before.map(|n| n + 1), "{reason}: {}", r.text);
    }
    let s = stats(&h).await;
    assert_eq!(s["dpop_rejected_ath"], 2);
    assert_eq!(s["unauthorized_sent"], cases.len());
    // An unbound token in the DPoP scheme is no DPoP token.
    let bearer = login_with_proof(&h, None).await.str("access_token");
    let p = api_proof(&h, &key, "/statistics", &bearer, json!({}));
    let r = read(dpop_get(&h, "/statistics", &bearer, Some(&p))).await;
    assert_eq!(r.status, 401);
    assert!(r
        .header("www-authenticate")
        .unwrap_or_default()
        .starts_with("DPoP error=\"invalid_token\""));
}

#[tokio::test]
async fn an_expired_bound_token_is_invalid_token_in_the_dpop_scheme() {
    let h = dpop_harness(Mode::Optional).await;
    let key = Key::new();
    let (at, _) = dpop_login(&h, &key).await;
    h.advance_clock(61_000).await;
    // The proof's iat follows the server clock here, so only the token is out of date.
    let p = api_proof(&h, &key, "/statistics", &at, json!({"iat": now_s() + 61}));
    let r = read(dpop_get(&h, "/statistics", &at, Some(&p))).await;
    assert_eq!(r.status, 401, "{}", r.text);
    assert_eq!(
        r.header("www-authenticate").as_deref(),
        Some("DPoP error=\"invalid_token\", error_description=\"access token expired\"")
    );
}

#[tokio::test]
async fn required_mode_refuses_unbound_bearer_tokens_at_the_api() {
    let h = dpop_harness(Mode::Optional).await;
    let p = h.login().await;
    assert_eq!(h.get("/statistics", Some(&p.access)).await.status, 200);
    h.control("/config", json!({"dpop": "required", "dpop_nonces": false}))
        .await;
    let r = h.get("/statistics", Some(&p.access)).await;
    assert_eq!(r.status, 401);
    assert!(r
        .header("www-authenticate")
        .unwrap_or_default()
        .starts_with("DPoP error=\"invalid_token\""));
}

#[tokio::test]
async fn cors_allows_the_dpop_header_and_exposes_the_nonce() {
    let h = dpop_harness(Mode::Required).await;
    let origin = h.base.clone();
    let pre = read(
        h.http
            .request(reqwest::Method::OPTIONS, h.url("/auth/refresh-token"))
            .header("origin", &origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type, dpop"),
    )
    .await;
    assert_eq!(pre.status, 204);
    let allow = pre
        .header("access-control-allow-headers")
        .unwrap_or_default();
    assert!(allow.split(", ").any(|x| x == "DPoP"), "{allow}");
    let r = read(h.http.get(h.url("/statistics")).header("origin", &origin)).await;
    let expose = r
        .header("access-control-expose-headers")
        .unwrap_or_default();
    assert!(
        expose.contains("DPoP-Nonce") && expose.contains("WWW-Authenticate"),
        "{expose}"
    );
    assert!(r.header("dpop-nonce").is_some());
    h.control("/config", json!({"expose_dpop_nonce": false}))
        .await;
    let r = read(h.http.get(h.url("/statistics")).header("origin", &origin)).await;
    let expose = r
        .header("access-control-expose-headers")
        .unwrap_or_default();
    assert!(
        !expose.contains("DPoP-Nonce") && expose.contains("WWW-Authenticate"),
        "{expose}"
    );
}

#[tokio::test]
async fn mode_off_ignores_dpop_entirely() {
    let h = harness().await;
    assert_eq!(h.control_get("/config").await["dpop"], "off");
    let key = Key::new();
    let url = h.url("/auth/login");
    let r = login_with_proof(&h, Some(&key.proof("POST", &url, json!({})))).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["token_type"], "Bearer");
    assert!(r.header("dpop-nonce").is_none());
    let at = r.str("access_token");
    assert!(claims(&at).get("cnf").is_none());
    // A DPoP-scheme request is an unknown scheme, answered as no credentials (RFC 6750).
    let p = api_proof(&h, &key, "/statistics", &at, json!({}));
    let r = read(dpop_get(&h, "/statistics", &at, Some(&p))).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate").as_deref(), Some("Bearer"));
    assert!(r.header("dpop-nonce").is_none());
    let ok = h.get("/statistics", Some(&at)).await;
    assert_eq!(ok.status, 200);
    let s = stats(&h).await;
    assert_eq!(s["dpop_proofs_accepted"], 0);
    assert_eq!(s["dpop_proofs_rejected"], 0);
    let bad = refresh_with_proof(&h, "x", Some("garbage")).await;
    assert_eq!(
        bad.body["cause"], "unknown_token",
        "the header is not even parsed"
    );
}

#[tokio::test]
async fn flags_and_control_switch_the_mode() {
    let Ok(token_server::Command::Run(c)) = Config::from_args([
        "--dpop",
        "required",
        "--dpop-nonces=off",
        "--no-expose-dpop-nonce",
    ]) else {
        panic!("parses");
    };
    assert_eq!(c.dpop, Mode::Required);
    assert_eq!(c.dpop_nonces, Some(false));
    assert!(!c.expose_dpop_nonce);
    assert!(Config::from_args(["--dpop", "always"]).is_err());
    assert!(Config::from_args(["--dpop-nonces", "yes"]).is_err());
    let h = harness().await;
    let c = h.control("/config", json!({"dpop": "required"})).await;
    assert_eq!(
        (c["dpop"].as_str(), c["dpop_nonces"].as_bool()),
        (Some("required"), Some(true))
    );
    let c = h.control("/config", json!({"dpop": "optional"})).await;
    assert_eq!(
        (c["dpop"].as_str(), c["dpop_nonces"].as_bool()),
        (Some("optional"), Some(false))
    );
    let c = h.control("/config", json!({"dpop_nonces": true})).await;
    assert_eq!(c["dpop_nonces"], true);
    let r = h
        .post_json("/__control/config", json!({"dpop": "sometimes"}))
        .await;
    assert_eq!(r.status, 400);
    let c = h.control("/reset", json!({})).await;
    assert_eq!(c["config"]["dpop"], "off", "reset returns to the flags");
}
