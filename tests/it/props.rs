//! Properties of minting and inspecting, and the bounded fuzz run of the three
//! parsers of untrusted input (key decoder, config parser, env-file merger), over
//! generated inputs.
//!
//! Bounded by case count, so a CI run takes the same time every time (about 10 s in a
//! debug build). `BEDROCK_KEYD_FUZZ_CASES=N` runs N cases per property instead, for a
//! longer hunt; a failure prints the minimal input and proptest's seed to replay it.

use std::time::{Duration, UNIX_EPOCH};

use aws_credential_types::Credentials;
use bedrock_keyd::key::decode::decode;
use bedrock_keyd::key::format::extract_key;
use bedrock_keyd::key::mint::mint;
use bedrock_keyd::key::{Lifetime, Region};
use proptest::prelude::*;

/// `default` cases per property, or `$BEDROCK_KEYD_FUZZ_CASES`.
fn cases(default: u32) -> u32 {
    std::env::var("BEDROCK_KEYD_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn region() -> impl Strategy<Value = String> {
    "[a-z]{2}(-gov|-iso)?-[a-z]{4,9}-[1-9]"
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(2000)))]

    /// Everything `inspect` reports about a minted key is what went into it.
    #[test]
    fn inspect_round_trips_mint(
        access_key_id in "(AKIA|ASIA)[A-Z2-7]{16}",
        secret in "[ -~]{1,64}",
        token in proptest::option::of("[A-Za-z0-9+/]{1,1200}={0,2}"),
        region in region(),
        lifetime in 1u64..=43_200,
        signed_at in 946_684_800u64..4_102_444_800,
        signed_nanos in 0u32..1_000_000_000,
        // Credentials that expire somewhere from 1 s after signing to never.
        cred_left in proptest::option::of(1u64..=50_000),
    ) {
        let now = UNIX_EPOCH + Duration::new(signed_at, signed_nanos);
        let issued = UNIX_EPOCH + Duration::from_secs(signed_at);
        // Credentials expiring at least 1 s after `now` (not just after `issued`).
        let cred_expiry = cred_left.map(|s| now + Duration::from_secs(s));
        let creds = Credentials::new(&access_key_id, &secret, token.clone(), cred_expiry, "prop");
        let minted = mint(&creds, &Region::new(&region).unwrap(), Lifetime::from_secs(lifetime).unwrap(), now).unwrap();
        let decoded = decode(minted.key.expose()).unwrap();

        prop_assert_eq!(&decoded.region, &region);
        prop_assert_eq!(&decoded.access_key_id, &access_key_id);
        prop_assert_eq!(decoded.issued_at, issued);
        prop_assert_eq!(decoded.has_session_token, token.is_some());
        prop_assert_eq!(decoded.expires_at, minted.meta.expires_at);
        prop_assert_eq!(decoded.lifetime, minted.meta.lifetime());
        let want = match cred_left {
            None => lifetime,
            Some(left) => lifetime.min(left),
        };
        prop_assert_eq!(decoded.lifetime, Duration::from_secs(want));
        if let Some(expiry) = cred_expiry {
            prop_assert!(decoded.expires_at <= expiry);
        }
        // The file formats carry the same key.
        let raw = bedrock_keyd::key::format::raw(&minted.key);
        prop_assert_eq!(extract_key(&raw, None).unwrap(), minted.key.expose());
        let json = bedrock_keyd::key::format::json(&minted.key, &minted.meta);
        prop_assert_eq!(extract_key(&json, None).unwrap(), minted.key.expose());
    }

    /// `decode` never panics, whatever it is given.
    #[test]
    fn decode_never_panics_on_arbitrary_text(input in "\\PC*") {
        let _ = decode(&input);
        let _ = extract_key(&input, None);
    }

    /// ... nor on arbitrary bytes behind the prefix, base64-encoded or not.
    #[test]
    fn decode_never_panics_on_arbitrary_payloads(payload in proptest::collection::vec(any::<u8>(), 0..600)) {
        use base64::Engine as _;
        let encoded = base64::engine::general_purpose::STANDARD.encode(&payload);
        let _ = decode(&format!("bedrock-api-key-{encoded}"));
        let _ = decode(&format!("bedrock-api-key-{}", String::from_utf8_lossy(&payload)));
    }

    /// ... nor on near-misses: real presigned URLs with one parameter mangled.
    #[test]
    fn decode_never_panics_on_mangled_urls(
        cut in 0usize..400,
        insert in "[%&=/?A-Za-z0-9+-]{0,12}",
        token in proptest::option::of("[A-Za-z0-9+/=]{1,40}"),
    ) {
        use base64::Engine as _;
        let creds = Credentials::new("AKIDEXAMPLE", "secret", token, None, "prop");
        let minted = mint(&creds, &Region::new("us-east-1").unwrap(), Lifetime::from_secs(60).unwrap(), UNIX_EPOCH + Duration::from_secs(1_800_000_000)).unwrap();
        let b64 = &minted.key.expose()["bedrock-api-key-".len()..];
        let url = String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b64).unwrap()).unwrap();
        let at = cut.min(url.len());
        let mangled = format!("{}{}{}", &url[..at], insert, &url[at..]);
        let key = format!("bedrock-api-key-{}", base64::engine::general_purpose::STANDARD.encode(mangled));
        let _ = decode(&key);
    }
}

const VALID_CONFIG: &str = r#"
log_format = "json"
listen = "127.0.0.1:9464"

[defaults]
region = "us-east-1"
lifetime = "12h"
refresh_at = 0.5
jitter = 0.1
min_remaining = "5m"

[[key]]
name = "default"
profile = "prod"
role_arn = "arn:aws:iam::123456789012:role/bedrock-invoke"
external_id = "example-external-id"

  [[key.sink]]
  type = "file"
  path = "/run/bedrock-keyd/default.key"
  format = "json"
  mode = "0640"

  [[key.sink]]
  type = "env-file"
  path = "/etc/myapp/bedrock.env"

  [[key.notify]]
  pid_file = "/run/myapp.pid"
  signal = "HUP"
"#;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(3000)))]

    /// The config parser never panics, and every refusal says where: `file:line:col`.
    #[test]
    fn config_parser_never_panics_and_locates_errors(text in "\\PC{0,400}") {
        let path = std::path::Path::new("/etc/bedrock-keyd/config.toml");
        if let Err(e) = bedrock_keyd::config::parse(&text, path) {
            let msg = e.to_string();
            prop_assert!(msg.starts_with("/etc/bedrock-keyd/config.toml"), "{msg}");
        }
    }

    /// Near-misses of a valid config (a character deleted, replaced or inserted
    /// anywhere) are accepted or refused with a located error; never a panic.
    #[test]
    fn config_parser_handles_mutations_of_a_valid_config(
        at in 0usize..VALID_CONFIG.len(),
        op in 0u8..3,
        ch in proptest::char::any(),
    ) {
        let mut text: Vec<char> = VALID_CONFIG.chars().collect();
        let at = at.min(text.len().saturating_sub(1));
        match op {
            0 => { text.remove(at); }
            1 => text[at] = ch,
            _ => text.insert(at, ch),
        }
        let text: String = text.into_iter().collect();
        let path = std::path::Path::new("/c.toml");
        if let Err(e) = bedrock_keyd::config::parse(&text, path) {
            let msg = e.to_string();
            prop_assert!(msg.starts_with("/c.toml:"), "{msg}");
            // line:col follow the path
            let rest = &msg["/c.toml:".len()..];
            prop_assert!(rest.split(':').next().unwrap().parse::<usize>().is_ok(), "{msg}");
        }
    }
}

#[test]
fn the_valid_config_used_above_is_valid() {
    bedrock_keyd::config::parse(VALID_CONFIG, std::path::Path::new("/c.toml")).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(3000)))]

    /// The env-file merger never panics on arbitrary bytes; when it accepts a file,
    /// the variable then holds the key.
    #[test]
    fn env_file_merge_never_panics(
        text in proptest::collection::vec(any::<u8>(), 0..600),
        lines in proptest::collection::vec("(export )?[A-Z_]{1,8}=[\"']?[ -~]{0,20}[\"']?|#[ -~]{0,20}|", 0..8),
    ) {
        use bedrock_keyd::key::format::value_of;
        use bedrock_keyd::sink::envfile::merge;
        const KEY: &str = "bedrock-api-key-QUJD";
        for input in [text, lines.join("\n").into_bytes(), lines.join("\r\n").into_bytes()] {
            if let Ok(out) = merge(&input, "AWS_BEARER_TOKEN_BEDROCK", KEY) {
                prop_assert_eq!(value_of(&out, "AWS_BEARER_TOKEN_BEDROCK"), Some(KEY));
            }
        }
    }
}
