//! The page shell (head, navigation, the session's CSRF token for our script), HTML
//! responses with their headers, the error page, and the formatting of sizes and times.
//!
//! Everything is built with maud, which escapes every `(value)` it is given; no user or spec
//! text is ever passed through `PreEscaped`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use corral_types::Role;
use maud::{html, Markup, DOCTYPE};

use super::assets;
use crate::auth::Caller;
use crate::error::ApiError;

/// Who is looking at a page: what the navigation shows and which buttons are offered.
pub struct Viewer {
    pub caller: Caller,
}

impl Viewer {
    pub fn name(&self) -> &str {
        let who = self.caller.who();
        who.strip_prefix("user ").unwrap_or(who)
    }
    pub fn role(&self) -> Role {
        self.caller.principal.role
    }
    /// Operators and admins act on VMs; viewers only read.
    pub fn can_act(&self) -> bool {
        self.role() >= Role::Operator
    }
    /// The CSRF token of the session (empty for a bearer token, which needs none).
    pub fn csrf(&self) -> &str {
        self.caller.csrf().unwrap_or("")
    }
}

/// Which part of the site a page belongs to (marked in the navigation).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Vms,
    Jobs,
    Schedules,
    Alerts,
    Host,
    None,
}

/// A whole page: `body` inside the shell, with navigation when someone is logged in.
pub fn shell(title: &str, viewer: Option<&Viewer>, section: Section, body: Markup) -> Markup {
    let nav_link = |href: &str, label: &str, s: Section| {
        html! {
            a href=(href) aria-current=[(section == s).then_some("page")] { (label) }
        }
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                @if let Some(v) = viewer {
                    meta name="csrf-token" content=(v.csrf());
                }
                title { (title) " · corral" }
                link rel="icon" href=(assets::url("icon.svg")) type="image/svg+xml";
                link rel="stylesheet" href=(assets::url("corral.css"));
                script src=(assets::url("corral.js")) defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    span.brand { "corral" }
                    @if let Some(v) = viewer {
                        nav aria-label="Main" {
                            (nav_link("/", "VMs", Section::Vms))
                            (nav_link("/jobs", "Jobs", Section::Jobs))
                            (nav_link("/schedules", "Schedules", Section::Schedules))
                            (nav_link("/alerts", "Alerts", Section::Alerts))
                            (nav_link("/host", "Host", Section::Host))
                        }
                        form.logout method="post" action="/logout" {
                            span.who { (v.name()) " (" (v.role()) ")" }
                            input type="hidden" name="csrf" value=(v.csrf());
                            button type="submit" { "Log out" }
                        }
                    }
                }
                main #main {
                    (body)
                }
            }
        }
    }
}

/// An HTML answer. Pages carry the session's CSRF token, so no cache keeps them.
pub fn html_response(status: StatusCode, markup: Markup) -> Response {
    let mut r = (status, markup.into_string()).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// An error as a page: its status, its message (escaped), and a way back.
pub struct PageError(pub ApiError);

impl From<ApiError> for PageError {
    fn from(e: ApiError) -> PageError {
        PageError(e)
    }
}

impl From<corral_engine::EngineError> for PageError {
    fn from(e: corral_engine::EngineError) -> PageError {
        PageError(e.into())
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        error_page(self.0.status(), self.0.message())
    }
}

pub fn error_page(status: StatusCode, message: &str) -> Response {
    let title = status.canonical_reason().unwrap_or("Error");
    let body = html! {
        h1 { (title) }
        p.error role="alert" { (message) }
        p { a href="/" { "Back to the VMs" } }
    };
    html_response(status, shell(title, None, Section::None, body))
}

/// `1.5 GiB`, `192 MiB`, `512 B`: binary units, as the CLI prints them.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = UNITS[0];
    for u in &UNITS[1..] {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = u;
    }
    if v.fract() < 0.05 || v >= 100.0 {
        format!("{v:.0} {unit}")
    } else {
        format!("{v:.1} {unit}")
    }
}

/// `45 s`, `12 min`, `3 h 05 min`, `2 d 4 h`.
pub fn duration(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs} s"),
        60..3600 => format!("{} min", secs / 60),
        3600..86400 => format!("{} h {:02} min", secs / 3600, secs / 60 % 60),
        _ => format!("{} d {} h", secs / 86400, secs / 3600 % 24),
    }
}

/// Unix milliseconds as `2025-03-01 14:07:09 UTC`.
pub fn time_ms(ms: i64) -> String {
    let (y, mo, d, h, mi, s) = corral_store::civil(ms.div_euclid(1000));
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02} UTC")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_read_like_the_cli() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(192 << 20), "192 MiB");
        assert_eq!(bytes(3 << 29), "1.5 GiB");
        assert_eq!(duration(59), "59 s");
        assert_eq!(duration(3 * 3600 + 5 * 60), "3 h 05 min");
        assert_eq!(duration(2 * 86400 + 4 * 3600), "2 d 4 h");
        assert_eq!(time_ms(0), "1970-01-01 00:00:00 UTC");
    }

    #[test]
    fn values_are_escaped() {
        let m = html! { p title=("\"><script>") { ("<b>&") } };
        let s = m.into_string();
        assert!(!s.contains("<script>") && !s.contains("<b>"), "{s}");
        assert!(s.contains("&lt;b&gt;&amp;"), "{s}");
    }
}
