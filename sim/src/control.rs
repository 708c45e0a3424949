//! The simulator's own control API under `{arm}/_sim/`: fault rules, call counters, throttling
//! budgets, workload-identity assertions, the journal of ARM requests and a dump of the state.
//! Documented in `sim/README.md`.

use crate::faults::FaultRule;
use crate::http::{Outcome, Request, Response};
use crate::simulator::Simulator;
use crate::world::Throttle;
use serde_json::json;
use std::sync::Arc;

fn bad(message: String) -> Response {
    Response::json(
        400,
        &json!({"error": {"code": "InvalidRequest", "message": message}}),
    )
}

pub async fn handle(sim: Arc<Simulator>, req: Request) -> Outcome {
    serve(&sim, &req).into()
}

fn serve(sim: &Simulator, req: &Request) -> Response {
    let path = req.path.trim_end_matches('/');
    let rest = path.strip_prefix("/_sim").unwrap_or(path);
    match (req.method.as_str(), rest) {
        ("GET", "/state") => {
            let state = sim.lock();
            let mut dump = serde_json::to_value(&*state).unwrap_or_default();
            if let Some(o) = dump.as_object_mut() {
                o.remove("signingKey");
            }
            Response::json(200, &dump)
        }
        ("GET", "/requests") => {
            Response::json(200, &json!(sim.journal.snapshot(req.query("pathContains"))))
        }
        ("DELETE", "/requests") => {
            sim.journal.clear();
            Response::empty(204)
        }
        ("GET", "/counters") => Response::json(200, &json!(sim.counters.snapshot())),
        ("DELETE", "/counters") => {
            sim.counters.reset();
            Response::empty(204)
        }
        ("GET", "/faults") => Response::json(200, &json!(sim.faults.list())),
        ("POST", "/faults") => match serde_json::from_slice::<FaultRule>(&req.body) {
            Ok(rule) => Response::json(201, &json!(sim.faults.add(rule))),
            Err(e) => bad(format!("not a fault rule: {e}")),
        },
        ("DELETE", "/faults") => {
            sim.faults.clear();
            Response::empty(204)
        }
        ("GET", "/throttle") => Response::json(200, &json!(sim.throttle.budget())),
        ("PUT", "/throttle") => match serde_json::from_slice::<Throttle>(&req.body) {
            Ok(t) => {
                sim.throttle.set(t.clone());
                Response::json(200, &json!(t))
            }
            Err(e) => bad(format!("not a throttle budget: {e}")),
        },
        ("GET", "/timing") => Response::json(200, &json!(sim.timing())),
        ("PUT", "/timing") => match serde_json::from_slice::<crate::simulator::Timing>(&req.body) {
            Ok(t) => match t.check() {
                Ok(()) => {
                    sim.set_timing(t);
                    Response::json(200, &json!(t))
                }
                Err(e) => bad(e),
            },
            Err(e) => bad(format!(
                "not a timing (vmOpMs and diskOpMs, milliseconds; vmOpSigma and diskOpSigma, optional): {e}"
            )),
        },
        ("POST", "/federated-token") => {
            let ttl = req
                .query("ttlSecs")
                .and_then(|v| v.parse::<i64>().ok())
                .unwrap_or(3600);
            match crate::entra::federated_assertion(sim, ttl) {
                Some(t) => Response::json(200, &json!({"token": t})),
                None => bad("the world has no federated credential".into()),
            }
        }
        (m, r) if r.starts_with("/faults/") && m == "DELETE" => {
            match r["/faults/".len()..].parse::<u64>() {
                Ok(id) if sim.faults.remove(id) => Response::empty(204),
                Ok(id) => Response::json(
                    404,
                    &json!({"error": {"code": "NotFound", "message": format!("no fault rule {id}")}}),
                ),
                Err(_) => bad(format!(
                    "'{}' is not a fault rule id",
                    &r["/faults/".len()..]
                )),
            }
        }
        _ => Response::json(
            404,
            &json!({"error": {"code": "NotFound", "message": format!("no control endpoint {} {path}", req.method)}}),
        ),
    }
}
