//! HTTP clients for the services retraind calls that may sit behind TLS signed by a private
//! CA (Kubeflow Pipelines, MLflow): a bounded timeout, the system's roots plus an optional CA
//! file, and request errors told with their causes — so an untrusted certificate says which
//! setting to fill in instead of "error sending request".

use std::path::Path;
use std::time::Duration;

/// A client with `timeout` that also trusts the PEM certificate(s) in `ca_file`.
pub fn client(timeout: Duration, ca_file: Option<&Path>) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder().timeout(timeout);
    if let Some(ca) = ca_file {
        let pem =
            std::fs::read(ca).map_err(|e| format!("cannot read CA file {}: {e}", ca.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .ok()
            .filter(|c| !c.is_empty())
            .ok_or_else(|| {
                format!(
                    "CA file {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                    ca.display()
                )
            })?;
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder.build().map_err(|e| e.to_string())
}

/// A request error with its causes ("error sending request: … invalid peer certificate:
/// UnknownIssuer"); an untrusted certificate adds that `ca_key` names the CA file.
pub fn describe(e: &reqwest::Error, ca_key: &str) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text = format!("{text}: {part}");
        }
        source = s.source();
    }
    if text.contains("certificate") {
        text.push_str(&format!(
            " (if the server's certificate is signed by a private CA, set {ca_key} to that CA's PEM)"
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_must_hold_a_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let missing = client(Duration::from_secs(1), Some(&dir.path().join("nope.pem")));
        assert!(missing.unwrap_err().contains("nope.pem"));
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        let e = client(Duration::from_secs(1), Some(&junk)).unwrap_err();
        assert!(
            e.contains("junk.pem") && e.contains("BEGIN CERTIFICATE"),
            "{e}"
        );
        assert!(client(Duration::from_secs(1), None).is_ok());
    }
}
