//! Properties of minting and inspecting, over generated inputs.

use std::time::{Duration, UNIX_EPOCH};

use aws_credential_types::Credentials;
use bedrock_keyd::inspect::{decode, extract_key};
use bedrock_keyd::mint::{Lifetime, Region, mint};
use proptest::prelude::*;

fn region() -> impl Strategy<Value = String> {
    "[a-z]{2}(-gov|-iso)?-[a-z]{4,9}-[1-9]"
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

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
        let raw = bedrock_keyd::keyfile::raw(&minted.key);
        prop_assert_eq!(extract_key(&raw, None).unwrap(), minted.key.expose());
        let json = bedrock_keyd::keyfile::json(&minted.key, &minted.meta);
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
