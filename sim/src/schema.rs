//! Request validation against the official Azure API descriptions (vendored under `sim/specs/`).
//!
//! ARM rejects a body that does not deserialise into the operation's model; the simulator does the
//! same from the very files Azure's SDKs are generated from, so a client that sends an undeclared or
//! mistyped field learns it here instead of in production. Read-only properties are ignored, as ARM
//! does, because clients legitimately send back what they read.

use serde_json::Value;
use std::collections::HashMap;

macro_rules! spec {
    ($path:literal) => {
        ($path, include_str!(concat!("../specs/", $path)))
    };
}

const FILES: &[(&str, &str)] = &[
    spec!("Microsoft.Compute/DiskRP/stable/2024-03-02/disk.json"),
    spec!("Microsoft.Compute/DiskRP/stable/2024-03-02/snapshot.json"),
    spec!("Microsoft.Compute/DiskRP/stable/2024-03-02/diskRPCommon.json"),
    spec!("Microsoft.Compute/ComputeRP/stable/2024-07-01/virtualMachine.json"),
    spec!("Microsoft.Compute/ComputeRP/stable/2024-07-01/virtualMachineScaleSet.json"),
    spec!("Microsoft.Compute/ComputeRP/stable/2024-07-01/computeRPCommon.json"),
    spec!("Microsoft.Compute/common-types/v1/common.json"),
];

/// The loaded specification documents, keyed by their path below `sim/specs/`.
pub struct Specs {
    docs: HashMap<String, Value>,
}

impl Specs {
    pub fn load() -> Specs {
        let docs = FILES
            .iter()
            .map(|(path, text)| {
                let doc = serde_json::from_str(text).expect("vendored specification is valid JSON");
                (path.to_string(), doc)
            })
            .collect();
        Specs { docs }
    }

    /// The body schema of the operation with this `operationId`, and the document it lives in.
    fn request_schema(&self, operation_id: &str) -> Option<(&Value, String)> {
        for (path, doc) in &self.docs {
            let Some(paths) = doc.get("paths").and_then(Value::as_object) else {
                continue;
            };
            for ops in paths.values().filter_map(Value::as_object) {
                for op in ops.values() {
                    if op.get("operationId").and_then(Value::as_str) != Some(operation_id) {
                        continue;
                    }
                    let params = op.get("parameters").and_then(Value::as_array)?;
                    for p in params {
                        let (p, pdoc) = self.deref(p, path);
                        if p.get("in").and_then(Value::as_str) == Some("body") {
                            return Some((p.get("schema")?, pdoc));
                        }
                    }
                }
            }
        }
        None
    }

    fn resolve(&self, reference: &str, base: &str) -> (&Value, String) {
        let (file, pointer) = reference.split_once('#').unwrap_or((reference, ""));
        let doc_path = if file.is_empty() {
            base.to_string()
        } else {
            join(base, file)
        };
        let doc = self
            .docs
            .get(&doc_path)
            .unwrap_or_else(|| panic!("vendored specs lack {doc_path} (referenced from {base})"));
        let node = doc
            .pointer(pointer)
            .unwrap_or_else(|| panic!("vendored specs lack {reference} (from {base})"));
        (node, doc_path)
    }

    fn deref<'a>(&'a self, mut schema: &'a Value, doc: &str) -> (&'a Value, String) {
        let mut doc = doc.to_string();
        while let Some(r) = schema.get("$ref").and_then(Value::as_str) {
            let (s, d) = self.resolve(r, &doc);
            schema = s;
            doc = d;
        }
        (schema, doc)
    }

    /// Every problem with `body` as the request of `operation_id`, each naming the field in the
    /// dotted form ARM uses (`properties.diskSizeGB`).
    pub fn check_request(&self, operation_id: &str, body: &Value) -> Vec<String> {
        let Some((schema, doc)) = self.request_schema(operation_id) else {
            panic!("no request body declared for {operation_id}");
        };
        let mut problems = Vec::new();
        self.check(body, schema, &doc, "", &mut problems);
        problems
    }

    fn properties(&self, schema: &Value, doc: &str) -> Merged {
        let (schema, doc) = self.deref(schema, doc);
        let mut merged = Merged::default();
        if let Some(req) = schema.get("required").and_then(Value::as_array) {
            merged
                .required
                .extend(req.iter().filter_map(Value::as_str).map(str::to_string));
        }
        merged.additional = schema
            .get("additionalProperties")
            .cloned()
            .map(|a| (a, doc.clone()));
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            for (k, v) in props {
                merged.props.insert(k.clone(), (v.clone(), doc.clone()));
            }
        }
        for parent in schema
            .get("allOf")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let p = self.properties(parent, &doc);
            for (k, v) in p.props {
                merged.props.entry(k).or_insert(v);
            }
            merged.required.extend(p.required);
            if merged.additional.is_none() {
                merged.additional = p.additional;
            }
        }
        merged
    }

    fn check(&self, value: &Value, schema: &Value, doc: &str, at: &str, out: &mut Vec<String>) {
        let (schema, doc) = self.deref(schema, doc);
        if schema.get("readOnly").and_then(Value::as_bool) == Some(true) && !at.is_empty() {
            return;
        }
        let name = if at.is_empty() { "the body" } else { at };
        let ty = schema.get("type").and_then(Value::as_str).or_else(|| {
            (schema.get("properties").is_some() || schema.get("allOf").is_some())
                .then_some("object")
        });
        if value.is_null() {
            if schema.get("x-nullable").and_then(Value::as_bool) != Some(true) {
                out.push(format!(
                    "{name}: null where {} is expected",
                    ty.unwrap_or("a value")
                ));
            }
            return;
        }
        match ty {
            Some("object") => {
                let Some(obj) = value.as_object() else {
                    out.push(format!("{name}: expected an object"));
                    return;
                };
                let merged = self.properties(schema, &doc);
                for r in &merged.required {
                    let read_only = merged
                        .props
                        .get(r)
                        .map(|(s, d)| {
                            self.deref(s, d).0.get("readOnly") == Some(&Value::Bool(true))
                        })
                        .unwrap_or(false);
                    if !obj.contains_key(r) && !read_only {
                        out.push(format!("{}: required but missing", dotted(at, r)));
                    }
                }
                for (k, v) in obj {
                    if let Some((s, d)) = merged.props.get(k) {
                        self.check(v, s, d, &dotted(at, k), out);
                    } else if let Some((a, d)) =
                        merged.additional.as_ref().filter(|(a, _)| a.is_object())
                    {
                        self.check(v, a, d, &dotted(at, k), out);
                    } else if matches!(merged.additional, Some((Value::Bool(false), _)))
                        || (merged.additional.is_none() && !merged.props.is_empty())
                    {
                        out.push(format!(
                            "{}: not a property of this resource's model (see the API specification)",
                            dotted(at, k)
                        ));
                    }
                }
            }
            Some("array") => {
                let Some(items) = value.as_array() else {
                    out.push(format!("{name}: expected an array"));
                    return;
                };
                let item_schema = schema.get("items").cloned().unwrap_or(Value::Null);
                for (i, v) in items.iter().enumerate() {
                    self.check(v, &item_schema, &doc, &format!("{at}[{i}]"), out);
                }
            }
            Some("string") => {
                let Some(s) = value.as_str() else {
                    out.push(format!("{name}: expected a string, got {value}"));
                    return;
                };
                if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
                    let extensible = schema
                        .pointer("/x-ms-enum/modelAsString")
                        .and_then(Value::as_bool)
                        .unwrap_or(false);
                    // ARM matches enum values case-insensitively; extensible enums take new values.
                    let known = allowed
                        .iter()
                        .filter_map(Value::as_str)
                        .any(|a| a.eq_ignore_ascii_case(s));
                    if !known && !extensible {
                        let list: Vec<_> = allowed.iter().filter_map(Value::as_str).collect();
                        out.push(format!("{name}: '{s}' is not one of {}", list.join(", ")));
                    }
                }
            }
            Some("integer") => {
                if !(value.is_i64() || value.is_u64()) {
                    out.push(format!("{name}: expected an integer, got {value}"));
                } else if schema.get("format").and_then(Value::as_str) == Some("int32")
                    && value.as_i64().and_then(|v| i32::try_from(v).ok()).is_none()
                {
                    out.push(format!("{name}: {value} does not fit a 32-bit integer"));
                }
            }
            Some("number") if !value.is_number() => {
                out.push(format!("{name}: expected a number, got {value}"));
            }
            Some("boolean") if !value.is_boolean() => {
                out.push(format!("{name}: expected true or false, got {value}"));
            }
            _ => {}
        }
    }
}

#[derive(Default)]
struct Merged {
    props: HashMap<String, (Value, String)>,
    required: Vec<String>,
    additional: Option<(Value, String)>,
}

fn dotted(at: &str, key: &str) -> String {
    if at.is_empty() {
        key.to_string()
    } else {
        format!("{at}.{key}")
    }
}

/// `base`'s directory joined with a relative `file`, with `..` folded, as `$ref`s are written.
fn join(base: &str, file: &str) -> String {
    let mut parts: Vec<&str> = base.split('/').collect();
    parts.pop();
    for seg in file.split('/') {
        match seg {
            "." | "" => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    parts.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn accepts_official_minimal_disk_and_ignores_read_only_fields() {
        let specs = Specs::load();
        let body = json!({"location": "westus", "properties": {"creationData": {"createOption": "Empty"},
            "diskSizeGB": 200, "provisioningState": "Succeeded"}, "sku": {"name": "Premium_LRS"}});
        assert_eq!(
            specs.check_request("Disks_CreateOrUpdate", &body),
            Vec::<String>::new()
        );
    }

    #[test]
    fn names_the_field_that_is_wrong() {
        let specs = Specs::load();
        let body = json!({"location": "westus", "properties": {"creationData": {"createOption": "Sideways"},
            "diskSizeGB": "big", "colour": 1}});
        let problems = specs.check_request("Disks_CreateOrUpdate", &body);
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("properties.diskSizeGB: expected an integer")),
            "{problems:?}"
        );
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("properties.colour: not a property")),
            "{problems:?}"
        );
        // createOption is an extensible enum: new values pass the schema and meet the handler.
        assert!(
            !problems.iter().any(|p| p.contains("createOption")),
            "{problems:?}"
        );
        let missing = specs.check_request("Disks_CreateOrUpdate", &json!({"properties": {}}));
        assert!(
            missing
                .iter()
                .any(|p| p == "location: required but missing"),
            "{missing:?}"
        );
    }

    #[test]
    fn attach_detach_request_items_are_checked() {
        let specs = Specs::load();
        let ok = json!({"dataDisksToAttach": [{"diskId": "/x", "lun": 3, "caching": "ReadOnly"}]});
        assert!(specs
            .check_request("VirtualMachines_AttachDetachDataDisks", &ok)
            .is_empty());
        let bad = json!({"dataDisksToAttach": [{"lun": 3}]});
        assert_eq!(
            specs.check_request("VirtualMachineScaleSetVMs_AttachDetachDataDisks", &bad),
            vec!["dataDisksToAttach[0].diskId: required but missing".to_string()]
        );
    }
}
