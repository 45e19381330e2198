//! Byte-for-byte interop with the official Python generator
//! (`aws-bedrock-token-generator`, `_generate_token`), on random cases.
//!
//! The cases are drawn by proptest strategies ([`case`]) in one batch, for one run of
//! the oracle; the seed changes every run and is printed; `BEDROCK_KEYD_INTEROP_SEED=N`
//! replays one.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, UNIX_EPOCH};

use aws_credential_types::Credentials;
use bedrock_keyd::key::mint::mint;
use bedrock_keyd::key::{Lifetime, Region};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;

use crate::util;

/// Every commercial AWS region (partition `aws`), as of 2026.
const COMMERCIAL_REGIONS: &[&str] = &[
    "us-east-1",
    "us-east-2",
    "us-west-1",
    "us-west-2",
    "af-south-1",
    "ap-east-1",
    "ap-east-2",
    "ap-south-1",
    "ap-south-2",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-southeast-3",
    "ap-southeast-4",
    "ap-southeast-5",
    "ap-southeast-6",
    "ap-southeast-7",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-northeast-3",
    "ca-central-1",
    "ca-west-1",
    "eu-central-1",
    "eu-central-2",
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "eu-south-1",
    "eu-south-2",
    "eu-north-1",
    "il-central-1",
    "me-south-1",
    "me-central-1",
    "mx-central-1",
    "sa-east-1",
];

const CASES: usize = 400;

#[derive(Debug, Clone)]
struct Case {
    access_key_id: String,
    secret: String,
    token: Option<String>,
    region: &'static str,
    expires: u64,
    signed_at: u64,
}

/// One case: a long-term (`AKIA`) or temporary (`ASIA`, with a session token) key id,
/// a secret that mostly looks real but sometimes is any printable ASCII (HMAC must
/// take it too), a lifetime of 1 s … 12 h and a signing time in 2001 … 2099. The
/// region is the caller's, from the case's index.
fn case() -> impl Strategy<Value = Case> {
    let secret = prop_oneof![
        1 => "[!-~]{1,60}",
        4 => "[A-Za-z0-9+/]{40}",
    ];
    let token = ("[A-Za-z0-9+/]{16,915}", 0..3usize)
        .prop_map(|(token, padding)| format!("{token}{}", "=".repeat(padding)));
    (
        any::<bool>(),
        "[A-Z2-7]{16}",
        secret,
        token,
        1..=43_200u64,
        978_307_200..4_102_358_400u64,
    )
        .prop_map(|(temporary, id, secret, token, expires, signed_at)| Case {
            access_key_id: format!("{}{id}", if temporary { "ASIA" } else { "AKIA" }),
            secret,
            token: temporary.then_some(token),
            region: "",
            expires,
            signed_at,
        })
}

/// Case `i` drawn by `runner`: the region by index, the lifetime's edges first.
fn random_case(runner: &mut TestRunner, i: usize) -> Case {
    let mut case = case().new_tree(runner).expect("a case").current();
    case.region = COMMERCIAL_REGIONS[i % COMMERCIAL_REGIONS.len()];
    case.expires = match i {
        0 => 1,
        1 => 43_200,
        _ => case.expires,
    };
    case
}

#[test]
fn keys_are_byte_identical_to_the_official_python_generator() {
    let Some(python) = util::python_with("aws_bedrock_token_generator") else {
        return util::skip(
            "no Python with aws-bedrock-token-generator (run .ci/run, or set BEDROCK_KEYD_PYTHON)",
        );
    };
    let seed = std::env::var("BEDROCK_KEYD_INTEROP_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("interop seed: {seed} (replay with BEDROCK_KEYD_INTEROP_SEED={seed})");
    let mut runner = util::seeded_runner(seed);
    let cases: Vec<Case> = (0..CASES).map(|i| random_case(&mut runner, i)).collect();

    let mut input = String::new();
    for c in &cases {
        let line = serde_json::json!({
            "access_key_id": c.access_key_id,
            "secret_access_key": c.secret,
            "session_token": c.token,
            "region": c.region,
            "expires": c.expires,
            "signed_at": c.signed_at,
        });
        input.push_str(&line.to_string());
        input.push('\n');
    }
    let mut child = Command::new(&python)
        .arg(util::repo_root().join("tests/oracle/bedrock_token_oracle.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the Python oracle");
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(
        out.status.success(),
        "oracle failed: {}",
        util::stderr(&out)
    );
    let expected: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().lines().collect();
    assert_eq!(expected.len(), cases.len());

    let mut with_token = 0;
    for (i, (case, want)) in cases.iter().zip(&expected).enumerate() {
        let creds = Credentials::new(
            &case.access_key_id,
            &case.secret,
            case.token.clone(),
            None,
            "interop",
        );
        let minted = mint(
            &creds,
            &Region::new(case.region).unwrap(),
            Lifetime::from_secs(case.expires).unwrap(),
            UNIX_EPOCH + Duration::from_secs(case.signed_at),
        )
        .unwrap();
        with_token += usize::from(case.token.is_some());
        assert!(
            minted.key.expose() == *want,
            "case {i} differs (seed {seed}): region {} expires {} signed_at {} token {}",
            case.region,
            case.expires,
            case.signed_at,
            case.token.is_some()
        );
    }
    assert!(with_token > CASES / 4 && with_token < CASES * 3 / 4);
    eprintln!("{CASES} cases identical ({with_token} with a session token)");
}
