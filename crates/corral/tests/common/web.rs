//! A tiny HTTP/1.1 client for the server tests: one request per connection, read to the end,
//! with headers, cookies and form bodies; and the server started in-process on port 0.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

#[allow(unused_imports)] // common is compiled into every test binary
pub use super::start_server;
use super::Env;

pub struct Reply {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl Reply {
    /// The value of a response header (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// One request with the given extra headers and body.
pub fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    let mut s = TcpStream::connect(addr).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    s.write_all(req.as_bytes()).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let out = String::from_utf8_lossy(&out).to_string();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    Reply {
        status,
        head: head.to_string(),
        body: body.to_string(),
    }
}

/// `application/x-www-form-urlencoded` of the fields.
pub fn form_body(fields: &[(&str, &str)]) -> String {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
                b' ' => "+".to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// A form post, with a session cookie if given.
pub fn post_form(addr: SocketAddr, path: &str, cookie: Option<&str>, fields: &[(&str, &str)]) -> Reply {
    let mut headers = vec![("Content-Type", "application/x-www-form-urlencoded")];
    if let Some(c) = cookie {
        headers.push(("Cookie", c));
    }
    request(addr, "POST", path, &headers, &form_body(fields))
}

/// A GET, with a session cookie if given.
pub fn get(addr: SocketAddr, path: &str, cookie: Option<&str>) -> Reply {
    let headers: Vec<(&str, &str)> = cookie.iter().map(|c| ("Cookie", *c)).collect();
    request(addr, "GET", path, &headers, "")
}

/// Adds a user with a password (through the CLI, as an admin would).
pub fn add_user(env: &Env, name: &str, role: &str, password: &str) {
    let mut c = env.cmd();
    c.args(["user", "add", name, "--role", role, "--password-stdin"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null());
    let mut child = c.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "user add {name}");
}

/// Logs in through the form; the session cookie (`name=value`) and the page's CSRF token.
pub fn login(addr: SocketAddr, user: &str, password: &str) -> (String, String) {
    let r = post_form(addr, "/login", None, &[("user", user), ("password", password)]);
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.header("location").as_deref(), Some("/"));
    let set = r.header("set-cookie").expect("a session cookie");
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(attr), "{set}");
    }
    let cookie = set.split(';').next().unwrap().to_string();
    let page = get(addr, "/", Some(&cookie));
    assert_eq!(page.status, 200, "{}", page.body);
    (cookie, csrf_of(&page))
}

/// The CSRF token a page carries for our script.
pub fn csrf_of(page: &Reply) -> String {
    let at = page.body.find("name=\"csrf-token\" content=\"").expect("a csrf meta") + 27;
    page.body[at..at + 64].to_string()
}
