//! `mint` and `inspect` as a user runs them.

use crate::util::{self, TestEnv, run_with_stdin};

#[test]
fn mint_with_env_credentials_prints_a_key_inspect_accepts() {
    let env = TestEnv::new();
    let out = env
        .cmd_with_example_creds()
        .args(["mint", "--region", "eu-west-3", "--lifetime", "45m"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", util::stderr(&out));
    let key = util::stdout(&out);
    assert!(key.starts_with("bedrock-api-key-") && key.ends_with('\n'));
    assert_eq!(key.lines().count(), 1);

    let inspected = run_with_stdin(env.cmd().args(["inspect", "-", "--json"]), key.as_bytes());
    assert!(inspected.status.success(), "{}", util::stderr(&inspected));
    let report: serde_json::Value = serde_json::from_slice(&inspected.stdout).unwrap();
    assert_eq!(report["region"], "eu-west-3");
    assert_eq!(report["access_key_id"], util::EXAMPLE_ACCESS_KEY_ID);
    assert_eq!(report["lifetime_seconds"], 2700);
    assert_eq!(report["session_token"], false);
    assert_eq!(report["expired"], false);
    let text = String::from_utf8_lossy(&inspected.stdout);
    assert!(!text.contains("Signature") && !text.contains(key.trim()));
}

#[test]
fn mint_formats() {
    let env = TestEnv::new();
    let run = |format: &str| {
        let out = env
            .cmd_with_example_creds()
            .env("AWS_REGION", "us-east-2")
            .args(["mint", "--format", format])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", util::stderr(&out));
        util::stdout(&out)
    };
    let env_line = run("env");
    assert!(env_line.starts_with("AWS_BEARER_TOKEN_BEDROCK=bedrock-api-key-"));
    let json: serde_json::Value = serde_json::from_str(&run("json")).unwrap();
    assert_eq!(json["region"], "us-east-2");
    assert!(
        json["key"]
            .as_str()
            .unwrap()
            .starts_with("bedrock-api-key-")
    );
    let issued = json["issued_at"].as_str().unwrap();
    let expires = json["expires_at"].as_str().unwrap();
    assert!(issued.ends_with('Z') && expires.ends_with('Z') && expires > issued);
}

#[test]
fn mint_errors_are_one_line_with_contract_exit_codes() {
    let env = TestEnv::new();
    // No region anywhere: configuration (78). At the default log level, since what a
    // user sees by default is the point.
    let out = util::at_default_log_level(&mut env.cmd_with_example_creds())
        .arg("mint")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78), "{}", util::stderr(&out));
    let err = util::stderr(&out);
    assert!(
        err.contains("--region") && err.contains("AWS_REGION"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    // Lifetime out of range: usage (2).
    for bad in ["13h", "0s", "soon", "1500ms"] {
        let out = env
            .cmd_with_example_creds()
            .args(["mint", "--region", "us-east-1", "--lifetime", bad])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", util::stderr(&out));
        assert!(util::stderr(&out).contains("lifetime") || util::stderr(&out).contains("duration"));
    }

    // No credentials: 69.
    let out = env
        .cmd()
        .args(["mint", "--region", "us-east-1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(69), "{}", util::stderr(&out));
    assert!(
        util::stderr(&out).contains("no AWS credentials"),
        "{}",
        util::stderr(&out)
    );
}

#[test]
fn inspect_rejects_garbage_with_exit_3() {
    let env = TestEnv::new();
    let cases: &[(&str, &str)] = &[
        ("", "empty"),
        ("sk-ant-123", "does not start with"),
        ("bedrock-api-key-!!!!", "base64"),
        ("bedrock-api-key-aGVsbG8gd29ybGQ=", "presigned"),
        (
            // bedrock.amazonaws.com/?Action=CallWithBearerToken&Version=1
            "bedrock-api-key-YmVkcm9jay5hbWF6b25hd3MuY29tLz9BY3Rpb249Q2FsbFdpdGhCZWFyZXJUb2tlbiZWZXJzaW9uPTE=",
            "missing",
        ),
    ];
    for (input, expected) in cases {
        let out = run_with_stdin(env.cmd().args(["inspect", "-"]), input.as_bytes());
        assert_eq!(
            out.status.code(),
            Some(3),
            "{input:?}: {}",
            util::stderr(&out)
        );
        assert!(
            util::stderr(&out).contains(expected),
            "{input:?}: {}",
            util::stderr(&out)
        );
    }
    let missing = env
        .cmd()
        .args(["inspect", "--file", "/nonexistent/key"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(3));
    assert!(util::stderr(&missing).contains("/nonexistent/key"));
}

#[test]
fn inspect_reports_an_expired_key_and_exits_3() {
    // Signed 2023-11-14T22:13:20Z for 1 h by the official generator (tests/oracle).
    let env = TestEnv::new();
    let key = "bedrock-api-key-YmVkcm9jay5hbWF6b25hd3MuY29tLz9BY3Rpb249Q2FsbFdpdGhCZWFyZXJUb2tlbiZYLUFtei1BbGdvcml0aG09QVdTNC1ITUFDLVNIQTI1NiZYLUFtei1DcmVkZW50aWFsPUFLSURFWEFNUExFJTJGMjAyMzExMTQlMkZ1cy13ZXN0LTIlMkZiZWRyb2NrJTJGYXdzNF9yZXF1ZXN0JlgtQW16LURhdGU9MjAyMzExMTRUMjIxMzIwWiZYLUFtei1FeHBpcmVzPTM2MDAmWC1BbXotU2lnbmVkSGVhZGVycz1ob3N0JlgtQW16LVNpZ25hdHVyZT1iNzdjNzNhZjc4Mjk4MTE0NjNkMzQ4ODkwMjRlNzMzNmJjNGE3YjBmMTlkMTZjMWFjOTlmN2U2OGQzYjU4MmE4JlZlcnNpb249MQ==";
    std::fs::write(env.path().join("k"), format!("{key}\n")).unwrap();
    let out = env.cmd().args(["inspect", "--file", "k"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", util::stderr(&out));
    assert!(util::stderr(&out).contains("expired"));
    assert!(util::stdout(&out).contains("us-west-2"));
}

/// At the most verbose level, neither the key nor the secrets that signed it appear in
/// anything the process writes besides the key on stdout.
#[test]
fn secrets_never_reach_the_logs_at_trace() {
    let env = TestEnv::new();
    let token = "IQoJb3JpZ2luX2VjEXAMPLESESSIONTOKEN+/abc==";
    for format in ["raw", "json", "env"] {
        let out = env
            .cmd_with_example_creds()
            .env("AWS_SESSION_TOKEN", token)
            .env("RUST_LOG", "trace")
            .args([
                "--log-format",
                "json",
                "mint",
                "--region",
                "us-east-1",
                "--format",
                format,
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", util::stderr(&out));
        let stdout = util::stdout(&out);
        let key = stdout
            .split(|c: char| c == '"' || c.is_whitespace())
            .find(|w| w.contains("bedrock-api-key-"))
            .map(|w| w.trim_start_matches("AWS_BEARER_TOKEN_BEDROCK="))
            .unwrap()
            .to_owned();
        let logs = util::stderr(&out);
        assert!(
            logs.contains("key minted"),
            "trace logs were not captured: {logs}"
        );
        assert_no_secrets(&logs, &key, token);

        let inspected = run_with_stdin(
            env.cmd().env("RUST_LOG", "trace").args(["inspect", "-"]),
            key.as_bytes(),
        );
        assert!(inspected.status.success(), "{}", util::stderr(&inspected));
        assert_no_secrets(&util::stderr(&inspected), &key, token);
        assert_no_secrets(&util::stdout(&inspected), &key, token);
    }
}

fn assert_no_secrets(text: &str, key: &str, token: &str) {
    use base64::Engine as _;
    let url = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(&key["bedrock-api-key-".len()..])
            .unwrap(),
    )
    .unwrap();
    let signature = url
        .split("X-Amz-Signature=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap();
    let encoded_token: String = url
        .split("X-Amz-Security-Token=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap()
        .to_owned();
    for (what, secret) in [
        ("the key", key),
        ("the key's base64 payload", &key[20..80]),
        ("the presigned URL", url.as_str()),
        ("the signature", signature),
        ("the secret access key", util::EXAMPLE_SECRET_ACCESS_KEY),
        ("the session token", token),
        ("the encoded session token", encoded_token.as_str()),
    ] {
        assert!(
            !text.contains(secret),
            "{what} leaked into the output:\n{text}"
        );
    }
}
