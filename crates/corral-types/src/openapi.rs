//! OpenAPI schemas of the types that serialise as strings through their own serde code (the
//! derive cannot see that): names, sizes and MAC addresses.

use std::borrow::Cow;

use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToSchema};

use crate::{ByteSize, MacAddr, VmName};

fn string(description: &str, pattern: Option<&str>, example: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
        .pattern(pattern)
        .examples([example])
        .into()
}

impl PartialSchema for VmName {
    fn schema() -> RefOr<Schema> {
        string(
            "A VM (or snapshot) name: 1-63 of A-Z a-z 0-9 . _ -, not starting with . or -",
            Some("^[A-Za-z0-9_][A-Za-z0-9._-]{0,62}$"),
            "web1",
        )
    }
}

impl ToSchema for VmName {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("VmName")
    }
}

impl PartialSchema for ByteSize {
    fn schema() -> RefOr<Schema> {
        // Written as a string with a unit; read as that or as a number of bytes.
        OneOfBuilder::new()
            .item(ObjectBuilder::new().schema_type(Type::String).examples(["512M"]))
            .item(ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(0)))
            .description(Some(
                "A size: a string such as \"512M\" or \"2G\" (binary units K, M, G, T, P), or a \
                 number of bytes; written back as a string",
            ))
            .into()
    }
}

impl ToSchema for ByteSize {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("ByteSize")
    }
}

impl PartialSchema for MacAddr {
    fn schema() -> RefOr<Schema> {
        string(
            "A unicast Ethernet MAC address",
            Some("^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$"),
            "52:54:00:12:34:56",
        )
    }
}

impl ToSchema for MacAddr {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("MacAddr")
    }
}
