//! The one mint step of every command that mints: credentials for the key's
//! lifetime, then a key signed at the injected clock's now. The key tasks of `run` and
//! `exec`, `once` ([`super::once`]) and `token` ([`super::token`]) all come through
//! here, and then deliver with [`super::deliver`] or [`super::deliver_here`].
//!
//! Generic over the caller's error type, so each keeps its own (and its exit codes)
//! while the step itself exists once.

use crate::clock::Clock;
use crate::credentials::{CredentialSource, CredentialsError};
use crate::key::Lifetime;
use crate::key::MintedKey;
use crate::key::mint::MintError;

/// Credentials good for the whole `lifetime` if the source can (a key is never longer
/// than they are), then a key minted at `clock.now()`.
pub async fn mint_now<S, E>(
    source: &S,
    lifetime: Lifetime,
    clock: &dyn Clock,
) -> Result<MintedKey, E>
where
    S: CredentialSource,
    E: From<CredentialsError> + From<MintError>,
{
    let credentials = source.credentials(lifetime.get()).await?;
    Ok(crate::key::mint::mint(
        &credentials,
        source.region(),
        lifetime,
        clock.now(),
    )?)
}
