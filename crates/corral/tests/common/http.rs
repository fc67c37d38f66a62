//! The API tests' calls: JSON bodies and bearer tokens over the HTTP/1.1 client of
//! `common::web`, and the API server started in-process on 127.0.0.1:0.
#![allow(dead_code)]

use std::net::SocketAddr;

#[allow(unused_imports)] // not every test binary that includes this starts a server
pub use super::common::start_server;
pub use super::common::web::Reply;

/// One request with a bearer token (if any) and a JSON body (if any).
pub fn http(addr: SocketAddr, method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> Reply {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    request(addr, method, path, &headers, body)
}

/// One request with the given extra headers and a JSON body (if any).
pub fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&str>) -> Reply {
    let mut all = vec![("Content-Type", "application/json")];
    all.extend_from_slice(headers);
    super::common::web::request(addr, method, path, &all, body.unwrap_or(""))
}
