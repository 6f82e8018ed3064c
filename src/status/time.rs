//! Timestamps as Kubernetes writes them: RFC 3339, UTC, whole seconds ("2024-01-01T09:00:00Z").

use chrono::{DateTime, SecondsFormat, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(DateTime<Utc>);

impl Timestamp {
    pub fn now() -> Timestamp {
        Timestamp::from_datetime(Utc::now())
    }

    /// Truncates to whole seconds, so that a value survives a write/read round trip unchanged.
    pub fn from_datetime(t: DateTime<Utc>) -> Timestamp {
        Timestamp(DateTime::from_timestamp(t.timestamp(), 0).unwrap_or(t))
    }

    pub fn from_unix(secs: i64) -> Timestamp {
        Timestamp(DateTime::from_timestamp(secs, 0).unwrap_or_default())
    }

    pub fn unix(self) -> i64 {
        self.0.timestamp()
    }

    /// Seconds from `earlier` to `self` (negative if `earlier` is later).
    pub fn seconds_since(self, earlier: Timestamp) -> i64 {
        self.0.timestamp() - earlier.0.timestamp()
    }

    pub fn plus_seconds(self, secs: i64) -> Timestamp {
        Timestamp::from_unix(self.unix().saturating_add(secs))
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.to_rfc3339_opts(SecondsFormat::Secs, true))
    }
}

impl std::str::FromStr for Timestamp {
    type Err = chrono::ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Timestamp::from_datetime(
            DateTime::parse_from_rfc3339(s)?.with_timezone(&Utc),
        ))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Timestamp {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Timestamp".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "format": "date-time",
            "description": "RFC 3339 time in UTC, whole seconds",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_kubernetes_format() {
        let t: Timestamp = "2024-01-01T09:00:00Z".parse().unwrap();
        assert_eq!(t.to_string(), "2024-01-01T09:00:00Z");
        let y = serde_yaml::to_string(&t).unwrap();
        let back: Timestamp = serde_yaml::from_str(&y).unwrap();
        assert_eq!(back, t);
    }

    #[test]
    fn truncates_sub_seconds() {
        let t: Timestamp = "2024-01-01T09:00:00.75+01:00".parse().unwrap();
        assert_eq!(t.to_string(), "2024-01-01T08:00:00Z");
    }
}
