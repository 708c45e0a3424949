//! Label selectors (`=`, `==`, `!=`, `in`, `notin`, exists, `!` not exists) and field selectors
//! (`=`, `==`, `!=` on the fields each type supports), as kube-apiserver parses them.

use super::status::ApiError;
use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
enum LabelReq {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct LabelSelector(Vec<LabelReq>);

fn valid_key(k: &str) -> bool {
    let (prefix, name) = match k.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.'))
    });
    name_ok && prefix_ok
}

fn valid_value(v: &str) -> bool {
    v.is_empty()
        || (v.len() <= 63
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && v.starts_with(|c: char| c.is_ascii_alphanumeric())
            && v.ends_with(|c: char| c.is_ascii_alphanumeric()))
}

/// Splits on commas that are not inside parentheses.
fn split_top(s: &str) -> Vec<String> {
    let (mut out, mut cur, mut depth) = (Vec::new(), String::new(), 0);
    for c in s.chars() {
        match c {
            '(' => {
                depth += 1;
                cur.push(c)
            }
            ')' => {
                depth -= 1;
                cur.push(c)
            }
            ',' if depth == 0 => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out
}

impl LabelSelector {
    pub fn parse(s: &str) -> Result<LabelSelector, ApiError> {
        let bad =
            |why: String| ApiError::bad_request(format!("unable to parse requirement: {why}"));
        let mut reqs = Vec::new();
        for part in split_top(s)
            .iter()
            .map(|p| p.trim())
            .filter(|p| !p.is_empty())
        {
            let req = if let Some(key) = part.strip_prefix('!') {
                LabelReq::NotExists(key.trim().to_string())
            } else if let Some((k, v)) = part.split_once("!=") {
                LabelReq::NotEq(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = part.split_once("==") {
                LabelReq::Eq(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = part.split_once('=') {
                LabelReq::Eq(k.trim().into(), v.trim().into())
            } else if let Some((k, rest)) = split_set_op(part, " notin ") {
                LabelReq::NotIn(k, set_values(&rest).map_err(bad)?)
            } else if let Some((k, rest)) = split_set_op(part, " in ") {
                LabelReq::In(k, set_values(&rest).map_err(bad)?)
            } else {
                LabelReq::Exists(part.to_string())
            };
            let (key, values): (&str, Vec<&String>) = match &req {
                LabelReq::Eq(k, v) | LabelReq::NotEq(k, v) => (k, vec![v]),
                LabelReq::In(k, vs) | LabelReq::NotIn(k, vs) => (k, vs.iter().collect()),
                LabelReq::Exists(k) | LabelReq::NotExists(k) => (k, vec![]),
            };
            if !valid_key(key) {
                return Err(bad(format!("invalid label key \"{key}\"")));
            }
            if let Some(v) = values.iter().find(|v| !valid_value(v)) {
                return Err(bad(format!("invalid label value: \"{v}\"")));
            }
            reqs.push(req);
        }
        Ok(LabelSelector(reqs))
    }

    pub fn matches(&self, labels: &Value) -> bool {
        let get = |k: &str| labels.get(k).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            LabelReq::Eq(k, v) => get(k) == Some(v.as_str()),
            LabelReq::NotEq(k, v) => get(k) != Some(v.as_str()),
            LabelReq::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            LabelReq::NotIn(k, vs) => get(k).is_none_or(|x| !vs.iter().any(|v| v == x)),
            LabelReq::Exists(k) => get(k).is_some(),
            LabelReq::NotExists(k) => get(k).is_none(),
        })
    }
}

fn split_set_op(part: &str, op: &str) -> Option<(String, String)> {
    let (k, rest) = part.split_once(op)?;
    Some((k.trim().to_string(), rest.trim().to_string()))
}

fn set_values(rest: &str) -> Result<Vec<String>, String> {
    let inner = rest
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| format!("found '{rest}', expected: '('"))?;
    Ok(inner
        .split(',')
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect())
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    /// Parses against the fields `supported` (beyond metadata.name and metadata.namespace).
    pub fn parse(s: &str, kind: &str, supported: &[&str]) -> Result<FieldSelector, ApiError> {
        let mut reqs = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (field, eq, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, true, v)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: '{s}'; can't understand '{part}'"
                )));
            };
            let field = field.trim();
            if !["metadata.name", "metadata.namespace"].contains(&field)
                && !supported.contains(&field)
            {
                return Err(
                    ApiError::bad_request(format!("field label not supported: {field}"))
                        .with_kind(kind),
                );
            }
            reqs.push((field.to_string(), eq, value.trim().to_string()));
        }
        Ok(FieldSelector(reqs))
    }

    pub fn matches(&self, object: &Value) -> bool {
        self.0.iter().all(|(field, eq, value)| {
            let pointer = format!("/{}", field.replace('.', "/"));
            let actual = match object.pointer(&pointer) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Bool(b)) => b.to_string(),
                Some(Value::Number(n)) => n.to_string(),
                _ => String::new(),
            };
            (actual == *value) == *eq
        })
    }
}

impl ApiError {
    fn with_kind(mut self, kind: &str) -> ApiError {
        self.details = serde_json::json!({"kind": kind});
        self
    }
}

/// Whether `labels` meet a structured label selector (`matchLabels`, `matchExpressions` with
/// In, NotIn, Exists, DoesNotExist), as metav1.LabelSelectorAsSelector reads one; an empty
/// selector matches everything, an unknown operator nothing.
pub fn matches_structured(selector: &Value, labels: &Value) -> bool {
    let label = |k: &str| labels.get(k).and_then(Value::as_str);
    let plain = selector
        .get("matchLabels")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .all(|(k, v)| label(k) == v.as_str());
    let expressions = selector
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .all(|e| {
            let key = e.get("key").and_then(Value::as_str).unwrap_or_default();
            let values: Vec<&str> = e
                .get("values")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            match e.get("operator").and_then(Value::as_str) {
                Some("In") => label(key).is_some_and(|v| values.contains(&v)),
                Some("NotIn") => label(key).is_none_or(|v| !values.contains(&v)),
                Some("Exists") => label(key).is_some(),
                Some("DoesNotExist") => label(key).is_none(),
                _ => false,
            }
        });
    plain && expressions
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_selectors() {
        let labels =
            json!({"app": "db", "tier": "storage", "topology.kubernetes.io/zone": "westus2-1"});
        let m = |s: &str| LabelSelector::parse(s).expect(s).matches(&labels);
        assert!(m("app=db"));
        assert!(m("app==db,tier"));
        assert!(m("app!=web"));
        assert!(m("app in (db, cache)"));
        assert!(m("app notin (web)"));
        assert!(m("!missing"));
        assert!(m(
            "topology.kubernetes.io/zone in (westus2-1,westus2-2),tier=storage"
        ));
        assert!(!m("app=web"));
        assert!(!m("missing"));
        assert!(!m("!app"));
        assert!(!m("app notin (db)"));
        assert!(m(""));
        assert!(LabelSelector::parse("app in db").is_err());
        assert!(LabelSelector::parse("bad key=x").is_err());
        assert!(LabelSelector::parse("k=bad value").is_err());
    }

    #[test]
    fn field_selectors() {
        let pod = json!({"metadata": {"name": "p", "namespace": "ns"}, "spec": {"nodeName": "n1"}});
        let f = |s: &str| FieldSelector::parse(s, "Pod", &["spec.nodeName"]).expect(s);
        assert!(f("metadata.name=p,spec.nodeName==n1").matches(&pod));
        assert!(f("metadata.namespace!=other").matches(&pod));
        assert!(!f("spec.nodeName=n2").matches(&pod));
        let e = FieldSelector::parse("spec.volumeName=x", "PersistentVolumeClaim", &[])
            .expect_err("unsupported");
        assert_eq!(e.message, "field label not supported: spec.volumeName");
    }
}
