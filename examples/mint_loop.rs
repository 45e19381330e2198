//! Mints keys in a loop, for profilers (`valgrind --tool=callgrind`, `perf record`):
//! `cargo build --release --example mint_loop && valgrind --tool=callgrind target/release/examples/mint_loop 20000`
use std::time::{Duration, UNIX_EPOCH};

use aws_credential_types::Credentials;
use bedrock_keyd::key::mint::mint;
use bedrock_keyd::key::{Lifetime, Region};

fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let creds = Credentials::new(
        "AKIAIOSFODNN7EXAMPLE",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        None,
        None,
        "profile",
    );
    let region = Region::new("us-west-2").unwrap();
    let lifetime = Lifetime::from_secs(43_200).unwrap();
    let mut total = 0usize;
    for i in 0..n {
        let now = UNIX_EPOCH + Duration::from_secs(1_795_680_000 + u64::from(i));
        total += mint(&creds, &region, lifetime, now)
            .unwrap()
            .key
            .expose()
            .len();
    }
    println!("{total}");
}
