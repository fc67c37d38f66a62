//! The QMP wire format: parsing what QEMU sends, encoding what we send.
//!
//! QEMU writes one compact JSON object per line. Three kinds reach a client
//! after the greeting: replies (`{"return": ..., "id": ...}`), error replies
//! (`{"error": {"class": ..., "desc": ...}, "id": ...}`) and events
//! (`{"event": ..., "data": ..., "timestamp": {...}}`).

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::{ErrorClass, QmpError};
use crate::{Event, QemuVersion};

/// The greeting's fields that we use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Greeting {
    pub version: QemuVersion,
    pub capabilities: Vec<String>,
}

#[derive(Deserialize)]
struct RawGreeting {
    #[serde(rename = "QMP")]
    qmp: RawGreetingBody,
}

#[derive(Deserialize)]
struct RawGreetingBody {
    version: RawVersion,
    #[serde(default)]
    capabilities: Vec<Value>,
}

#[derive(Deserialize)]
struct RawVersion {
    qemu: RawTriple,
    #[serde(default)]
    package: String,
}

#[derive(Deserialize)]
struct RawTriple {
    major: u32,
    minor: u32,
    micro: u32,
}

/// Parses the `{"QMP": {...}}` greeting QEMU sends on connect.
pub(crate) fn parse_greeting(line: &[u8]) -> Result<Greeting, QmpError> {
    let raw: RawGreeting = serde_json::from_slice(line).map_err(|e| {
        QmpError::Protocol(format!(
            "invalid QMP greeting ({e}): {}",
            String::from_utf8_lossy(line).trim_end()
        ))
    })?;
    Ok(Greeting {
        version: QemuVersion {
            major: raw.qmp.version.qemu.major,
            minor: raw.qmp.version.qemu.minor,
            micro: raw.qmp.version.qemu.micro,
            package: raw.qmp.version.package,
        },
        capabilities: raw
            .qmp
            .capabilities
            .iter()
            .filter_map(|c| c.as_str().map(str::to_string))
            .collect(),
    })
}

/// The outcome carried by a reply: QEMU's `"return"` value or its error.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Reply {
    Return(Value),
    Error { class: ErrorClass, desc: String },
}

impl Reply {
    /// Turns the reply into the caller's result, naming the command on error.
    pub(crate) fn into_result(self, command: &str) -> Result<Value, QmpError> {
        match self {
            Reply::Return(v) => Ok(v),
            Reply::Error { class, desc } => Err(QmpError::Command {
                class,
                desc,
                command: command.to_string(),
            }),
        }
    }
}

/// One message received after the greeting.
#[derive(Debug, Clone)]
pub(crate) enum Incoming {
    /// A reply; `id` is whatever QEMU echoed back (absent for replies to
    /// commands it could not even parse).
    Reply {
        id: Option<Value>,
        reply: Reply,
    },
    Event(Event),
}

/// Parses one line received after the greeting.
pub(crate) fn parse_incoming(line: &[u8]) -> Result<Incoming, QmpError> {
    let value: Value =
        serde_json::from_slice(line).map_err(|e| QmpError::Protocol(format!("malformed JSON from QEMU: {e}")))?;
    let Value::Object(mut obj) = value else {
        return Err(QmpError::Protocol(format!(
            "expected a JSON object from QEMU, got {value}"
        )));
    };

    if let Some(ret) = obj.remove("return") {
        return Ok(Incoming::Reply {
            id: obj.remove("id"),
            reply: Reply::Return(ret),
        });
    }
    if let Some(err) = obj.remove("error") {
        let class = err.get("class").and_then(Value::as_str).unwrap_or("GenericError");
        let desc = err
            .get("desc")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| err.to_string());
        return Ok(Incoming::Reply {
            id: obj.remove("id"),
            reply: Reply::Error {
                class: ErrorClass::from_qemu(class),
                desc,
            },
        });
    }
    if let Some(name) = obj.remove("event") {
        let Value::String(name) = name else {
            return Err(QmpError::Protocol(format!("event name is not a string: {name}")));
        };
        return Ok(Incoming::Event(Event {
            name,
            data: obj.remove("data").unwrap_or(Value::Null),
            timestamp: obj.get("timestamp").and_then(parse_timestamp),
        }));
    }
    if obj.contains_key("QMP") {
        return Err(QmpError::Protocol("unexpected second greeting".into()));
    }
    Err(QmpError::Protocol(format!(
        "unrecognised QMP message: {}",
        Value::Object(obj)
    )))
}

fn parse_timestamp(ts: &Value) -> Option<(i64, i64)> {
    Some((ts.get("seconds")?.as_i64()?, ts.get("microseconds")?.as_i64()?))
}

/// Encodes `{"execute": cmd, "arguments": args, "id": id}` plus the newline.
pub(crate) fn encode_command(cmd: &str, args: Option<&Value>, id: u64) -> Vec<u8> {
    let mut obj = Map::new();
    obj.insert("execute".into(), Value::String(cmd.to_string()));
    if let Some(args) = args {
        obj.insert("arguments".into(), args.clone());
    }
    obj.insert("id".into(), Value::from(id));
    // Serialising a `Value` cannot fail.
    let mut buf = serde_json::to_vec(&Value::Object(obj)).unwrap_or_default();
    buf.push(b'\n');
    buf
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const GREETING_72: &str = r#"{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "Debian 1:7.2+dfsg-7+deb12u18+b3"}, "capabilities": ["oob"]}}"#;

    #[test]
    fn greeting_parsed() {
        let g = parse_greeting(GREETING_72.as_bytes()).unwrap();
        assert_eq!(
            g.version,
            QemuVersion {
                major: 7,
                minor: 2,
                micro: 22,
                package: "Debian 1:7.2+dfsg-7+deb12u18+b3".into(),
            }
        );
        assert_eq!(g.capabilities, vec!["oob".to_string()]);
    }

    #[test]
    fn greeting_without_package_or_capabilities() {
        let g = parse_greeting(br#"{"QMP":{"version":{"qemu":{"major":8,"minor":0,"micro":1}}}}"#).unwrap();
        assert_eq!(g.version.major, 8);
        assert_eq!(g.version.package, "");
        assert!(g.capabilities.is_empty());
    }

    #[test]
    fn bad_greetings_are_protocol_errors() {
        for bad in [
            &b"not json"[..],
            br#"{"return": {}}"#,
            br#"{"QMP": {"version": {"qemu": {"major": "7"}}}}"#,
            b"",
        ] {
            match parse_greeting(bad) {
                Err(QmpError::Protocol(_)) => {}
                other => panic!("{:?} gave {other:?}", String::from_utf8_lossy(bad)),
            }
        }
    }

    #[test]
    fn reply_parsed() {
        match parse_incoming(br#"{"return": {"running": true}, "id": 7}"#).unwrap() {
            Incoming::Reply { id, reply } => {
                assert_eq!(id, Some(json!(7)));
                assert_eq!(reply, Reply::Return(json!({"running": true})));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn error_reply_parsed() {
        let line = br#"{"id": 3, "error": {"class": "CommandNotFound", "desc": "The command foo has not been found"}}"#;
        let Incoming::Reply { id, reply } = parse_incoming(line).unwrap() else {
            panic!("not a reply")
        };
        assert_eq!(id, Some(json!(3)));
        let err = reply.into_result("foo").unwrap_err();
        match err {
            QmpError::Command { class, desc, command } => {
                assert_eq!(class, ErrorClass::CommandNotFound);
                assert_eq!(desc, "The command foo has not been found");
                assert_eq!(command, "foo");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn error_reply_without_id() {
        let line = br#"{"error": {"class": "GenericError", "desc": "JSON parse error, expecting value"}}"#;
        let Incoming::Reply { id, reply } = parse_incoming(line).unwrap() else {
            panic!("not a reply")
        };
        assert_eq!(id, None);
        assert!(matches!(
            reply,
            Reply::Error {
                class: ErrorClass::GenericError,
                ..
            }
        ));
    }

    #[test]
    fn event_parsed() {
        let line = br#"{"timestamp": {"seconds": 1700000000, "microseconds": 123456}, "event": "STOP"}"#;
        let Incoming::Event(ev) = parse_incoming(line).unwrap() else {
            panic!("not an event")
        };
        assert_eq!(ev.name, "STOP");
        assert_eq!(ev.data, Value::Null);
        assert_eq!(ev.timestamp, Some((1_700_000_000, 123_456)));

        let line = br#"{"event": "JOB_STATUS_CHANGE", "data": {"status": "created", "id": "j1"}}"#;
        let Incoming::Event(ev) = parse_incoming(line).unwrap() else {
            panic!("not an event")
        };
        assert_eq!(ev.data["id"], "j1");
        assert_eq!(ev.timestamp, None);
    }

    #[test]
    fn garbage_is_protocol_error() {
        for bad in [&b"{"[..], b"[1,2]", br#"{"foo": 1}"#, br#"{"event": 5}"#] {
            assert!(
                matches!(parse_incoming(bad), Err(QmpError::Protocol(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn command_encoding() {
        let buf = encode_command("query-status", None, 1);
        assert_eq!(buf.last(), Some(&b'\n'));
        let v: Value = serde_json::from_slice(&buf).unwrap();
        assert_eq!(v, json!({"execute": "query-status", "id": 1}));

        let buf = encode_command("getfd", Some(&json!({"fdname": "f1"})), 42);
        let v: Value = serde_json::from_slice(&buf).unwrap();
        assert_eq!(v, json!({"execute": "getfd", "arguments": {"fdname": "f1"}, "id": 42}));
        assert_eq!(buf.iter().filter(|&&b| b == b'\n').count(), 1);
    }
}
