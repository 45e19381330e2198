//! What every layer shares about errors: [`error_chain`], the one way an error and its
//! causes become a line of text (for logs and the CLI's message), with secrets
//! redacted ([`crate::redact`]).

/// The Display of an error and its sources, joined with ": ", with secrets redacted
/// ([`crate::redact::redact_secrets`]): a source may carry outside text that holds
/// one. Access key ids stay: our own errors name them on purpose. For an SDK error
/// (which may quote a `credential_process`'s stderr) use [`crate::credentials::sdk_error_text`].
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    crate::redact::redact_secrets(&out).into_owned()
}
