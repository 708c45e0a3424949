//! The Kubernetes API's own control calls under `{kube}/_sim/`: fault rules (the same rules as
//! ARM's, matched on `method`, `operation` such as `watch leases` or `patch
//! persistentvolumeclaims/status`, and `pathContains`), request counters, the access log (every
//! distinct verb × resource × namespace served, to check a Role against) and dropping every open
//! watch.

use super::KubeApi;
use crate::faults::{FaultAction, FaultRule};
use crate::http::{Request, Response};
use http::Method;
use serde_json::json;

pub fn handle(api: &KubeApi, req: &Request) -> Response {
    let bad = |m: String| Response::json(400, &json!({"error": m}));
    match (&req.method, req.path.trim_end_matches('/')) {
        (&Method::GET, "/_sim/faults") => Response::json(200, &json!(api.faults.list())),
        (&Method::POST, "/_sim/faults") => match serde_json::from_slice::<FaultRule>(&req.body) {
            Ok(rule) if matches!(rule.action, FaultAction::LroFail { .. }) => bad(
                "lroFail is an ARM fault; the Kubernetes API has no long-running operations".into(),
            ),
            Ok(rule) => Response::json(201, &json!(api.faults.add(rule))),
            Err(e) => bad(format!("not a fault rule: {e}")),
        },
        (&Method::DELETE, "/_sim/faults") => {
            api.faults.clear();
            Response::empty(204)
        }
        (&Method::DELETE, path) if path.starts_with("/_sim/faults/") => {
            match path["/_sim/faults/".len()..].parse::<u64>() {
                Ok(id) if api.faults.remove(id) => Response::empty(204),
                Ok(id) => Response::json(404, &json!({"error": format!("no fault rule {id}")})),
                Err(_) => bad("fault ids are numbers".into()),
            }
        }
        (&Method::GET, "/_sim/counters") => Response::json(200, &json!(api.counters.snapshot())),
        (&Method::DELETE, "/_sim/counters") => {
            api.counters.reset();
            Response::empty(204)
        }
        (&Method::GET, "/_sim/access") => Response::json(200, &json!(api.access.snapshot())),
        (&Method::DELETE, "/_sim/access") => {
            api.access.reset();
            Response::empty(204)
        }
        (&Method::DELETE, "/_sim/watches") => {
            let n = api.drop_all_watches();
            Response::json(200, &json!({"generation": n}))
        }
        _ => Response::json(
            404,
            &json!({"error": format!("no control call {} {}", req.method, req.path)}),
        ),
    }
}
