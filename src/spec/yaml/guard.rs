//! The structural guards of [`super::parse`]: a streaming pre-scan for depth and size, and a
//! counting visitor that builds the value (see the module docs of [`super`]).

use std::cell::{Cell, RefCell};
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_yaml::{Mapping, Value};

use super::{MAX_DEPTH, MAX_NODES, Problem, YamlPath, too_deep};

/// Builds the value of one document with the node, depth, key and tag checks.
pub(super) fn build(doc: serde_yaml::Deserializer<'_>) -> Result<Value, Problem> {
    let ctx = Ctx::default();
    NodeSeed {
        ctx: &ctx,
        path: YamlPath::root(),
    }
    .deserialize(doc)
    .map_err(|e| ctx.problem(e))
}

/// Streams the parser's events (nothing is built) and stops at the first list or mapping nested
/// deeper than [`MAX_DEPTH`], or after [`MAX_NODES`] events.
///
/// Why this exists: libyaml's scanner does work proportional to the flow nesting level for
/// every token, and serde_yaml scans the whole document before building anything, so 1 MiB of
/// `{a: {a: {a: ...` costs minutes before any depth check of ours could run. Streaming stops at
/// the first node that is too deep, so the cost stays small; likewise a huge flat document is
/// refused after [`MAX_NODES`] events instead of being loaded whole. The parser is the very libyaml
/// port serde_yaml uses, so both agree on what the nesting is. Syntax errors are left for the
/// real parse to report.
#[allow(unsafe_code)]
pub(super) fn prescan(text: &str) -> Result<(), Problem> {
    use std::mem::MaybeUninit;
    use unsafe_libyaml as unsafe_yaml;

    /// Owns an initialised parser and deletes it on every exit path.
    struct Parser(Box<MaybeUninit<unsafe_yaml::yaml_parser_t>>);
    impl Drop for Parser {
        fn drop(&mut self) {
            // SAFETY: only constructed after yaml_parser_initialize succeeded; deleted once.
            unsafe { unsafe_yaml::yaml_parser_delete(self.0.as_mut_ptr()) }
        }
    }

    let mut raw = Box::new(MaybeUninit::<unsafe_yaml::yaml_parser_t>::uninit());
    // SAFETY: `raw` is a heap allocation of the right type that is never moved while the parser
    // lives; initialize fills it in, and on failure we return before using or deleting it.
    if unsafe { unsafe_yaml::yaml_parser_initialize(raw.as_mut_ptr()) }.fail {
        return Ok(()); // out of memory; the real parse will fail the same way
    }
    let mut parser = Parser(raw);
    let p = parser.0.as_mut_ptr();
    // SAFETY: the parser is initialised; `text` outlives `parser` (both are locals of this
    // function and `parser` is dropped first), so the input pointer stays valid.
    unsafe {
        unsafe_yaml::yaml_parser_set_encoding(p, unsafe_yaml::YAML_UTF8_ENCODING);
        unsafe_yaml::yaml_parser_set_input_string(p, text.as_ptr(), text.len() as u64);
    }
    let mut depth = 0usize;
    let mut events = 0usize;
    loop {
        let mut event = MaybeUninit::<unsafe_yaml::yaml_event_t>::uninit();
        let e = event.as_mut_ptr();
        // SAFETY: `p` is a live parser and `e` points to writable storage for one event.
        if unsafe { unsafe_yaml::yaml_parser_parse(p, e) }.fail {
            return Ok(());
        }
        // SAFETY: yaml_parser_parse succeeded, so the event is initialised; we copy two plain
        // fields and then release the event exactly once.
        let (kind, mark) = unsafe {
            let out = ((*e).type_, (*e).start_mark);
            unsafe_yaml::yaml_event_delete(e);
            out
        };
        let at = |message: String| Problem {
            path: None,
            message,
            location: Some((mark.line as usize + 1, mark.column as usize + 1)),
        };
        events += 1;
        if events > MAX_NODES {
            return Err(at(format!(
                "has more than {MAX_NODES} YAML nodes; refusing to read it"
            )));
        }
        match kind {
            unsafe_yaml::YAML_SEQUENCE_START_EVENT | unsafe_yaml::YAML_MAPPING_START_EVENT => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(at(too_deep()));
                }
            }
            unsafe_yaml::YAML_SEQUENCE_END_EVENT | unsafe_yaml::YAML_MAPPING_END_EVENT => {
                depth = depth.saturating_sub(1);
            }
            unsafe_yaml::YAML_STREAM_END_EVENT => return Ok(()),
            _ => {}
        }
    }
}

#[derive(Default)]
struct Ctx {
    nodes: Cell<usize>,
    /// The structured problem behind a custom error, so it is reported with our path and
    /// serde_yaml's position rather than serde_yaml's rendering.
    problem: RefCell<Option<(Option<YamlPath>, String)>>,
}

impl Ctx {
    fn fail<E: de::Error>(&self, path: Option<&YamlPath>, msg: String) -> E {
        *self.problem.borrow_mut() = Some((path.cloned(), msg.clone()));
        E::custom(msg)
    }

    fn count<E: de::Error>(&self) -> Result<(), E> {
        let n = self.nodes.get() + 1;
        self.nodes.set(n);
        if n > MAX_NODES {
            return Err(self.fail(
                None,
                format!(
                    "expands to more than {MAX_NODES} YAML nodes (an alias expansion bomb?); \
                     refusing to read it"
                ),
            ));
        }
        Ok(())
    }

    fn problem(&self, e: serde_yaml::Error) -> Problem {
        let location = e.location().map(|l| (l.line(), l.column()));
        match self.problem.borrow_mut().take() {
            Some((path, message)) => Problem {
                path,
                message,
                location,
            },
            // A syntax error from the parser: its rendering already names line and column.
            None => Problem::new(format!("is not valid YAML: {e}")),
        }
    }
}

struct NodeSeed<'c> {
    ctx: &'c Ctx,
    path: YamlPath,
}

impl<'de> DeserializeSeed<'de> for NodeSeed<'_> {
    type Value = Value;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl NodeSeed<'_> {
    fn enter<E: de::Error>(&self) -> Result<(), E> {
        self.ctx.count()?;
        if self.path.len() >= MAX_DEPTH {
            return Err(self.ctx.fail(None, too_deep()));
        }
        Ok(())
    }
}

impl<'de> Visitor<'de> for NodeSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a YAML value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        self.ctx.count()?;
        Ok(Value::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        self.ctx.count()?;
        Ok(Value::Number(v.into()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        self.ctx.count()?;
        Ok(Value::Number(v.into()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        self.ctx.count()?;
        Ok(Value::Number(v.into()))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        self.ctx.count()?;
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        self.ctx.count()?;
        Ok(Value::String(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        self.ctx.count()?;
        Ok(Value::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        self.visit_unit()
    }
    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        self.deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.enter()?;
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(NodeSeed {
            ctx: self.ctx,
            path: self.path.index(out.len()),
        })? {
            out.push(v);
        }
        Ok(Value::Sequence(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.enter()?;
        let mut out = Mapping::new();
        while let Some(k) = map.next_key_seed(KeySeed {
            ctx: self.ctx,
            parent: &self.path,
            seen: &out,
        })? {
            let v = map.next_value_seed(NodeSeed {
                ctx: self.ctx,
                path: self.path.key(&k),
            })?;
            out.insert(Value::String(k), v);
        }
        Ok(Value::Mapping(out))
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, _data: A) -> Result<Value, A::Error> {
        Err(self.ctx.fail(
            Some(&self.path),
            "YAML tags (like !foo or !!binary) are not supported".into(),
        ))
    }
}

/// Deserializes one mapping key: a string, not seen before in this mapping.
struct KeySeed<'c> {
    ctx: &'c Ctx,
    parent: &'c YamlPath,
    seen: &'c Mapping,
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = String;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_any(self)
    }
}

impl KeySeed<'_> {
    fn not_a_string<E: de::Error>(&self, what: String) -> E {
        self.ctx.fail(
            Some(self.parent),
            format!("mapping keys must be strings, got {what}; quote the key"),
        )
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string key")
    }

    fn visit_str<E: de::Error>(self, k: &str) -> Result<String, E> {
        self.ctx.count()?;
        if k == "<<" {
            return Err(self.ctx.fail(
                Some(self.parent),
                "YAML merge keys (<<) are not supported; write the fields out".into(),
            ));
        }
        if self.seen.contains_key(k) {
            return Err(self.ctx.fail(
                Some(&self.parent.key(k)),
                "duplicate key (it appears more than once in the same mapping)".into(),
            ));
        }
        Ok(k.to_string())
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<String, E> {
        Err(self.not_a_string(format!("boolean {v}")))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
        Err(self.not_a_string(format!("number {v}")))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
        Err(self.not_a_string(format!("number {v}")))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
        Err(self.not_a_string(format!("number {v}")))
    }
    fn visit_unit<E: de::Error>(self) -> Result<String, E> {
        Err(self.not_a_string("null".into()))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<String, A::Error> {
        Err(self.not_a_string("a list".into()))
    }
    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<String, A::Error> {
        Err(self.not_a_string("a mapping".into()))
    }
    fn visit_enum<A: de::EnumAccess<'de>>(self, _: A) -> Result<String, A::Error> {
        Err(self.ctx.fail(
            Some(self.parent),
            "YAML tags (like !foo or !!binary) are not supported".into(),
        ))
    }
}
