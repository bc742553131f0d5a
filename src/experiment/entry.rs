//! Hand-written Deserialize and JsonSchema for [`FaultEntry`]: the entry's keys are `name`,
//! `at`, `duration` and exactly one fault kind key from the registry (`process-kill: {...}`).
//! serde's `flatten` would lose both `deny_unknown_fields` and the locations, so the map is
//! walked here, streaming, and the kind's value is read by the registry.

use std::borrow::Cow;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use super::located::Located;
use super::spec::FaultEntry;
use super::values::HumanDuration;
use crate::fault::{FAULT_KINDS, FaultSpec};

const COMMON_KEYS: &[&str] = &["name", "at", "duration"];

fn expected_keys() -> &'static [&'static str] {
    use std::sync::OnceLock;
    static KEYS: OnceLock<Vec<&'static str>> = OnceLock::new();
    KEYS.get_or_init(|| {
        COMMON_KEYS
            .iter()
            .chain(FAULT_KINDS.iter())
            .copied()
            .collect()
    })
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
                let mut name: Option<Located<String>> = None;
                let mut at: Option<Located<HumanDuration>> = None;
                let mut duration: Option<Located<HumanDuration>> = None;
                let mut spec: Option<(String, Located<FaultSpec>)> = None;
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "name" => set_once(&mut name, &key, map.next_value()?)?,
                        "at" => set_once(&mut at, &key, map.next_value()?)?,
                        "duration" => set_once(&mut duration, &key, map.next_value()?)?,
                        other => match FaultSpec::deserialize_kind(other, &mut map) {
                            Some(value) => {
                                let value = value?;
                                if let Some((first, _)) = &spec {
                                    return Err(de::Error::custom(format!(
                                        "a fault entry has exactly one kind, but this one has \
                                         both `{first}` and `{other}`: split it into two entries"
                                    )));
                                }
                                spec = Some((other.to_string(), value));
                            }
                            None => return Err(de::Error::unknown_field(other, expected_keys())),
                        },
                    }
                }
                let name = name.ok_or_else(|| de::Error::missing_field("name"))?;
                let at = at.ok_or_else(|| de::Error::missing_field("at"))?;
                let (_, spec) = spec.ok_or_else(|| {
                    de::Error::custom(format!(
                        "missing the fault kind: add one of {}",
                        FAULT_KINDS
                            .iter()
                            .map(|k| format!("`{k}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })?;
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

fn set_once<T, E: de::Error>(slot: &mut Option<T>, key: &str, value: T) -> Result<(), E> {
    if slot.is_some() {
        return Err(E::duplicate_field(match key {
            "name" => "name",
            "at" => "at",
            _ => "duration",
        }));
    }
    *slot = Some(value);
    Ok(())
}

impl JsonSchema for FaultEntry {
    fn schema_name() -> Cow<'static, str> {
        Cow::Borrowed("FaultEntry")
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let duration = generator.subschema_for::<HumanDuration>();
        let kinds: Vec<serde_json::Value> = FaultSpec::kind_schemas(generator)
            .into_iter()
            .map(|(key, schema)| {
                let mut props = serde_json::Map::new();
                props.insert("name".into(), json_schema!({"type": "string"}).into());
                props.insert("at".into(), duration.clone().into());
                props.insert("duration".into(), duration.clone().into());
                props.insert(key.into(), schema.into());
                serde_json::json!({
                    "title": key,
                    "type": "object",
                    "properties": props,
                    "required": ["name", "at", key],
                    "additionalProperties": false
                })
            })
            .collect();
        json_schema!({
            "description": "One fault: a unique name, its offset `at` from the start of load, a \
                            `duration` for faults that hold a state, and exactly one fault kind.",
            "oneOf": kinds
        })
    }
}
