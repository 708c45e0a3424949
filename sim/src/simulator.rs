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

/// How long long-running operations take.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct Timing {
    #[serde(rename = "vmOpMs", with = "millis")]
    pub vm_op: Duration,
    #[serde(rename = "diskOpMs", with = "millis")]
    pub disk_op: Duration,
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
