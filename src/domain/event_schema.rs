//! JSON Schemas of event types: compiling a tenant's schema once, and checking
//! payloads against it, with every violation named by a JSON pointer.
//!
//! Schemas are draft 2020-12 whatever their `$schema` says, so a catalog means one
//! thing. Compilation is what costs (it checks the schema against the meta-schema
//! and builds a validator tree); validating a payload against a compiled schema
//! is a walk of that tree. Callers therefore compile once per schema version and
//! keep the [`EventSchema`] (see `api::catalog`).
//!
//! Two choices protect the server from the schemas tenants write:
//! - no `$ref` is fetched: a reference to anything outside the schema is a compile
//!   error, never a request from the server (the crate's HTTP and file retrievers
//!   are not even built, see Cargo.toml);
//! - `pattern` and `patternProperties` run on the linear-time `regex` engine, so a
//!   pathological pattern cannot make a publish spin on backtracking.

use jsonschema::{Draft, PatternOptions, Validator};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

/// Most violations reported for one document: enough to fix a payload, and a
/// bound on the answer to a payload that is wrong everywhere.
pub const MAX_VIOLATIONS: usize = 20;

/// Largest accepted schema, in bytes of JSON text.
pub const MAX_SCHEMA_BYTES: usize = 64 * 1024;

/// One way a document breaks a schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Violation {
    /// JSON pointer (RFC 6901) to the offending value, from the root of the
    /// request body, e.g. `/payload/amount`.
    #[schema(example = "/payload/amount")]
    pub pointer: String,
    /// What is wrong there. Values are not repeated (`value is not of type
    /// "integer"`), so an answer never echoes payload data at length.
    #[schema(example = "value is not of type \"integer\"")]
    pub detail: String,
}

/// A compiled schema of an event type.
#[derive(Debug)]
pub struct EventSchema {
    validator: Validator,
}

/// Why a schema cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaError {
    /// Summary.
    pub detail: String,
    /// Where in the schema, when known (pointers start with `prefix`).
    pub violations: Vec<Violation>,
}

impl EventSchema {
    /// Compiles `schema` as draft 2020-12. `prefix` is where the schema sits in
    /// the request body (e.g. `/schema`), so reported pointers lead to it.
    pub fn compile(schema: &Value, prefix: &str) -> Result<Self, SchemaError> {
        // A schema is an object or a boolean; `true` and `{}` accept anything.
        if !(schema.is_object() || schema.is_boolean()) {
            return Err(SchemaError {
                detail: "a JSON Schema is an object (or true/false)".into(),
                violations: vec![Violation {
                    pointer: prefix.into(),
                    detail: "must be an object or a boolean".into(),
                }],
            });
        }
        let built = jsonschema::options()
            .with_draft(Draft::Draft202012)
            .with_pattern_options(PatternOptions::regex())
            .should_validate_formats(true)
            .build(schema);
        match built {
            Ok(validator) => Ok(Self { validator }),
            Err(e) => {
                let at = e.instance_path().as_str();
                Err(SchemaError {
                    detail: format!("the schema is not a valid draft 2020-12 JSON Schema: {e}"),
                    violations: vec![Violation {
                        pointer: format!("{prefix}{at}"),
                        detail: e.to_string(),
                    }],
                })
            }
        }
    }

    /// Checks `doc`; on failure, up to [`MAX_VIOLATIONS`] violations whose
    /// pointers start with `prefix` (where `doc` sits in the request body).
    pub fn check(&self, doc: &Value, prefix: &str) -> Result<(), Vec<Violation>> {
        // The common case, valid, without building any error.
        if self.validator.is_valid(doc) {
            return Ok(());
        }
        let violations: Vec<Violation> = self
            .validator
            .iter_errors(doc)
            .take(MAX_VIOLATIONS)
            .map(|e| Violation {
                pointer: format!("{prefix}{}", e.instance_path().as_str()),
                detail: e.masked().to_string(),
            })
            .collect();
        if violations.is_empty() {
            // is_valid and iter_errors agree by contract; never answer "invalid"
            // with nothing to fix.
            return Ok(());
        }
        Err(violations)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn order_schema() -> EventSchema {
        EventSchema::compile(
            &json!({
                "type": "object",
                "required": ["id", "amount"],
                "properties": {
                    "id": {"type": "string"},
                    "amount": {"type": "integer", "minimum": 0},
                    "items": {"type": "array", "items": {"type": "object", "required": ["sku"]}}
                }
            }),
            "/schema",
        )
        .expect("a valid schema")
    }

    #[test]
    fn a_valid_payload_passes() {
        let s = order_schema();
        assert_eq!(
            s.check(&json!({"id": "o1", "amount": 5}), "/payload"),
            Ok(())
        );
    }

    #[test]
    fn violations_are_pointed_at_from_the_body_root() {
        let s = order_schema();
        let v = s
            .check(
                &json!({"id": 7, "amount": -1, "items": [{"sku": "a"}, {}]}),
                "/payload",
            )
            .unwrap_err();
        let pointers: Vec<&str> = v.iter().map(|v| v.pointer.as_str()).collect();
        assert!(pointers.contains(&"/payload/id"), "{v:?}");
        assert!(pointers.contains(&"/payload/amount"), "{v:?}");
        assert!(pointers.contains(&"/payload/items/1"), "{v:?}");
        // Masked: the payload's values are not echoed.
        assert!(v.iter().all(|v| !v.detail.contains("-1")), "{v:?}");
    }

    #[test]
    fn a_missing_property_points_at_its_object() {
        let v = order_schema()
            .check(&json!({"id": "o1"}), "/payload")
            .unwrap_err();
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].pointer, "/payload");
        assert!(v[0].detail.contains("amount"), "{v:?}");
    }

    #[test]
    fn violations_are_bounded() {
        let s = EventSchema::compile(
            &json!({"type": "object", "additionalProperties": {"type": "string"}}),
            "",
        )
        .unwrap();
        let doc: serde_json::Map<String, Value> =
            (0..100).map(|i| (format!("k{i}"), json!(i))).collect();
        let v = s.check(&Value::Object(doc), "/payload").unwrap_err();
        assert_eq!(v.len(), MAX_VIOLATIONS);
    }

    #[test]
    fn an_invalid_schema_is_refused_with_where() {
        let e = EventSchema::compile(&json!({"type": "integr"}), "/schema").unwrap_err();
        assert!(e.violations[0].pointer.starts_with("/schema"), "{e:?}");
        let e = EventSchema::compile(&json!({"minimum": "zero"}), "/schema").unwrap_err();
        assert!(!e.violations.is_empty());
        assert!(EventSchema::compile(&json!([1]), "/schema").is_err());
        assert!(EventSchema::compile(&json!(true), "/schema").is_ok());
    }

    #[test]
    fn remote_references_are_never_fetched() {
        let e = EventSchema::compile(
            &json!({"$ref": "https://example.com/order.json"}),
            "/schema",
        );
        assert!(e.is_err());
        let local = EventSchema::compile(
            &json!({"$defs": {"id": {"type": "string"}}, "properties": {"id": {"$ref": "#/$defs/id"}}}),
            "/schema",
        )
        .unwrap();
        assert!(local.check(&json!({"id": 1}), "/payload").is_err());
    }

    #[test]
    fn patterns_are_linear_time_and_formats_are_checked() {
        // A backreference needs a backtracking engine: refused at compile time.
        assert!(EventSchema::compile(&json!({"pattern": "(a)\\1"}), "/schema").is_err());
        let s = EventSchema::compile(
            &json!({"properties": {"at": {"type": "string", "format": "date-time"}}}),
            "",
        )
        .unwrap();
        assert!(s.check(&json!({"at": "yesterday"}), "/payload").is_err());
        assert!(s
            .check(&json!({"at": "2026-12-07T10:00:00Z"}), "/payload")
            .is_ok());
    }
}
