//! `[notify.webhook]`: a JSON POST of a [`WebhookPayload`] to a URL, with ureq (blocking, on
//! tokio's blocking pool). A 2xx answer is delivered; anything else is an error naming the
//! URL and the status (never the headers, which may hold a token).

use std::time::Duration;

use corral_types::{WebhookNotify, WebhookPayload};
use ureq::http::{HeaderName, HeaderValue, Uri};

/// Checks the settings when the config loads.
pub fn check(w: &WebhookNotify) -> Result<(), String> {
    let uri: Uri = w.url.parse().map_err(|e| {
        format!(
            "url = {:?} is not a URL ({e}); write e.g. url = \"https://chat.example.org/hook/…\"",
            w.url
        )
    })?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
        return Err(format!(
            "url = {:?}: give an http:// or https:// URL with a host",
            w.url
        ));
    }
    for (k, v) in &w.headers {
        HeaderName::from_bytes(k.as_bytes()).map_err(|_| format!("headers: {k:?} is not a header name"))?;
        HeaderValue::from_str(v)
            .map_err(|_| format!("headers: the value of {k:?} has characters a header cannot carry"))?;
    }
    Ok(())
}

fn agent(w: &WebhookNotify, timeout: Duration) -> Result<ureq::Agent, String> {
    let mut tls = ureq::tls::TlsConfig::builder();
    if let Some(ca) = &w.ca_cert {
        let pem = std::fs::read(ca).map_err(|e| format!("cannot read ca_cert {}: {e}", ca.display()))?;
        let certs: Vec<ureq::tls::Certificate<'static>> = ureq::tls::parse_pem(&pem)
            .filter_map(|item| match item {
                Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                _ => None,
            })
            .collect();
        if certs.is_empty() {
            return Err(format!("ca_cert {} holds no PEM certificate", ca.display()));
        }
        tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&certs));
    }
    Ok(ureq::Agent::config_builder()
        .tls_config(tls.build())
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .user_agent(concat!("corral/", env!("CARGO_PKG_VERSION")))
        .build()
        .into())
}

fn post(w: &WebhookNotify, body: &[u8], timeout: Duration) -> Result<(), String> {
    let agent = agent(w, timeout)?;
    let mut req = agent.post(&w.url).header("Content-Type", "application/json");
    for (k, v) in &w.headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let mut resp = req.send(body).map_err(|e| format!("webhook {}: {e}", w.url))?;
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    let text: String = text.trim().chars().take(200).collect();
    Err(format!("webhook {} answered {status}: {text}", w.url))
}

/// POSTs the payload; the blocking call runs on tokio's blocking pool.
pub async fn send(w: &WebhookNotify, payload: &WebhookPayload, timeout: Duration) -> Result<(), String> {
    let body = serde_json::to_vec(payload).map_err(|e| format!("cannot encode the webhook body: {e}"))?;
    let w = w.clone();
    tokio::task::spawn_blocking(move || post(&w, &body, timeout))
        .await
        .map_err(|e| format!("webhook task: {e}"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked() {
        let w = |url: &str| WebhookNotify {
            url: url.into(),
            headers: [("Authorization".to_string(), "Bearer x".to_string())].into(),
            ca_cert: None,
        };
        assert_eq!(check(&w("https://chat.example.org/hooks/1")), Ok(()));
        assert!(check(&w("ftp://x/")).unwrap_err().contains("http://"));
        assert!(check(&w("not a url")).unwrap_err().contains("not a URL"));
        let mut bad = w("http://127.0.0.1:9/");
        bad.headers.insert("Bad Name".into(), "v".into());
        assert!(check(&bad).unwrap_err().contains("header name"));
    }
}
