//! Byte-for-byte interop with the official Python generator
//! (`aws-bedrock-token-generator`, `_generate_token`), on random cases.
//!
//! The seed changes every run and is printed; `BEDROCK_KEYD_INTEROP_SEED=N` replays one.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, UNIX_EPOCH};

use aws_credential_types::Credentials;
use bedrock_keyd::key::mint::mint;
use bedrock_keyd::key::{Lifetime, Region};

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

/// splitmix64: small, seedable, good enough to spread test cases.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn string(&mut self, alphabet: &[u8], len: usize) -> String {
        (0..len)
            .map(|_| alphabet[self.below(alphabet.len() as u64) as usize] as char)
            .collect()
    }
}

const UPPER_ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const BASE64ISH: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

struct Case {
    access_key_id: String,
    secret: String,
    token: Option<String>,
    region: &'static str,
    expires: u64,
    signed_at: u64,
}

fn random_case(rng: &mut Rng, i: usize) -> Case {
    let temporary = rng.below(2) == 0;
    let access_key_id = format!(
        "{}{}",
        if temporary { "ASIA" } else { "AKIA" },
        rng.string(UPPER_ALNUM, 16)
    );
    // Mostly real-looking secrets; some with any printable ASCII, which HMAC must take too.
    let secret = if rng.below(5) == 0 {
        let printable: Vec<u8> = (0x21u8..0x7f).collect();
        let len = 1 + rng.below(60) as usize;
        rng.string(&printable, len)
    } else {
        rng.string(BASE64ISH, 40)
    };
    let token = temporary.then(|| {
        let len = 16 + rng.below(900) as usize;
        let mut t = rng.string(BASE64ISH, len);
        t.push_str(&"=".repeat(rng.below(3) as usize));
        t
    });
    // Edges first, then anywhere in 1 s … 12 h.
    let expires = match i {
        0 => 1,
        1 => 43_200,
        _ => 1 + rng.below(43_200),
    };
    // 2001-01-01 … 2099-12-31.
    let signed_at = 978_307_200 + rng.below(4_102_358_400 - 978_307_200);
    Case {
        access_key_id,
        secret,
        token,
        region: COMMERCIAL_REGIONS[i % COMMERCIAL_REGIONS.len()],
        expires,
        signed_at,
    }
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
    let mut rng = Rng(seed);
    let cases: Vec<Case> = (0..CASES).map(|i| random_case(&mut rng, i)).collect();

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
