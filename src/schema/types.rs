//! The registry's vocabulary: schema types and compatibility levels, with the names
//! Confluent's REST API uses for them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The kind of a schema. The REST API spells them `AVRO`, `JSON` and `PROTOBUF`; the
/// CLI also accepts `json_schema`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum SchemaType {
    /// Apache Avro (`apache-avro`). Confluent's default when no type is named.
    #[serde(rename = "AVRO")]
    Avro,
    /// JSON Schema, drafts 7 (the default) and 2020-12 (`jsonschema`).
    #[serde(rename = "JSON")]
    Json,
    /// Protocol Buffers `.proto` text, compiled at run time (`protox` + `prost-reflect`).
    #[serde(rename = "PROTOBUF")]
    Protobuf,
}

impl SchemaType {
    /// Every type, in the order `GET /schemas/types` lists them.
    pub const ALL: [SchemaType; 3] = [SchemaType::Json, SchemaType::Protobuf, SchemaType::Avro];

    /// The REST API's name.
    pub fn as_str(self) -> &'static str {
        match self {
            SchemaType::Avro => "AVRO",
            SchemaType::Json => "JSON",
            SchemaType::Protobuf => "PROTOBUF",
        }
    }

    /// The wire value used by the registry frames: 0 Avro, 1 JSON, 2 Protobuf.
    pub fn as_u8(self) -> u8 {
        match self {
            SchemaType::Avro => 0,
            SchemaType::Json => 1,
            SchemaType::Protobuf => 2,
        }
    }

    /// Parses a wire value.
    pub fn from_u8(v: u8) -> Option<SchemaType> {
        match v {
            0 => Some(SchemaType::Avro),
            1 => Some(SchemaType::Json),
            2 => Some(SchemaType::Protobuf),
            _ => None,
        }
    }
}

impl fmt::Display for SchemaType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SchemaType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_uppercase().replace('-', "_").as_str() {
            "AVRO" => Ok(SchemaType::Avro),
            "JSON" | "JSON_SCHEMA" | "JSONSCHEMA" => Ok(SchemaType::Json),
            "PROTOBUF" | "PROTO" => Ok(SchemaType::Protobuf),
            _ => Err(format!("unknown schema type '{s}' (json_schema, avro, protobuf)")),
        }
    }
}

/// A subject's compatibility level: which earlier versions a new schema is checked
/// against, and in which direction.
///
/// - `Backward`: consumers using the new schema can read data written with the previous
///   one (the new schema is the reader). The default, as in Confluent's registry.
/// - `Forward`: consumers using the previous schema can read data written with the new one.
/// - `Full`: both.
/// - `…Transitive`: against every earlier (not deleted) version instead of only the latest.
/// - `None`: no check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Compatibility {
    /// No compatibility check.
    None,
    /// The new schema can read data written with the latest version.
    #[default]
    Backward,
    /// The new schema can read data written with every earlier version.
    BackwardTransitive,
    /// The latest version can read data written with the new schema.
    Forward,
    /// Every earlier version can read data written with the new schema.
    ForwardTransitive,
    /// Backward and forward against the latest version.
    Full,
    /// Backward and forward against every earlier version.
    FullTransitive,
}

impl Compatibility {
    /// Every level, in the order Confluent documents them.
    pub const ALL: [Compatibility; 7] = [
        Compatibility::None,
        Compatibility::Backward,
        Compatibility::BackwardTransitive,
        Compatibility::Forward,
        Compatibility::ForwardTransitive,
        Compatibility::Full,
        Compatibility::FullTransitive,
    ];

    /// The REST API's name (`BACKWARD_TRANSITIVE`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Compatibility::None => "NONE",
            Compatibility::Backward => "BACKWARD",
            Compatibility::BackwardTransitive => "BACKWARD_TRANSITIVE",
            Compatibility::Forward => "FORWARD",
            Compatibility::ForwardTransitive => "FORWARD_TRANSITIVE",
            Compatibility::Full => "FULL",
            Compatibility::FullTransitive => "FULL_TRANSITIVE",
        }
    }

    /// Whether the new schema must read data written with the earlier ones.
    pub fn checks_backward(self) -> bool {
        matches!(
            self,
            Compatibility::Backward
                | Compatibility::BackwardTransitive
                | Compatibility::Full
                | Compatibility::FullTransitive
        )
    }

    /// Whether the earlier schemas must read data written with the new one.
    pub fn checks_forward(self) -> bool {
        matches!(
            self,
            Compatibility::Forward
                | Compatibility::ForwardTransitive
                | Compatibility::Full
                | Compatibility::FullTransitive
        )
    }

    /// Whether every earlier version is checked, not only the latest.
    pub fn is_transitive(self) -> bool {
        matches!(
            self,
            Compatibility::BackwardTransitive | Compatibility::ForwardTransitive | Compatibility::FullTransitive
        )
    }

    /// The wire value used by the registry frames (the index in [`Compatibility::ALL`]).
    pub fn as_u8(self) -> u8 {
        Compatibility::ALL.iter().position(|c| *c == self).unwrap_or(0) as u8
    }

    /// Parses a wire value.
    pub fn from_u8(v: u8) -> Option<Compatibility> {
        Compatibility::ALL.get(v as usize).copied()
    }
}

impl fmt::Display for Compatibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Compatibility {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let upper = s.to_ascii_uppercase().replace('-', "_");
        Compatibility::ALL.iter().copied().find(|c| c.as_str() == upper).ok_or_else(|| {
            format!(
                "invalid compatibility level '{s}' (none, backward, backward_transitive, forward, \
                 forward_transitive, full, full_transitive)"
            )
        })
    }
}

/// A topic's schema policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SchemaPolicy {
    /// No check.
    #[default]
    None,
    /// Check, log and count; store anyway.
    Warn,
    /// Refuse records that fail the check.
    Enforce,
}

impl SchemaPolicy {
    /// Wire value: 0 none, 1 warn, 2 enforce.
    pub fn as_u8(self) -> u8 {
        self as u8
    }

    /// Parses a wire value.
    pub fn from_u8(v: u8) -> Option<SchemaPolicy> {
        [SchemaPolicy::None, SchemaPolicy::Warn, SchemaPolicy::Enforce].get(v as usize).copied()
    }
}

impl std::fmt::Display for SchemaPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SchemaPolicy::None => "none",
            SchemaPolicy::Warn => "warn",
            SchemaPolicy::Enforce => "enforce",
        })
    }
}

impl std::str::FromStr for SchemaPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "none" => Ok(SchemaPolicy::None),
            "warn" => Ok(SchemaPolicy::Warn),
            "enforce" => Ok(SchemaPolicy::Enforce),
            _ => Err(format!("unknown schema validation policy '{s}' (none, warn, enforce)")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for t in SchemaType::ALL {
            assert_eq!(t.as_str().parse::<SchemaType>().unwrap(), t);
            assert_eq!(SchemaType::from_u8(t.as_u8()), Some(t));
            assert_eq!(serde_json::to_string(&t).unwrap(), format!("\"{}\"", t.as_str()));
        }
        assert_eq!("json_schema".parse::<SchemaType>().unwrap(), SchemaType::Json);
        assert!("xml".parse::<SchemaType>().is_err());
        assert_eq!(SchemaType::from_u8(3), None);
        for c in Compatibility::ALL {
            assert_eq!(c.as_str().to_lowercase().parse::<Compatibility>().unwrap(), c);
            assert_eq!(Compatibility::from_u8(c.as_u8()), Some(c));
            assert_eq!(serde_json::to_string(&c).unwrap(), format!("\"{}\"", c.as_str()));
        }
        assert!("sideways".parse::<Compatibility>().is_err());
        assert_eq!(Compatibility::from_u8(7), None);
        assert_eq!(Compatibility::default(), Compatibility::Backward);
    }
}
