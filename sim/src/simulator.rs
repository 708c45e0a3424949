//! The simulator's shared core: world, state, node backend and the services' common plumbing.

use crate::faults::{Counters, Faults};
use crate::model::ErrorBody;
use crate::node::NodeBackend;
use crate::schema::Specs;
use crate::store::{State, Store, StoreError};
use crate::throttle::Throttler;
use crate::tokens::Signer;
use crate::world::World;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rand::RngCore;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

/// How long long-running operations take: the median, and how widely each operation's time is
/// spread around it (the σ of a log-normal; 0: every operation takes the median).
///
/// Azure's own are spread wide with a long tail: attach ~10 s, detach ~16 s, disk create ~2.5 s,
/// delete ~5 s (kubernetes-sigs/azuredisk-csi-driver#473), "around 15 s" for attach/detach
/// (kubernetes-sigs/cloud-provider-azure#78), and under load 5.5 % of attach/detach operations
/// over 60 s and 0.8 % over 120 s (Azure/aks-engine#2888). A median of 12 s with σ = 1 gives
/// 5.4 % over 60 s and 1.1 % over 120 s.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct Timing {
    #[serde(rename = "vmOpMs", with = "millis")]
    pub vm_op: Duration,
    #[serde(rename = "diskOpMs", with = "millis")]
    pub disk_op: Duration,
    #[serde(rename = "vmOpSigma", default)]
    pub vm_op_sigma: f64,
    #[serde(rename = "diskOpSigma", default)]
    pub disk_op_sigma: f64,
}

impl Timing {
    /// Every operation takes exactly these times.
    pub fn fixed(vm_op: Duration, disk_op: Duration) -> Timing {
        Timing {
            vm_op,
            disk_op,
            vm_op_sigma: 0.0,
            disk_op_sigma: 0.0,
        }
    }

    /// How long the next VM operation takes.
    pub fn draw_vm_op(&self) -> Duration {
        spread(self.vm_op, self.vm_op_sigma)
    }

    /// How long the next disk or snapshot operation takes.
    pub fn draw_disk_op(&self) -> Duration {
        spread(self.disk_op, self.disk_op_sigma)
    }

    /// Refused unless each σ is a finite number from 0 to 3 (beyond, the tail is no longer
    /// anything Azure shows).
    pub fn check(&self) -> Result<(), String> {
        for (what, sigma) in [
            ("vmOpSigma", self.vm_op_sigma),
            ("diskOpSigma", self.disk_op_sigma),
        ] {
            if !(0.0..=3.0).contains(&sigma) {
                return Err(format!("{what} {sigma} is not from 0 to 3"));
            }
        }
        Ok(())
    }
}

/// `median` × e^(σ·z), z standard normal (Box–Muller).
fn spread(median: Duration, sigma: f64) -> Duration {
    if sigma == 0.0 {
        return median;
    }
    use rand::Rng;
    let mut rng = rand::thread_rng();
    let u1: f64 = rng.gen_range(f64::EPSILON..1.0);
    let u2: f64 = rng.gen_range(0.0..1.0);
    let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
    median.mul_f64((sigma * z).exp())
}

mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

/// Base URLs the simulator answers on, known once its listeners are bound.
#[derive(Debug, Clone)]
pub struct Urls {
    pub arm: String,
    pub login: String,
}

pub struct Simulator {
    pub world: World,
    pub store: Store,
    state: Mutex<State>,
    pub nodes: NodeBackend,
    pub specs: Specs,
    pub faults: Faults,
    pub counters: Counters,
    /// The ARM requests answered (`/_sim/requests`).
    pub journal: crate::journal::Journal,
    pub throttle: Throttler,
    timing: Mutex<Timing>,
    pub signer: Signer,
    pub urls: OnceLock<Urls>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("node backend: {0}")]
    Node(#[from] crate::node::NodeError),
}

impl Simulator {
    /// Opens (or creates) the state under the store, and brings every node's devices back.
    pub fn open(world: World, store: Store, timing: Timing) -> Result<Simulator, StartError> {
        let mut state = store.load()?.unwrap_or_default();
        if state.signing_key.is_empty() {
            let mut key = [0u8; 32];
            rand::thread_rng().fill_bytes(&mut key);
            state.signing_key = STANDARD.encode(key);
        }
        if let Some(secret) = &world.client_secret {
            state.client_secret = secret.clone();
        } else if state.client_secret.is_empty() {
            let mut raw = [0u8; 24];
            rand::thread_rng().fill_bytes(&mut raw);
            state.client_secret =
                format!("sim~{}", STANDARD.encode(raw).replace(['+', '/', '='], "x"));
        }
        let key = STANDARD.decode(&state.signing_key).unwrap_or_default();
        let nodes = NodeBackend::open(&store.dir().join("bus"));
        crate::inventory::reconcile_vms(&world, &mut state);
        let sim = Simulator {
            throttle: Throttler::new(world.throttle.clone()),
            world,
            store,
            state: Mutex::new(state),
            nodes,
            specs: Specs::load(),
            faults: Faults::default(),
            counters: Counters::default(),
            journal: Default::default(),
            timing: Mutex::new(timing),
            signer: Signer::new(key),
            urls: OnceLock::new(),
        };
        crate::inventory::restore_devices(&sim)?;
        sim.save(&sim.lock())?;
        Ok(sim)
    }

    /// How long operations begun from now take.
    pub fn timing(&self) -> Timing {
        *self.timing.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes how long operations begun from now take (those in progress keep their end).
    pub fn set_timing(&self, t: Timing) {
        *self.timing.lock().unwrap_or_else(|e| e.into_inner()) = t;
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn save(&self, state: &State) -> Result<(), StoreError> {
        self.store.save(state)
    }

    /// Saves after a change; a failure to persist is the simulator's own 500.
    pub fn commit(&self, state: &State) -> Result<(), ErrorBody> {
        self.save(state).map_err(|e| ErrorBody {
            status: 500,
            code: "InternalServerError".into(),
            message: format!("the simulator could not persist its state: {e}"),
            target: None,
        })
    }

    pub fn arm_url(&self) -> &str {
        self.urls
            .get()
            .map(|u| u.arm.as_str())
            .unwrap_or("http://127.0.0.1")
    }

    pub fn login_url(&self) -> &str {
        self.urls
            .get()
            .map(|u| u.login.as_str())
            .unwrap_or("http://127.0.0.1")
    }

    pub fn now() -> chrono::DateTime<chrono::Utc> {
        chrono::Utc::now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_times_spread_like_azures() {
        let fixed = Timing::fixed(Duration::from_secs(12), Duration::from_secs(3));
        assert_eq!(fixed.draw_vm_op(), Duration::from_secs(12));
        let azure = Timing {
            vm_op_sigma: 1.0,
            ..fixed
        };
        let mut draws: Vec<f64> = (0..20_000)
            .map(|_| azure.draw_vm_op().as_secs_f64())
            .collect();
        draws.sort_by(f64::total_cmp);
        let median = draws[draws.len() / 2];
        let over = |s: f64| draws.iter().filter(|d| **d > s).count() as f64 / draws.len() as f64;
        assert!((11.0..13.0).contains(&median), "median {median}");
        // Azure/aks-engine#2888: 5.5 % over 60 s, 0.8 % over 120 s.
        assert!((0.04..0.07).contains(&over(60.0)), "{}", over(60.0));
        assert!((0.005..0.017).contains(&over(120.0)), "{}", over(120.0));
        assert!(Timing {
            vm_op_sigma: -1.0,
            ..fixed
        }
        .check()
        .is_err());
        assert!(Timing {
            disk_op_sigma: f64::NAN,
            ..fixed
        }
        .check()
        .is_err());
    }
}
