//! Token-set, storage-record and counter parsing (see the module docs of token.rs).
//! Compiled only under `cfg(test)` (see the `mod tests` declaration in token.rs).

use super::*;

fn s(v: &str) -> Field {
    Field::Str(v.into())
}

fn parse(a: Field, r: Field, e: Field) -> Result<TokenSet, Invalid> {
    parse_token_set(a, r, e, None, 0.0, 0.0)
}

#[test]
fn expires_in_wins_and_counts_from_receipt() {
    let t = parse_token_set(s("a"), s("r"), Field::Num(300.0), Some((Some(9.0), Some(1.0))), 0.0, 0.0).unwrap();
    assert_eq!(t, TokenSet { access: "a".into(), refresh: Some("r".into()), lifetime_ms: Some(300_000.0) });
    let t = parse(s("a"), Field::Absent, s("60")).unwrap();
    assert_eq!((t.refresh.clone(), t.lifetime_ms), (None, Some(60_000.0)));
}

#[test]
fn malformed_responses_are_described_without_their_values() {
    let bad = [
        (Field::Absent, Field::Absent, Field::Absent, "access_token is missing"),
        (s(""), Field::Absent, Field::Absent, "access_token is empty"),
        (Field::Num(1.0), Field::Absent, Field::Absent, "access_token is not a string"),
        (Field::Other, Field::Absent, Field::Absent, "access_token is not a string"),
        (s("a b"), Field::Absent, Field::Absent, "access_token contains a space"),
        (s("a\r\nX-Evil: 1"), Field::Absent, Field::Absent, "access_token contains a space"),
        (s("a"), Field::Num(5.0), Field::Absent, "refresh_token is not a string"),
        (s("a"), s("r\n"), Field::Absent, "refresh_token contains"),
        (s("a"), Field::Absent, Field::Num(-1.0), "expires_in is not"),
        (s("a"), Field::Absent, Field::Num(f64::NAN), "expires_in is not"),
        (s("a"), Field::Absent, s("soon"), "expires_in is not"),
        (s("a"), Field::Absent, Field::Other, "expires_in is not"),
    ];
    for (a, r, e, want) in bad {
        let got = parse(a, r, e).unwrap_err();
        assert!(got.starts_with(want), "{got}");
    }
}

#[test]
fn zero_expires_in_means_unknown_not_expired() {
    let t = parse(s("a"), Field::Absent, Field::Num(0.0)).unwrap();
    assert_eq!(t.lifetime_ms, None);
}

#[test]
fn jwt_exp_minus_iat_is_immune_to_client_clock() {
    // The client clock is 10 minutes fast: the lifetime is still 300 s.
    let t = parse_token_set(s("j"), Field::Absent, Field::Absent, Some((Some(1300.0), Some(1000.0))), 1_600_000.0, 0.0).unwrap();
    assert_eq!(t.lifetime_ms, Some(300_000.0));
}

#[test]
fn jwt_exp_alone_uses_server_offset_and_never_yields_expired() {
    let exp = Some((Some(1300.0), None));
    let t = parse_token_set(s("j"), Field::Absent, Field::Absent, exp, 1_000_000.0, 0.0).unwrap();
    assert_eq!(t.lifetime_ms, Some(300_000.0));
    // Client 10 minutes fast, offset known: corrected.
    let t = parse_token_set(s("j"), Field::Absent, Field::Absent, exp, 1_600_000.0, -600_000.0).unwrap();
    assert_eq!(t.lifetime_ms, Some(300_000.0));
    // Client 10 minutes fast, offset unknown: unknown expiry, never "already expired".
    let t = parse_token_set(s("j"), Field::Absent, Field::Absent, exp, 1_600_000.0, 0.0).unwrap();
    assert_eq!(t.lifetime_ms, None);
}

#[test]
fn opaque_tokens_and_useless_claims_mean_unknown_expiry() {
    for jwt in [None, Some((None, None)), Some((None, Some(5.0))), Some((Some(1.0), Some(5.0)))] {
        let t = parse_token_set(s("t"), Field::Absent, Field::Absent, jwt, 10_000.0, 0.0).unwrap();
        assert_eq!(t.lifetime_ms, None, "{jwt:?}");
    }
}

#[test]
fn counts_are_whole_numbers_up_to_two_to_the_53() {
    assert_eq!(parse_count(&Field::Num(7.0)), Some(7));
    assert_eq!(parse_count(&Field::Num(MAX_COUNT as f64)), Some(MAX_COUNT));
    for bad in [1e300, f64::INFINITY, f64::NAN, -1.0, 1.5, (MAX_COUNT as f64) * 2.0] {
        assert_eq!(parse_count(&Field::Num(bad)), None, "{bad}");
    }
    assert_eq!(parse_count(&Field::Str("1".into())), None);
}

#[test]
fn wipe_zeroes_and_clears() {
    let mut secret = String::from("rt-123");
    wipe(&mut secret);
    assert!(secret.is_empty());
}

#[test]
fn with_dpop_on_only_a_dpop_token_type_is_accepted() {
    assert_eq!(check_token_type(&s("DPoP"), true), Ok(()));
    assert_eq!(check_token_type(&s("dpop"), true), Ok(()));
    for downgrade in [s("Bearer"), s("bearer"), s("N_A"), Field::Num(1.0), Field::Other] {
        let e = check_token_type(&downgrade, true).unwrap_err();
        assert!(e.starts_with("token_type is not DPoP"), "{downgrade:?}: {e}");
    }
    assert!(check_token_type(&Field::Absent, true).unwrap_err().starts_with("token_type is missing"));
}

#[test]
fn with_dpop_off_a_dpop_token_is_refused_and_anything_else_is_bearer() {
    assert!(check_token_type(&s("DPoP"), false).unwrap_err().ends_with("dpop is off"));
    for bearer in [Field::Absent, s("Bearer"), s("bearer"), s("mac"), Field::Num(1.0)] {
        assert_eq!(check_token_type(&bearer, false), Ok(()), "{bearer:?}");
    }
}
