//! A protocol-neutral value: what a [`Payload`](super::Payload) decodes to when it has to
//! change encoding (JSON ↔ MessagePack) or when server logic has to look inside it.
//!
//! The model is MessagePack's (it is the richer of the two); JSON maps onto it as .NET's
//! `System.Text.Json` settings for SignalR do: binary is written as a base64 string and a
//! MessagePack timestamp as an ISO-8601 string.

use bytes::Bytes;

/// A decoded value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `null` / nil.
    Null,
    /// A boolean.
    Bool(bool),
    /// A signed integer (negative numbers, and JSON integers that fit).
    Int(i64),
    /// An unsigned integer above `i64::MAX`.
    UInt(u64),
    /// A floating-point number.
    Float(f64),
    /// A UTF-8 string.
    Str(String),
    /// Binary data (MessagePack bin; base64 in JSON).
    Bin(Bytes),
    /// An array.
    Array(Vec<Self>),
    /// A map in insertion order (JSON object keys are always [`Value::Str`]).
    Map(Vec<(Self, Self)>),
    /// A MessagePack timestamp (extension type -1): seconds and nanoseconds since the epoch.
    Timestamp {
        /// Seconds since 1970-01-01T00:00:00Z.
        seconds: i64,
        /// Nanoseconds within the second (0..1e9).
        nanos: u32,
    },
    /// Another MessagePack extension type, kept opaque.
    Ext(i8, Bytes),
}

impl Value {
    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The integer, if this is one that fits an `i64`.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Self::Int(i) => Some(*i),
            Self::UInt(u) => i64::try_from(*u).ok(),
            _ => None,
        }
    }

    /// The boolean, if this is one.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Self::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The value of string key `key` in a map.
    pub fn get(&self, key: &str) -> Option<&Self> {
        match self {
            Self::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// Sets string key `key` in a map (replacing an existing entry); no effect on non-maps.
    pub fn set(&mut self, key: &str, value: Self) {
        if let Self::Map(entries) = self {
            match entries.iter_mut().find(|(k, _)| k.as_str() == Some(key)) {
                Some((_, slot)) => *slot = value,
                None => entries.push((Self::Str(key.to_owned()), value)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_lookup_and_update_by_string_key() {
        let mut map = Value::Map(vec![(Value::Str("view".into()), Value::Str("chat".into()))]);
        assert_eq!(map.get("view").and_then(Value::as_str), Some("chat"));
        map.set("currentView", Value::Str("chat".into()));
        map.set("view", Value::Str("home".into()));
        assert_eq!(map.get("view").and_then(Value::as_str), Some("home"));
        assert_eq!(map.get("currentView").and_then(Value::as_str), Some("chat"));
    }
}
