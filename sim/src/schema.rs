//! Validation against the official Azure API descriptions (vendored under `sim/specs/`).
//!
//! Requests: ARM rejects a body that does not deserialise into the operation's model; the simulator
//! does the same from the very files Azure's SDKs are generated from, so a client that sends an
//! undeclared or mistyped field learns it here instead of in production. Read-only properties are
//! ignored, as ARM does, because clients legitimately send back what they read.
//!
//! Responses: the simulator's answers are checked the same way, strictly (read-only properties
//! included, undeclared properties, wrong types and missing required fields reported), so that
//! what our clients are tested against is what Azure's specification says Azure sends.
//!
//! Several api-versions of one resource provider are vendored side by side (disks 2024-03-02 and
//! 2025-01-02, compute 2024-07-01 and 2025-04-01): a request or answer is checked against the
//! files of the api-version it names, as ARM hands each api-version to its own model.

use serde_json::Value;
use std::collections::{BTreeMap, HashMap};

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
    spec!("Microsoft.Compute/DiskRP/stable/2025-01-02/disk.json"),
    spec!("Microsoft.Compute/DiskRP/stable/2025-01-02/snapshot.json"),
    spec!("Microsoft.Compute/DiskRP/stable/2025-01-02/diskRPCommon.json"),
    spec!("Microsoft.Compute/ComputeRP/stable/2025-04-01/virtualMachine.json"),
    spec!("Microsoft.Compute/ComputeRP/stable/2025-04-01/virtualMachineScaleSet.json"),
    spec!("Microsoft.Compute/ComputeRP/stable/2025-04-01/computeRPCommon.json"),
    spec!("Microsoft.Compute/common-types/v1/common.json"),
    spec!("Microsoft.InstanceMetadataService/stable/2023-07-01/imds.json"),
];

/// The loaded specification documents, keyed by their path below `sim/specs/`.
pub struct Specs {
    docs: BTreeMap<String, Value>,
}

/// The api-version a request path names in its query (`?api-version=…`), if any.
pub fn api_version_of(path: &str) -> Option<&str> {
    let query = path.split_once('?')?.1;
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix("api-version="))
        .filter(|v| !v.is_empty())
}

/// Whether the document at `path` belongs to `api_version`: versioned documents live under
/// `…/stable/<api-version>/`; the others (common types, IMDS) belong to every version.
fn of_version(path: &str, api_version: Option<&str>) -> bool {
    let versioned = path.contains("/stable/") && !path.contains("InstanceMetadataService");
    match api_version {
        Some(v) if versioned => path.contains(&format!("/stable/{v}/")),
        _ => true,
    }
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

    /// The documents of `api_version` (every document when none is named), newest first.
    fn docs_of(&self, api_version: Option<&str>) -> impl Iterator<Item = (&String, &Value)> + '_ {
        let version = api_version.map(str::to_string);
        self.docs
            .iter()
            .rev()
            .filter(move |(path, _)| of_version(path, version.as_deref()))
    }

    /// Whether any vendored document describes this api-version.
    pub fn knows_version(&self, api_version: &str) -> bool {
        self.docs
            .keys()
            .any(|p| p.contains(&format!("/stable/{api_version}/")))
    }

    /// The body schema of the operation with this `operationId` at `api_version`, and the
    /// document it lives in.
    fn request_schema(&self, api_version: &str, operation_id: &str) -> Option<(&Value, String)> {
        for (path, doc) in self.docs_of(Some(api_version)) {
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

    /// Every problem with `body` as the request of `operation_id` at `api_version`, each naming
    /// the field in the dotted form ARM uses (`properties.diskSizeGB`).
    pub fn check_request(
        &self,
        api_version: &str,
        operation_id: &str,
        body: &Value,
    ) -> Vec<String> {
        let Some((schema, doc)) = self.request_schema(api_version, operation_id) else {
            panic!("no request body declared for {operation_id} at {api_version}");
        };
        let mut problems = Vec::new();
        self.check(body, schema, &doc, "", Mode::Request, &mut problems);
        problems
    }

    /// The operation a request path and method belong to: `(operationId, operation, its
    /// document)`, from the files of the api-version the path's query names (the newest that
    /// describes it when it names none; trailing `/` ignored). Path templates match
    /// case-insensitively, as ARM routes them.
    pub fn operation(&self, method: &str, path: &str) -> Option<(String, &Value, String)> {
        let version = api_version_of(path);
        let path = path
            .split('?')
            .next()
            .unwrap_or_default()
            .trim_end_matches('/');
        let want: Vec<&str> = path.split('/').collect();
        for (doc_path, doc) in self.docs_of(version) {
            let Some(paths) = doc.get("paths").and_then(Value::as_object) else {
                continue;
            };
            for (template, ops) in paths {
                let t: Vec<&str> = template.trim_end_matches('/').split('/').collect();
                let matches = t.len() == want.len()
                    && t.iter().zip(&want).all(|(t, w)| {
                        if t.starts_with('{') && t.ends_with('}') {
                            !w.is_empty()
                        } else {
                            t.eq_ignore_ascii_case(w)
                        }
                    });
                if !matches {
                    continue;
                }
                if let Some(op) = ops.get(method.to_ascii_lowercase()) {
                    let id = op
                        .get("operationId")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string();
                    return Some((id, op, doc_path.clone()));
                }
            }
        }
        None
    }

    /// Every problem with `body` as the answer `status` to `method path`: the schema the
    /// operation declares for that status (`default`, ARM's error shape, for an undeclared error
    /// status), checked strictly. A status the operation does not declare is a problem too.
    pub fn check_response(
        &self,
        method: &str,
        path: &str,
        status: u16,
        body: &Value,
    ) -> Vec<String> {
        let Some((id, op, doc)) = self.operation(method, path) else {
            return vec![format!(
                "no operation {method} {path} in the specifications"
            )];
        };
        let responses = op.get("responses").and_then(Value::as_object);
        let declared = responses.and_then(|r| {
            r.get(&status.to_string())
                .or_else(|| (status >= 400).then(|| r.get("default")).flatten())
        });
        let Some(declared) = declared else {
            let known: Vec<&String> = responses.map(|r| r.keys().collect()).unwrap_or_default();
            return vec![format!(
                "{id} declares no {status} response (it declares {known:?})"
            )];
        };
        let (declared, doc) = self.deref(declared, &doc);
        let Some(schema) = declared.get("schema") else {
            let empty = body.is_null()
                || body.as_object().is_some_and(|o| o.is_empty())
                || body.as_str().is_some_and(str::is_empty);
            return if empty {
                Vec::new()
            } else {
                vec![format!(
                    "{id} {status}: the specification declares no body for this answer"
                )]
            };
        };
        let mut problems = Vec::new();
        self.check(body, schema, &doc, "", Mode::Response, &mut problems);
        problems
    }

    /// Every problem with `body` as an instance of the named definition (e.g. `CloudError`),
    /// checked strictly (the newest file that defines it).
    pub fn check_definition(&self, name: &str, body: &Value) -> Vec<String> {
        let found = self.docs_of(None).find_map(|(path, doc)| {
            doc.pointer(&format!("/definitions/{name}"))
                .map(|d| (d, path.clone()))
        });
        let Some((schema, doc)) = found else {
            return vec![format!("no definition named {name} in the specifications")];
        };
        let mut problems = Vec::new();
        self.check(body, schema, &doc, "", Mode::Response, &mut problems);
        problems
    }

    /// The property names the named definition declares at `api_version` (its `allOf` parents'
    /// included); empty when the version does not define it.
    pub fn declared_properties(&self, api_version: &str, definition: &str) -> Vec<String> {
        let found = self.docs_of(Some(api_version)).find_map(|(path, doc)| {
            doc.pointer(&format!("/definitions/{definition}"))
                .map(|d| (d, path.clone()))
        });
        found
            .map(|(schema, doc)| self.properties(schema, &doc).props.into_keys().collect())
            .unwrap_or_default()
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

    fn check(
        &self,
        value: &Value,
        schema: &Value,
        doc: &str,
        at: &str,
        mode: Mode,
        out: &mut Vec<String>,
    ) {
        let (schema, doc) = self.deref(schema, doc);
        if mode == Mode::Request
            && schema.get("readOnly").and_then(Value::as_bool) == Some(true)
            && !at.is_empty()
        {
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
                    let excused = read_only && mode == Mode::Request;
                    if !obj.contains_key(r) && !excused {
                        out.push(format!("{}: required but missing", dotted(at, r)));
                    }
                }
                for (k, v) in obj {
                    if let Some((s, d)) = merged.props.get(k) {
                        self.check(v, s, d, &dotted(at, k), mode, out);
                    } else if let Some((a, d)) =
                        merged.additional.as_ref().filter(|(a, _)| a.is_object())
                    {
                        self.check(v, a, d, &dotted(at, k), mode, out);
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
                    self.check(v, &item_schema, &doc, &format!("{at}[{i}]"), mode, out);
                }
            }
            Some("string") => {
                let Some(s) = value.as_str() else {
                    out.push(format!("{name}: expected a string, got {value}"));
                    return;
                };
                if schema.get("format").and_then(Value::as_str) == Some("date-time")
                    && !is_date_time(s)
                {
                    out.push(format!("{name}: '{s}' is not an RFC 3339 date-time"));
                }
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

/// Requests skip read-only properties (ARM ignores them); responses are checked whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Request,
    Response,
}

/// `YYYY-MM-DDTHH:MM:SS` at least, as RFC 3339 starts.
fn is_date_time(s: &str) -> bool {
    let b = s.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| r.clone().all(|i| b.get(i).is_some_and(u8::is_ascii_digit));
    b.len() >= 19
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && matches!(b[10], b'T' | b't')
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
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
            specs.check_request("2024-03-02", "Disks_CreateOrUpdate", &body),
            Vec::<String>::new()
        );
    }

    #[test]
    fn names_the_field_that_is_wrong() {
        let specs = Specs::load();
        let body = json!({"location": "westus", "properties": {"creationData": {"createOption": "Sideways"},
            "diskSizeGB": "big", "colour": 1}});
        let problems = specs.check_request("2024-03-02", "Disks_CreateOrUpdate", &body);
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
        let missing = specs.check_request(
            "2025-01-02",
            "Disks_CreateOrUpdate",
            &json!({"properties": {}}),
        );
        assert!(
            missing
                .iter()
                .any(|p| p == "location: required but missing"),
            "{missing:?}"
        );
    }

    #[test]
    fn responses_are_checked_strictly() {
        let specs = Specs::load();
        let disk = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/disks/d?api-version=2024-03-02";
        let good = json!({"id": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/disks/d",
            "name": "d", "type": "Microsoft.Compute/disks", "location": "westus2",
            "managedBy": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm",
            "properties": {"creationData": {"createOption": "Empty"}, "diskSizeGB": 4,
                "provisioningState": "Succeeded", "timeCreated": "2026-11-29T10:00:00.0000000+00:00"}});
        assert_eq!(
            specs.check_response("GET", disk, 200, &good),
            Vec::<String>::new()
        );
        // What Azure would not send: a wrong type, an undeclared field, a bad date, no location.
        let mut bad = good.clone();
        bad["properties"]["diskSizeGB"] = json!("four");
        bad["properties"]["madeUp"] = json!(true);
        bad["properties"]["timeCreated"] = json!("yesterday");
        bad.as_object_mut().expect("object").remove("location");
        let problems = specs.check_response("GET", disk, 200, &bad);
        for expected in [
            "properties.diskSizeGB: expected an integer",
            "properties.madeUp: not a property",
            "properties.timeCreated: 'yesterday' is not an RFC 3339 date-time",
            "location: required but missing",
        ] {
            assert!(
                problems.iter().any(|p| p.starts_with(expected)),
                "{expected}: {problems:?}"
            );
        }
        // Read-only fields are checked in answers (a request would skip them).
        let mut ro = good.clone();
        ro["properties"]["provisioningState"] = json!(7);
        assert_eq!(specs.check_response("GET", disk, 200, &ro).len(), 1);
        // Errors take ARM's error shape; statuses the operation does not declare are reported.
        let err = json!({"error": {"code": "NotFound", "message": "gone"}});
        assert!(specs.check_definition("CloudError", &err).is_empty());
        assert!(!specs
            .check_definition("CloudError", &json!({"oops": 1}))
            .is_empty());
        assert!(specs.check_response("GET", disk, 202, &good)[0].contains("declares no 202"));
        let delete = specs.check_response("DELETE", disk, 204, &Value::Null);
        assert!(delete.is_empty(), "{delete:?}");
        assert!(!specs
            .check_response("PATCH", "/nowhere", 200, &good)
            .is_empty());
    }

    #[test]
    fn attach_detach_request_items_are_checked() {
        let specs = Specs::load();
        let ok = json!({"dataDisksToAttach": [{"diskId": "/x", "lun": 3, "caching": "ReadOnly"}]});
        assert!(specs
            .check_request("2024-07-01", "VirtualMachines_AttachDetachDataDisks", &ok)
            .is_empty());
        let bad = json!({"dataDisksToAttach": [{"lun": 3}]});
        assert_eq!(
            specs.check_request(
                "2025-04-01",
                "VirtualMachineScaleSetVMs_AttachDetachDataDisks",
                &bad
            ),
            vec!["dataDisksToAttach[0].diskId: required but missing".to_string()]
        );
    }

    #[test]
    fn each_api_version_is_checked_against_its_own_files() {
        let specs = Specs::load();
        assert!(specs.knows_version("2025-01-02") && specs.knows_version("2024-07-01"));
        assert!(!specs.knows_version("2023-01-02"));
        // availabilityPolicy is new in 2025-01-02: ARM's 2024-03-02 model has no such property.
        let body = json!({"location": "westus2", "properties": {"creationData": {"createOption": "Empty"},
            "diskSizeGB": 4, "availabilityPolicy": {"actionOnDiskDelay": "AutomaticReattach"}}});
        assert!(specs
            .check_request("2025-01-02", "Disks_CreateOrUpdate", &body)
            .is_empty());
        let old = specs.check_request("2024-03-02", "Disks_CreateOrUpdate", &body);
        assert!(
            old.iter()
                .any(|p| p.starts_with("properties.availabilityPolicy: not a property")),
            "{old:?}"
        );
        // Answers: the path's api-version picks the files.
        let disk = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/disks/d";
        let answer = json!({"location": "westus2", "properties": {"creationData": {"createOption": "Empty"},
            "availabilityPolicy": {"actionOnDiskDelay": "None"}}});
        let new = format!("{disk}?api-version=2025-01-02");
        assert!(specs.check_response("GET", &new, 200, &answer).is_empty());
        let old = format!("{disk}?api-version=2024-03-02");
        assert_eq!(specs.check_response("GET", &old, 200, &answer).len(), 1);
        assert!(specs
            .declared_properties("2025-01-02", "DiskProperties")
            .contains(&"availabilityPolicy".to_string()));
        assert!(!specs
            .declared_properties("2024-03-02", "DiskProperties")
            .contains(&"availabilityPolicy".to_string()));
        assert_eq!(api_version_of(&new), Some("2025-01-02"));
        assert_eq!(api_version_of(disk), None);
        assert_eq!(
            api_version_of("/x?monitor=true&api-version=2024-07-01"),
            Some("2024-07-01")
        );
    }
}
