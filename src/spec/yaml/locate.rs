//! Finding the line and column of a path in YAML text (see [`locate`]).

use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::{Seg, YamlPath};

const HERE: &str = "\u{1}ibu-locate\u{1}";

/// Line and column (1-based) of the node at `path` in `text` (of its key when `at_key`), or
/// `None` if the path does not exist. Works by walking the text again and raising an error at
/// the node, which serde_yaml stamps with the node's position; only call it on text that
/// [`super::parse`] accepted.
pub fn locate(text: &str, path: &YamlPath, at_key: bool) -> Option<(usize, usize)> {
    let doc = serde_yaml::Deserializer::from_str(text).next()?;
    match (LocateSeed {
        target: &path.0,
        at_key,
    })
    .deserialize(doc)
    {
        Err(e) if e.to_string().contains(HERE) => e.location().map(|l| (l.line(), l.column())),
        _ => None,
    }
}

struct LocateSeed<'p> {
    target: &'p [Seg],
    at_key: bool,
}

impl<'de> DeserializeSeed<'de> for LocateSeed<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl LocateSeed<'_> {
    fn scalar<E: de::Error>(&self) -> Result<(), E> {
        if self.target.is_empty() {
            Err(E::custom(HERE))
        } else {
            Ok(())
        }
    }
}

impl<'de> Visitor<'de> for LocateSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.scalar()
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.scalar()
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.scalar()
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.scalar()
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.scalar()
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.scalar()
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.scalar()
    }
    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        self.deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.scalar()?;
        let want = match self.target.first() {
            Some(Seg::Index(i)) => Some(*i),
            _ => None,
        };
        let mut i = 0;
        loop {
            let more = if Some(i) == want {
                seq.next_element_seed(LocateSeed {
                    target: &self.target[1..],
                    at_key: self.at_key,
                })?
            } else {
                seq.next_element::<IgnoredAny>()?.map(|_| ())
            };
            if more.is_none() {
                return Ok(());
            }
            i += 1;
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.scalar()?;
        let want = match self.target.first() {
            Some(Seg::Key(k)) => Some(k.as_str()),
            _ => None,
        };
        let fire = self.at_key && self.target.len() == 1;
        while let Some(hit) = map.next_key_seed(KeyProbe { want, fire })? {
            if hit {
                map.next_value_seed(LocateSeed {
                    target: &self.target[1..],
                    at_key: self.at_key,
                })?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

/// Reads a key and says whether it is the wanted one (or raises the locating error at it).
struct KeyProbe<'a> {
    want: Option<&'a str>,
    fire: bool,
}

impl<'de> DeserializeSeed<'de> for KeyProbe<'_> {
    type Value = bool;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for KeyProbe<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: de::Error>(self, k: &str) -> Result<bool, E> {
        let hit = self.want == Some(k);
        if hit && self.fire {
            return Err(E::custom(HERE));
        }
        Ok(hit)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }
}
