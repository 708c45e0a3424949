//! The three patch formats: JSON merge patch (RFC 7386), JSON patch (RFC 6902, `test` included)
//! and Kubernetes' strategic merge patch (merge semantics, lists replaced except those Kubernetes
//! merges by key for these types, `$patch` directives).

use super::resources::merge_key;
use serde_json::{Map, Value};

/// RFC 7386: objects merge recursively, `null` deletes, everything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            if let Value::Object(t) = target {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// RFC 6902. Errors say which operation failed and why.
pub fn json_patch(target: &mut Value, patch: &Value) -> Result<(), String> {
    let ops = patch
        .as_array()
        .ok_or("a JSON patch must be an array of operations")?;
    for (i, op) in ops.iter().enumerate() {
        let name = op
            .get("op")
            .and_then(Value::as_str)
            .ok_or(format!("operation {i} has no \"op\""))?;
        let path = op
            .get("path")
            .and_then(Value::as_str)
            .ok_or(format!("operation {i} has no \"path\""))?;
        let value = || {
            op.get("value")
                .cloned()
                .ok_or(format!("operation {i} ({name}) has no \"value\""))
        };
        let from = || {
            op.get("from")
                .and_then(Value::as_str)
                .ok_or(format!("operation {i} ({name}) has no \"from\""))
        };
        match name {
            "add" => add(target, path, value()?)?,
            "remove" => {
                remove(target, path)?;
            }
            "replace" => {
                remove(target, path)?;
                add(target, path, value()?)?;
            }
            "move" => {
                let v = remove(target, from()?)?;
                add(target, path, v)?;
            }
            "copy" => {
                let v = target
                    .pointer(from()?)
                    .cloned()
                    .ok_or(format!("copy from a path that does not exist: {}", from()?))?;
                add(target, path, v)?;
            }
            "test" => {
                let want = value()?;
                // As in kube-apiserver's JSON patch library, a missing value tests equal to null.
                let got = target
                    .pointer(path)
                    .or(Some(&Value::Null).filter(|_| want.is_null()));
                if got != Some(&want) {
                    return Err(format!(
                        "testing value {path} failed: expected {want}, found {}",
                        got.map(Value::to_string)
                            .unwrap_or_else(|| "nothing".into())
                    ));
                }
            }
            other => return Err(format!("unknown JSON patch operation {other:?}")),
        }
    }
    Ok(())
}

fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

fn parent_and_last(path: &str) -> Result<(String, String), String> {
    if path.is_empty() {
        return Err("the whole document cannot be patched".into());
    }
    let (parent, last) = path
        .rsplit_once('/')
        .ok_or(format!("{path:?} is not a JSON pointer"))?;
    Ok((parent.to_string(), unescape(last)))
}

fn add(target: &mut Value, path: &str, value: Value) -> Result<(), String> {
    let (parent, last) = parent_and_last(path)?;
    match target.pointer_mut(&parent) {
        Some(Value::Object(m)) => {
            m.insert(last, value);
            Ok(())
        }
        Some(Value::Array(a)) => {
            let idx = if last == "-" {
                a.len()
            } else {
                last.parse::<usize>()
                    .map_err(|_| format!("{path}: {last:?} is not an index"))?
            };
            if idx > a.len() {
                return Err(format!("{path}: index {idx} is out of bounds"));
            }
            a.insert(idx, value);
            Ok(())
        }
        _ => Err(format!("add to a path that does not exist: {path}")),
    }
}

fn remove(target: &mut Value, path: &str) -> Result<Value, String> {
    let (parent, last) = parent_and_last(path)?;
    match target.pointer_mut(&parent) {
        Some(Value::Object(m)) => m
            .remove(&last)
            .ok_or(format!("remove a path that does not exist: {path}")),
        Some(Value::Array(a)) => {
            let idx = last
                .parse::<usize>()
                .map_err(|_| format!("{path}: {last:?} is not an index"))?;
            if idx >= a.len() {
                return Err(format!("{path}: index {idx} is out of bounds"));
            }
            Ok(a.remove(idx))
        }
        _ => Err(format!("remove a path that does not exist: {path}")),
    }
}

/// Strategic merge patch of `patch` into `target`; `path` is the dotted field path of `target`
/// (list items are `*`), which decides how lists merge.
pub fn strategic_merge(target: &mut Value, patch: &Value, path: &str) -> Result<(), String> {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return Ok(());
    };
    if p.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut replaced = patch.clone();
        if let Some(m) = replaced.as_object_mut() {
            m.remove("$patch");
        }
        *target = replaced;
        return Ok(());
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(t) = target else {
        return Ok(());
    };
    for (k, v) in p {
        if k == "$patch" || k == "$retainKeys" || k.starts_with("$setElementOrder/") {
            continue;
        }
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            let remove: Vec<&Value> = v.as_array().map(|a| a.iter().collect()).unwrap_or_default();
            if let Some(Value::Array(list)) = t.get_mut(field) {
                list.retain(|x| !remove.contains(&x));
            }
            continue;
        }
        if k.starts_with('$') {
            return Err(format!("unknown strategic merge directive {k}"));
        }
        let child = if path.is_empty() {
            k.clone()
        } else {
            format!("{path}.{k}")
        };
        if v.is_null() {
            t.remove(k);
            continue;
        }
        match (v, merge_key(&child)) {
            (Value::Array(items), Some(key)) => {
                let current = t.entry(k.clone()).or_insert(Value::Array(Vec::new()));
                if !current.is_array() {
                    *current = Value::Array(Vec::new());
                }
                if let Value::Array(list) = current {
                    merge_list(list, items, key, &format!("{child}.*"))?;
                }
            }
            (Value::Object(_), _) => {
                strategic_merge(t.entry(k.clone()).or_insert(Value::Null), v, &child)?;
            }
            _ => {
                t.insert(k.clone(), v.clone());
            }
        }
    }
    Ok(())
}

fn merge_list(
    list: &mut Vec<Value>,
    items: &[Value],
    key: Option<&str>,
    item_path: &str,
) -> Result<(), String> {
    match key {
        // A set of scalars (finalizers): union, keeping order.
        None => {
            for item in items {
                if !list.contains(item) {
                    list.push(item.clone());
                }
            }
        }
        Some(key) => {
            for item in items {
                let k = item.get(key).cloned().ok_or(format!(
                    "an item of {} lacks its merge key {key:?}",
                    item_path.trim_end_matches(".*")
                ))?;
                let pos = list.iter().position(|x| x.get(key) == Some(&k));
                let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
                match (pos, delete) {
                    (Some(i), true) => {
                        list.remove(i);
                    }
                    (None, true) => {}
                    (Some(i), false) => strategic_merge(&mut list[i], item, item_path)?,
                    (None, false) => {
                        let mut fresh = Value::Null;
                        strategic_merge(&mut fresh, item, item_path)?;
                        list.push(fresh);
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_rfc7386_examples() {
        let mut t = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut t, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(t, json!({"a": "z", "c": {"d": "e"}}));
        let mut t = json!({"a": ["b"]});
        merge_patch(&mut t, &json!({"a": ["c"]}));
        assert_eq!(t, json!({"a": ["c"]}));
    }

    #[test]
    fn json_patch_operations_and_test() {
        let mut t = json!({"metadata": {"labels": {"a/b": "1"}, "finalizers": ["x"]}});
        json_patch(
            &mut t,
            &json!([
                {"op": "test", "path": "/metadata/labels/a~1b", "value": "1"},
                {"op": "add", "path": "/metadata/finalizers/-", "value": "y"},
                {"op": "replace", "path": "/metadata/labels/a~1b", "value": "2"},
                {"op": "copy", "from": "/metadata/labels", "path": "/metadata/annotations"},
                {"op": "move", "from": "/metadata/finalizers/0", "path": "/metadata/first"},
                {"op": "remove", "path": "/metadata/finalizers/0"}
            ]),
        )
        .expect("applies");
        assert_eq!(
            t,
            json!({"metadata": {"labels": {"a/b": "2"}, "annotations": {"a/b": "2"}, "finalizers": [], "first": "x"}})
        );
        let e = json_patch(
            &mut t,
            &json!([{"op": "test", "path": "/metadata/first", "value": "no"}]),
        )
        .expect_err("test fails");
        assert!(e.contains("testing value /metadata/first failed"), "{e}");
        assert!(json_patch(&mut t, &json!([{"op": "remove", "path": "/nope"}])).is_err());
        json_patch(
            &mut t,
            &json!([{"op": "test", "path": "/metadata/missing", "value": null}]),
        )
        .expect("missing equals null");
    }

    #[test]
    fn strategic_merge_by_key_and_sets() {
        let mut t = json!({
            "metadata": {"finalizers": ["a"], "labels": {"x": "1"}},
            "spec": {"accessModes": ["ReadWriteOnce"]},
            "status": {"conditions": [{"type": "Resizing", "status": "True"}, {"type": "Other", "status": "False"}]}
        });
        strategic_merge(
            &mut t,
            &json!({
                "metadata": {"finalizers": ["b", "a"], "labels": {"x": null, "y": "2"}},
                "spec": {"accessModes": ["ReadWriteMany"]},
                "status": {"conditions": [{"type": "Resizing", "status": "False"}, {"type": "Other", "$patch": "delete"}, {"type": "New", "status": "True"}]}
            }),
            "",
        )
        .expect("merges");
        assert_eq!(t["metadata"]["finalizers"], json!(["a", "b"]));
        assert_eq!(t["metadata"]["labels"], json!({"y": "2"}));
        assert_eq!(
            t["spec"]["accessModes"],
            json!(["ReadWriteMany"]),
            "plain lists are replaced"
        );
        assert_eq!(
            t["status"]["conditions"],
            json!([{"type": "Resizing", "status": "False"}, {"type": "New", "status": "True"}])
        );
        let mut m = t["metadata"].clone();
        strategic_merge(
            &mut m,
            &json!({"$deleteFromPrimitiveList/finalizers": ["a"]}),
            "metadata",
        )
        .expect("ok");
        assert_eq!(m["finalizers"], json!(["b"]));
        assert!(strategic_merge(&mut t, &json!({"$bogus": 1}), "").is_err());
    }
}
