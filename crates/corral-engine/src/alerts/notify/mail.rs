//! `[notify.mail]`: one message per notification through an SMTP server, with lettre on
//! tokio: STARTTLS (required, never silently plain), implicit TLS, or plain to a server on
//! this host; AUTH PLAIN/LOGIN with the password read from `password_file` at each send.

use std::net::IpAddr;
use std::time::Duration;

use corral_types::{MailNotify, MailTls};
use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

/// Whether `server` names this host.
fn loopback(server: &str) -> bool {
    server == "localhost" || server.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Checks the settings when the config loads (files are read only when sending).
pub fn check(m: &MailNotify) -> Result<(), String> {
    if m.server.trim().is_empty() || m.server.contains(char::is_whitespace) {
        return Err(format!(
            "server = {:?}: give the SMTP server's host name, e.g. server = \"smtp.example.org\"",
            m.server
        ));
    }
    if m.port == Some(0) {
        return Err("port = 0: give the SMTP server's port (587 for starttls, 465 for tls)".into());
    }
    if m.tls == MailTls::None && !loopback(&m.server) {
        return Err(format!(
            "tls = \"none\" would send mail (and the password) in clear to {}; it is allowed only for a server on \
             this host (localhost, 127.0.0.1, ::1): use tls = \"starttls\" (port 587) or \"tls\" (port 465)",
            m.server
        ));
    }
    match (&m.username, &m.password_file) {
        (Some(_), None) => {
            return Err(
                "username needs password_file = \"/etc/corral/smtp-password\" (a file holding the password)".into(),
            )
        }
        (None, Some(_)) => return Err("password_file needs username = \"…\" (the login name)".into()),
        _ => {}
    }
    m.from
        .parse::<Mailbox>()
        .map_err(|e| format!("from = {:?} is not a mail address ({e})", m.from))?;
    if m.to.is_empty() {
        return Err("to is empty: give at least one recipient, e.g. to = [\"ops@example.org\"]".into());
    }
    for t in &m.to {
        t.parse::<Mailbox>()
            .map_err(|e| format!("to: {t:?} is not a mail address ({e})"))?;
    }
    Ok(())
}

/// `smtp.example.org:587`: how logs and errors name the server.
pub fn server_name(m: &MailNotify) -> String {
    format!("{}:{}", m.server, m.port())
}

/// An error and its causes on one line (lettre keeps the reason in its sources).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

fn tls_parameters(m: &MailNotify) -> Result<TlsParameters, String> {
    let mut b = TlsParameters::builder(m.server.clone());
    if let Some(ca) = &m.ca_cert {
        let pem = std::fs::read(ca).map_err(|e| format!("cannot read ca_cert {}: {e}", ca.display()))?;
        let cert = Certificate::from_pem(&pem)
            .map_err(|e| format!("ca_cert {} holds no PEM certificate ({})", ca.display(), chain(&e)))?;
        b = b.add_root_certificate(cert);
    }
    b.build_rustls().map_err(|e| format!("TLS setup: {}", chain(&e)))
}

/// Sends one plain-text message to every recipient. The error names the server and says why.
pub async fn send(m: &MailNotify, hello: &str, subject: &str, body: String, timeout: Duration) -> Result<(), String> {
    let server = server_name(m);
    let mut msg = Message::builder()
        .from(
            m.from
                .parse::<Mailbox>()
                .map_err(|e| format!("from {:?}: {e}", m.from))?,
        )
        .subject(subject)
        .header(ContentType::TEXT_PLAIN);
    for t in &m.to {
        msg = msg.to(t.parse::<Mailbox>().map_err(|e| format!("to {t:?}: {e}"))?);
    }
    let msg = msg.body(body).map_err(|e| format!("cannot build the message: {e}"))?;
    let mut t = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(m.server.as_str())
        .port(m.port())
        .timeout(Some(timeout))
        .hello_name(ClientId::Domain(hello.to_string()));
    t = match m.tls {
        MailTls::None => t.tls(Tls::None),
        MailTls::Starttls => t.tls(Tls::Required(tls_parameters(m)?)),
        MailTls::Tls => t.tls(Tls::Wrapper(tls_parameters(m)?)),
    };
    if let (Some(user), Some(file)) = (&m.username, &m.password_file) {
        let text = std::fs::read_to_string(file).map_err(|e| {
            format!(
                "cannot read password_file {} ({e}); it must be readable by corral",
                file.display()
            )
        })?;
        let password = text.lines().next().unwrap_or("").to_string();
        t = t
            .credentials(Credentials::new(user.clone(), password))
            .authentication(vec![Mechanism::Plain, Mechanism::Login]);
    }
    t.build()
        .send(msg)
        .await
        .map(|_| ())
        .map_err(|e| format!("SMTP server {server}: {}", chain(&e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mail() -> MailNotify {
        MailNotify {
            server: "smtp.example.org".into(),
            port: None,
            tls: MailTls::Starttls,
            username: None,
            password_file: None,
            from: "corral <corral@example.org>".into(),
            to: vec!["ops@example.org".into()],
            ca_cert: None,
        }
    }

    #[test]
    fn settings_are_checked() {
        assert_eq!(check(&mail()), Ok(()));
        assert_eq!(mail().port(), 587);
        let e = check(&MailNotify {
            tls: MailTls::None,
            ..mail()
        })
        .unwrap_err();
        assert!(e.contains("in clear") && e.contains("starttls"), "{e}");
        assert_eq!(
            check(&MailNotify {
                tls: MailTls::None,
                server: "127.0.0.1".into(),
                ..mail()
            }),
            Ok(())
        );
        let e = check(&MailNotify {
            username: Some("u".into()),
            ..mail()
        })
        .unwrap_err();
        assert!(e.contains("password_file"), "{e}");
        let e = check(&MailNotify {
            to: vec!["not an address".into()],
            ..mail()
        })
        .unwrap_err();
        assert!(e.contains("not a mail address"), "{e}");
        let e = check(&MailNotify { to: vec![], ..mail() }).unwrap_err();
        assert!(e.contains("recipient"), "{e}");
    }
}
