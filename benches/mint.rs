//! The cost of minting one key (SigV4 presign + encoding), and of decoding one.
//!
//! Run: `cargo bench --bench mint`. Target (issue 2): ≤ 5 µs per key on one core.

use std::hint::black_box;
use std::time::{Duration, UNIX_EPOCH};

use aws_credential_types::Credentials;
use bedrock_keyd::key::decode::decode;
use bedrock_keyd::key::mint::mint;
use bedrock_keyd::key::{Lifetime, Region};
use criterion::{Criterion, criterion_group, criterion_main};

fn bench(c: &mut Criterion) {
    let region = Region::new("us-west-2").unwrap();
    let lifetime = Lifetime::from_secs(43_200).unwrap();
    let now = UNIX_EPOCH + Duration::from_secs(1_795_680_000);
    let static_creds = Credentials::new(
        "AKIAIOSFODNN7EXAMPLE",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        None,
        None,
        "bench",
    );
    // A session token of typical STS length (~1 KiB).
    let session_creds = Credentials::new(
        "ASIAIOSFODNN7EXAMPLE",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        Some("IQoJb3JpZ2luX2VjE".repeat(60) + "+/=="),
        Some(now + Duration::from_secs(3600)),
        "bench",
    );

    c.bench_function("mint/static-credentials", |b| {
        b.iter(|| mint(black_box(&static_creds), &region, lifetime, black_box(now)).unwrap())
    });
    c.bench_function("mint/session-token-1KiB", |b| {
        b.iter(|| mint(black_box(&session_creds), &region, lifetime, black_box(now)).unwrap())
    });
    let key = mint(&session_creds, &region, lifetime, now).unwrap().key;
    c.bench_function("inspect/decode", |b| {
        b.iter(|| decode(black_box(key.expose())).unwrap())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
