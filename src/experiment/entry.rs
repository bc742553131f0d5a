//! Hand-written Deserialize and JsonSchema for the plug-in entries of an experiment: a
//! [`FaultEntry`] (`name`, `at`, `duration` and one fault kind key, `process-kill: {...}`) and a
//! [`ProbeEntry`] (`name`, `interval` and one probe kind key, `http: {...}`). serde's `flatten`
//! would lose both `deny_unknown_fields` and the locations, so the map is walked here,
//! streaming: the common keys are read by the entry, the kind key's value by its registry
//! ([`EntryKinds`], implemented by the enums that `fault_kinds!` and `probe_kinds!` generate).

use std::borrow::Cow;
use std::fmt;
use std::sync::OnceLock;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use super::located::Located;
use super::spec::{FaultEntry, ProbeEntry, defaults};
use super::values::HumanDuration;
use crate::fault::{FAULT_KINDS, FaultSpec};
use crate::probe::{PROBE_KINDS, ProbeSpec};

/// A registry of kinds, each written as one key of an entry whose value is the kind's spec.
pub(crate) trait EntryKinds: Sized {
    /// What an entry of this family is called in messages: `fault`, `probe`.
    const ENTRY: &'static str;
    /// The keys of every registered kind.
    const KINDS: &'static [&'static str];

    /// Reads the value of key `key` as that kind's spec; `None` when `key` is no kind.
    fn deserialize_kind<'de, A: MapAccess<'de>>(
        key: &str,
        map: &mut A,
    ) -> Option<Result<Located<Self>, A::Error>>;

    /// Each kind's key and the schema of its spec.
    fn kind_schemas(generator: &mut SchemaGenerator) -> Vec<(&'static str, Schema)>;
}

/// Implements [`EntryKinds`] for a registry's enum from its list of kinds: the one definition
/// `fault_kinds!` and `probe_kinds!` share (`$spec::$variant` holds the spec `$ty` of key `$key`).
macro_rules! entry_kinds {
    ($spec:ident, $entry:literal, $kinds:expr, $( $key:literal => $variant:ident($ty:ty) ),* $(,)?) => {
        impl $crate::experiment::entry::EntryKinds for $spec {
            const ENTRY: &'static str = $entry;
            const KINDS: &'static [&'static str] = $kinds;

            fn deserialize_kind<'de, A: serde::de::MapAccess<'de>>(
                key: &str,
                map: &mut A,
            ) -> Option<std::result::Result<$crate::experiment::Located<Self>, A::Error>> {
                match key {
                    $($key => Some(map.next_value::<$crate::experiment::Located<$ty>>().map(|l| {
                        $crate::experiment::Located::at($spec::$variant(l.value), l.line, l.column)
                    })),)*
                    _ => None,
                }
            }

            fn kind_schemas(
                generator: &mut schemars::SchemaGenerator,
            ) -> Vec<(&'static str, schemars::Schema)> {
                vec![$(($key, generator.subschema_for::<$ty>()),)*]
            }
        }
    };
}
pub(crate) use entry_kinds;

/// Walks an entry's map: each key is offered to `common` first (which reads its value and
/// returns `true`, or returns `false` for a key it does not own), then to the registry `K`.
/// Returns the one kind found (`None` if there was none: the caller reports it with
/// [`missing_kind`] after its own required keys). Two kind keys, or a key that is neither,
/// are errors located at that key; `expected` lists every key for the message.
fn walk<'de, K, A, F>(
    map: &mut A,
    expected: &'static [&'static str],
    mut common: F,
) -> Result<Option<Located<K>>, A::Error>
where
    K: EntryKinds,
    A: MapAccess<'de>,
    F: FnMut(&str, &mut A) -> Result<bool, A::Error>,
{
    let mut spec: Option<(String, Located<K>)> = None;
    while let Some(key) = map.next_key::<String>()? {
        if common(&key, map)? {
            continue;
        }
        match K::deserialize_kind(&key, map) {
            Some(value) => {
                let value = value?;
                if let Some((first, _)) = &spec {
                    return Err(de::Error::custom(format!(
                        "a {} entry has exactly one kind, but this one has both `{first}` and \
                         `{key}`: split it into two entries",
                        K::ENTRY
                    )));
                }
                spec = Some((key, value));
            }
            None => return Err(de::Error::unknown_field(&key, expected)),
        }
    }
    Ok(spec.map(|(_, s)| s))
}

/// The error of an entry without a kind key, naming the choices.
fn missing_kind<K: EntryKinds, E: de::Error>() -> E {
    E::custom(format!(
        "missing the {} kind: add one of {}",
        K::ENTRY,
        K::KINDS
            .iter()
            .map(|k| format!("`{k}`"))
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

/// The common keys then the kind keys, built once per entry type (`cell`) for the static
/// list that serde's unknown-field message wants.
fn expected_keys(
    cell: &'static OnceLock<Vec<&'static str>>,
    common: &[&'static str],
    kinds: &[&'static str],
) -> &'static [&'static str] {
    cell.get_or_init(|| common.iter().chain(kinds).copied().collect())
}

fn set_once<T, E: de::Error>(slot: &mut Option<T>, key: &'static str, value: T) -> Result<(), E> {
    if slot.is_some() {
        return Err(E::duplicate_field(key));
    }
    *slot = Some(value);
    Ok(())
}

impl<'de> Deserialize<'de> for FaultEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = FaultEntry;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a fault: name, at, optional duration, and one fault kind key")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<FaultEntry, A::Error> {
                static KEYS: OnceLock<Vec<&'static str>> = OnceLock::new();
                let expected = expected_keys(&KEYS, &["name", "at", "duration"], FAULT_KINDS);
                let mut name: Option<Located<String>> = None;
                let mut at: Option<Located<HumanDuration>> = None;
                let mut duration: Option<Located<HumanDuration>> = None;
                let spec = walk::<FaultSpec, _, _>(&mut map, expected, |key, map| {
                    match key {
                        "name" => set_once(&mut name, "name", map.next_value()?)?,
                        "at" => set_once(&mut at, "at", map.next_value()?)?,
                        "duration" => set_once(&mut duration, "duration", map.next_value()?)?,
                        _ => return Ok(false),
                    }
                    Ok(true)
                })?;
                let name = name.ok_or_else(|| de::Error::missing_field("name"))?;
                let at = at.ok_or_else(|| de::Error::missing_field("at"))?;
                let spec = spec.ok_or_else(missing_kind::<FaultSpec, _>)?;
                Ok(FaultEntry {
                    name,
                    at,
                    duration,
                    spec,
                })
            }
        }
        d.deserialize_map(V)
    }
}

impl<'de> Deserialize<'de> for ProbeEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ProbeEntry;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a probe: optional name and interval, and one probe kind key")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ProbeEntry, A::Error> {
                static KEYS: OnceLock<Vec<&'static str>> = OnceLock::new();
                let expected = expected_keys(&KEYS, &["name", "interval"], PROBE_KINDS);
                let mut name: Option<Option<String>> = None;
                let mut interval: Option<Located<HumanDuration>> = None;
                let spec = walk::<ProbeSpec, _, _>(&mut map, expected, |key, map| {
                    match key {
                        "name" => set_once(&mut name, "name", map.next_value()?)?,
                        "interval" => set_once(&mut interval, "interval", map.next_value()?)?,
                        _ => return Ok(false),
                    }
                    Ok(true)
                })?;
                let spec = spec.ok_or_else(missing_kind::<ProbeSpec, _>)?;
                Ok(ProbeEntry {
                    name: name.flatten(),
                    interval: interval.unwrap_or_else(defaults::probe_interval),
                    spec,
                })
            }
        }
        d.deserialize_map(V)
    }
}

/// The schema of an entry: one alternative per kind, each an object of the common keys
/// (`common`, in order; `required` among them) plus that kind's key, nothing else.
fn entry_schema<K: EntryKinds>(
    generator: &mut SchemaGenerator,
    description: &str,
    common: &[(&str, Schema)],
    required: &[&str],
) -> Schema {
    let kinds: Vec<serde_json::Value> = K::kind_schemas(generator)
        .into_iter()
        .map(|(key, schema)| {
            let mut props = serde_json::Map::new();
            for (name, s) in common {
                props.insert((*name).into(), s.clone().into());
            }
            props.insert(key.into(), schema.into());
            let required: Vec<&str> = required.iter().copied().chain([key]).collect();
            serde_json::json!({
                "title": key,
                "type": "object",
                "properties": props,
                "required": required,
                "additionalProperties": false
            })
        })
        .collect();
    json_schema!({
        "description": description,
        "oneOf": kinds
    })
}

impl JsonSchema for FaultEntry {
    fn schema_name() -> Cow<'static, str> {
        Cow::Borrowed("FaultEntry")
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let duration = generator.subschema_for::<HumanDuration>();
        entry_schema::<FaultSpec>(
            generator,
            "One fault: a unique name, its offset `at` from the start of load, a `duration` for \
             faults that hold a state, and exactly one fault kind.",
            &[
                ("name", json_schema!({"type": "string"})),
                ("at", duration.clone()),
                ("duration", duration),
            ],
            &["name", "at"],
        )
    }
}

impl JsonSchema for ProbeEntry {
    fn schema_name() -> Cow<'static, str> {
        Cow::Borrowed("ProbeEntry")
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let name = json_schema!({
            "default": null,
            "description": "Name in reports; defaults to `probe-<index>`.",
            "type": ["string", "null"]
        });
        let interval = json_schema!({
            "allOf": [generator.subschema_for::<HumanDuration>()],
            "default": serde_json::to_value(defaults::probe_interval()).unwrap_or_default(),
            "description": "Interval between checks."
        });
        entry_schema::<ProbeSpec>(
            generator,
            "A probe of the hypothesis: an optional name, an `interval`, and exactly one probe \
             kind.",
            &[("name", name), ("interval", interval)],
            &[],
        )
    }
}
