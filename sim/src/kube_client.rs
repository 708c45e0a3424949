//! A small blocking client of the simulated Kubernetes API, for programs that play the cluster's
//! other parts around the real binaries (the demo, system tests): create objects from manifests,
//! read, patch, delete, and wait for a condition.

use crate::kube::resources;
use serde_json::Value;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum KubeCallError {
    #[error("{method} {path}: {status} {message}")]
    Refused {
        method: String,
        path: String,
        status: u16,
        message: String,
    },
    #[error("{0}: the Kubernetes API did not answer: {1}")]
    Unreachable(String, String),
    #[error("{0} is not a kind this API serves (apiVersion {1})")]
    UnknownKind(String, String),
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(Duration, String),
}

/// What this client sends as User-Agent, so that its requests can be told apart from those of
/// the programs under test in the access log.
pub const USER_AGENT: &str = "flexdisk-sim-kube-client";

pub struct KubeClient {
    base: String,
    http: reqwest::blocking::Client,
    /// For watches: no overall deadline (the server ends them with `timeoutSeconds`).
    streams: reqwest::blocking::Client,
}

impl KubeClient {
    pub fn new(base: &str) -> KubeClient {
        KubeClient {
            base: base.trim_end_matches('/').to_string(),
            http: reqwest::blocking::Client::builder()
                .user_agent(USER_AGENT)
                .build()
                .unwrap_or_default(),
            streams: reqwest::blocking::Client::builder()
                .user_agent(USER_AGENT)
                .timeout(None)
                .build()
                .unwrap_or_default(),
        }
    }

    /// The collection path of an object (`/api/v1/namespaces/default/persistentvolumeclaims`),
    /// from its apiVersion, kind and namespace (`default` when a namespaced object has none).
    pub fn collection_of(obj: &Value) -> Result<String, KubeCallError> {
        let api_version = obj["apiVersion"].as_str().unwrap_or_default();
        let kind = obj["kind"].as_str().unwrap_or_default();
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let rt = resources::TYPES
            .iter()
            .find(|t| t.group == group && t.version == version && t.kind == kind)
            .ok_or_else(|| KubeCallError::UnknownKind(kind.into(), api_version.into()))?;
        let prefix = if group.is_empty() {
            format!("/api/{version}")
        } else {
            format!("/apis/{group}/{version}")
        };
        Ok(if rt.namespaced {
            let ns = obj["metadata"]["namespace"].as_str().unwrap_or("default");
            format!("{prefix}/namespaces/{ns}/{}", rt.plural)
        } else {
            format!("{prefix}/{}", rt.plural)
        })
    }

    /// The object's own path.
    pub fn path_of(obj: &Value) -> Result<String, KubeCallError> {
        Ok(format!(
            "{}/{}",
            Self::collection_of(obj)?,
            obj["metadata"]["name"].as_str().unwrap_or_default()
        ))
    }

    pub fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), KubeCallError> {
        let mut r = self.http.request(
            method.parse().unwrap_or(reqwest::Method::GET),
            format!("{}{path}", self.base),
        );
        if let Some(b) = body {
            let content_type = if method == "PATCH" {
                "application/merge-patch+json"
            } else {
                "application/json"
            };
            r = r.header("content-type", content_type).body(b.to_string());
        }
        let rsp = r
            .send()
            .map_err(|e| KubeCallError::Unreachable(format!("{method} {path}"), e.to_string()))?;
        let status = rsp.status().as_u16();
        Ok((status, rsp.json().unwrap_or(Value::Null)))
    }

    fn expect(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        ok: &[u16],
    ) -> Result<Value, KubeCallError> {
        let (status, v) = self.call(method, path, body)?;
        if ok.contains(&status) {
            Ok(v)
        } else {
            Err(KubeCallError::Refused {
                method: method.into(),
                path: path.into(),
                status,
                message: v["message"].as_str().unwrap_or_default().to_string(),
            })
        }
    }

    pub fn create(&self, obj: &Value) -> Result<Value, KubeCallError> {
        self.expect("POST", &Self::collection_of(obj)?, Some(obj), &[200, 201])
    }

    pub fn get(&self, path: &str) -> Result<Option<Value>, KubeCallError> {
        let (status, v) = self.call("GET", path, None)?;
        match status {
            200 => Ok(Some(v)),
            404 => Ok(None),
            _ => Err(KubeCallError::Refused {
                method: "GET".into(),
                path: path.into(),
                status,
                message: v["message"].as_str().unwrap_or_default().to_string(),
            }),
        }
    }

    /// The items of a list.
    pub fn list(&self, path: &str) -> Result<Vec<Value>, KubeCallError> {
        let v = self.expect("GET", path, None, &[200])?;
        Ok(v["items"].as_array().cloned().unwrap_or_default())
    }

    pub fn merge_patch(&self, path: &str, patch: &Value) -> Result<Value, KubeCallError> {
        self.expect("PATCH", path, Some(patch), &[200])
    }

    /// Deletes; already gone is fine.
    pub fn delete(&self, path: &str) -> Result<(), KubeCallError> {
        self.expect("DELETE", path, None, &[200, 202, 404])
            .map(|_| ())
    }

    /// Follows one watch of a collection (`path` without query) for at most `timeout_secs`, calling
    /// `event` with each event (`{"type", "object"}`) as it arrives; returns when the server ends
    /// the stream or `event` answers false. Without a resourceVersion the server first sends every
    /// existing object as ADDED, as kube-apiserver does.
    pub fn watch(
        &self,
        path: &str,
        timeout_secs: u32,
        mut event: impl FnMut(Value) -> bool,
    ) -> Result<(), KubeCallError> {
        use std::io::BufRead;
        let what = format!("watch {path}");
        let rsp = self
            .streams
            .get(format!(
                "{}{path}?watch=true&timeoutSeconds={timeout_secs}",
                self.base
            ))
            .send()
            .map_err(|e| KubeCallError::Unreachable(what.clone(), e.to_string()))?;
        let status = rsp.status().as_u16();
        if status != 200 {
            return Err(KubeCallError::Refused {
                method: "GET".into(),
                path: path.into(),
                status,
                message: "watch refused".into(),
            });
        }
        for line in std::io::BufReader::new(rsp).lines() {
            let line = line.map_err(|e| KubeCallError::Unreachable(what.clone(), e.to_string()))?;
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                if !event(v) {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Polls `path` until `done` holds for the object (`None`: it does not exist).
    pub fn wait_for(
        &self,
        path: &str,
        what: &str,
        timeout: Duration,
        done: impl Fn(Option<&Value>) -> bool,
    ) -> Result<Option<Value>, KubeCallError> {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.get(path)?;
            if done(v.as_ref()) {
                return Ok(v);
            }
            if Instant::now() > deadline {
                return Err(KubeCallError::Timeout(timeout, what.to_string()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_from_objects() {
        let pvc =
            json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "d"}});
        assert_eq!(
            KubeClient::path_of(&pvc).expect("known"),
            "/api/v1/namespaces/default/persistentvolumeclaims/d"
        );
        let sc = json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "c"}});
        assert_eq!(
            KubeClient::path_of(&sc).expect("known"),
            "/apis/storage.k8s.io/v1/storageclasses/c"
        );
        let ds = json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "x"}});
        assert!(matches!(
            KubeClient::path_of(&ds),
            Err(KubeCallError::UnknownKind(..))
        ));
    }
}
