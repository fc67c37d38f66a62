//! Our one stylesheet, one script and the icon, built into the binary (no CDN, nothing to install).
//! Pages link them with their content hash in the query (`?v=`), so a cached copy is
//! never used with a newer binary's pages.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

struct Asset {
    name: &'static str,
    mime: &'static str,
    body: &'static str,
}

const ASSETS: [Asset; 3] = [
    Asset {
        name: "corral.css",
        mime: "text/css; charset=utf-8",
        body: include_str!("static/corral.css"),
    },
    Asset {
        name: "corral.js",
        mime: "text/javascript; charset=utf-8",
        body: include_str!("static/corral.js"),
    },
    Asset {
        name: "icon.svg",
        mime: "image/svg+xml",
        body: include_str!("static/icon.svg"),
    },
];

/// Each asset's content hash (16 hex digits of BLAKE3), in the order of `ASSETS`.
static VERSIONS: LazyLock<Vec<String>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|a| blake3::hash(a.body.as_bytes()).to_hex()[..16].to_string())
        .collect()
});

fn find(name: &str) -> Option<(&'static Asset, &'static str)> {
    ASSETS
        .iter()
        .position(|a| a.name == name)
        .map(|i| (&ASSETS[i], VERSIONS[i].as_str()))
}

/// The URL a page links an asset by.
pub fn url(name: &str) -> String {
    match find(name) {
        Some((a, v)) => format!("/static/{}?v={v}", a.name),
        None => format!("/static/{name}"),
    }
}

/// `GET /static/NAME`: no login needed (nothing in them is private).
pub async fn file(Path(name): Path<String>, headers: HeaderMap) -> Response {
    let Some((asset, version)) = find(&name) else {
        return (StatusCode::NOT_FOUND, "no such file").into_response();
    };
    let etag = format!("\"{version}\"");
    let cached = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut r = if cached {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        asset.body.into_response()
    };
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.mime));
    // A day; pages ask for `?v=HASH`, so a new binary's pages fetch the new file at once.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=86400"));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    r
}
