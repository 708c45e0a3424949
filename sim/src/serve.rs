//! `flexdisk-sim serve`: bind the listeners, write the cloud configs, print the ready line, serve
//! until SIGTERM/SIGINT, then release every loop device.

use crate::http::{self, Handler, Request};
use crate::simulator::{Simulator, Timing, Urls};
use crate::store::Store;
use crate::world::World;
use anyhow::Context;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub struct ServeOptions {
    pub state: PathBuf,
    pub world: Option<PathBuf>,
    pub timing: Timing,
    pub arm_port: u16,
    pub login_port: u16,
    pub imds_port: u16,
    pub tls_dir: Option<PathBuf>,
    pub kube_port: u16,
    pub listen: std::net::IpAddr,
    pub kube_watch_window: usize,
    pub kube_bookmark: std::time::Duration,
}

pub async fn serve(opts: ServeOptions) -> anyhow::Result<()> {
    let world = World::load(opts.world.as_deref())?;
    std::fs::create_dir_all(&opts.state)
        .with_context(|| format!("creating {}", opts.state.display()))?;
    let state_dir = opts.state.canonicalize()?;
    let store = Store::new(&state_dir)?;
    let sim = Arc::new(Simulator::open(world, store, opts.timing)?);

    let arm = TcpListener::bind((opts.listen, opts.arm_port))
        .await
        .context("binding the ARM port")?;
    let login = TcpListener::bind((opts.listen, opts.login_port))
        .await
        .context("binding the login port")?;
    let tls_dir = opts
        .tls_dir
        .clone()
        .unwrap_or_else(|| state_dir.join("tls"));
    let tls = crate::tls::load_or_create(&tls_dir, opts.listen)?;
    let urls = Urls {
        arm: format!("http://{}", arm.local_addr()?),
        login: format!("https://{}", login.local_addr()?),
    };
    let _ = sim.urls.set(urls.clone());
    crate::arm::lro::resume_all(&sim);

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let s = sim.clone();
    let arm_handler: Handler = Arc::new(move |req: Request| {
        let sim = s.clone();
        Box::pin(async move {
            if req.path.starts_with("/_sim/") || req.path == "/_sim" {
                crate::control::handle(sim, req).await
            } else {
                crate::arm::handle(sim, req).await
            }
        })
    });
    tasks.push(tokio::spawn(http::serve(
        arm,
        arm_handler,
        None,
        stop_rx.clone(),
    )));
    let s = sim.clone();
    let login_handler: Handler =
        Arc::new(move |req: Request| Box::pin(crate::entra::handle(s.clone(), req)));
    tasks.push(tokio::spawn(http::serve(
        login,
        login_handler,
        Some(tls.acceptor.clone()),
        stop_rx.clone(),
    )));

    let mut nodes = serde_json::Map::new();
    for (i, spec) in sim.world.nodes.iter().enumerate() {
        let name = spec.node_name();
        let port = if opts.imds_port == 0 {
            0
        } else {
            opts.imds_port + i as u16
        };
        let listener = TcpListener::bind((opts.listen, port))
            .await
            .context("binding an IMDS port")?;
        let imds = format!("http://{}", listener.local_addr()?);
        let (s, n) = (sim.clone(), name.clone());
        let h: Handler =
            Arc::new(move |req: Request| Box::pin(crate::imds::handle(s.clone(), n.clone(), req)));
        tasks.push(tokio::spawn(http::serve(
            listener,
            h,
            None,
            stop_rx.clone(),
        )));
        let root = sim.store.node_root(&name);
        let config = root.join("etc/kubernetes/azure.json");
        write_json(&config, &node_config(&sim, &urls))?;
        let vm = sim
            .lock()
            .vms
            .get(&name)
            .map(|v| v.id.clone())
            .unwrap_or_default();
        let identity_header = crate::imds::identity_header(&sim, &name);
        nodes.insert(
            name,
            json!({
                "vm": vm,
                "root": root,
                "imds": imds,
                "identityEndpoint": format!("{imds}{}", crate::imds::APP_SERVICE_TOKEN_PATH),
                "identityHeader": identity_header,
                "azureJson": config,
                "zone": spec.zone,
                "vmSize": spec.vm_size,
            }),
        );
    }
    let (kube_url, kubeconfig) = serve_kube(&sim, &state_dir, &opts, &stop_rx, &mut tasks).await?;
    let control_config = state_dir.join("azure.json");
    write_json(&control_config, &control_plane_config(&sim, &urls))?;
    let token_file = state_dir.join("federated-token");
    if let Some(t) = crate::entra::federated_assertion(&sim, 24 * 3600) {
        std::fs::write(&token_file, t).context("writing the federated token file")?;
    }
    let client_secret = sim.lock().client_secret.clone();
    let ready = json!({
        "arm": urls.arm,
        "login": urls.login,
        "control": format!("{}/_sim", urls.arm),
        "tenant": sim.world.tenant,
        "clientId": sim.world.client_id,
        "clientSecret": client_secret,
        "subscription": sim.world.subscription,
        "resourceGroup": sim.world.resource_group,
        "location": sim.world.location,
        "azureJson": control_config,
        "federatedTokenFile": token_file,
        "caBundle": tls.ca_file,
        "state": state_dir,
        "nodes": nodes,
        "nodeBackend": sim.nodes.kind(),
        "kube": kube_url,
        "kubeconfig": kubeconfig,
    });
    println!("{ready}");

    wait_for_signal().await?;
    tracing::info!("stopping");
    let _ = stop_tx.send(true);
    // Connections are let finish for a while, not forever: a client whose end of a keep-alive
    // connection vanished without a FIN (its network namespace or address deleted first) would
    // hold the simulator — and the loop devices it releases last — for good.
    let drained = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        for t in tasks {
            let _ = t.await;
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!("connections still open 5 s after the stop; stopping without them");
    }
    {
        let state = sim.lock();
        sim.save(&state)?;
    }
    for e in sim.nodes.release_all() {
        tracing::error!("releasing a loop device: {e}");
    }
    Ok(())
}

/// The Kubernetes API: its listener, a cluster seeded from the Azure world, the volume
/// controllers, and a kubeconfig.
async fn serve_kube(
    sim: &Arc<Simulator>,
    state_dir: &Path,
    opts: &ServeOptions,
    stop_rx: &watch::Receiver<bool>,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
) -> anyhow::Result<(String, PathBuf)> {
    use crate::kube::{KubeApi, NodeInfo};
    let listener = TcpListener::bind(("127.0.0.1", opts.kube_port))
        .await
        .context("binding the Kubernetes API port")?;
    let address = listener.local_addr()?.to_string();
    let url = format!("http://{address}");
    let api = Arc::new(KubeApi::new(
        address,
        opts.kube_watch_window,
        opts.kube_bookmark,
    ));
    let nodes: Vec<NodeInfo> = {
        let state = sim.lock();
        sim.world
            .nodes
            .iter()
            .map(|n| {
                let name = n.node_name();
                NodeInfo {
                    vm_id: state
                        .vms
                        .get(&name)
                        .map(|v| v.id.clone())
                        .unwrap_or_default(),
                    name,
                    vm_size: n.vm_size.clone(),
                    zone: n.zone.clone(),
                    max_data_disks: crate::vm_sizes::max_data_disks(&n.vm_size),
                }
            })
            .collect()
    };
    api.seed(&sim.world.location, &nodes)
        .map_err(|e| anyhow::anyhow!("seeding the cluster: {}", e.message))?;
    let kubeconfig = state_dir.join("kubeconfig");
    api.write_kubeconfig(&kubeconfig, &url)
        .with_context(|| format!("writing {}", kubeconfig.display()))?;
    let a = api.clone();
    let handler: Handler =
        Arc::new(move |req: Request| Box::pin(crate::kube::api::handle(a.clone(), req)));
    tasks.push(tokio::spawn(http::serve(
        listener,
        handler,
        None,
        stop_rx.clone(),
    )));
    tasks.push(tokio::spawn(crate::kube::controllers::run(
        api,
        stop_rx.clone(),
    )));
    Ok((url, kubeconfig))
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

fn write_json(path: &Path, value: &Value) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let text = serde_json::to_string_pretty(value)? + "\n";
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    // Cloud configs carry secrets: readable by root only, as on real nodes.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(())
}

/// Fields every cloud config shares; the simulator is reached as a custom cloud (Azure Stack Hub
/// style: `resourceManagerEndpoint`, from whose metadata the login endpoint is discovered).
fn common_config(sim: &Simulator, urls: &Urls) -> Value {
    let w = &sim.world;
    json!({
        "cloud": crate::arm::CLOUD_NAME,
        "resourceManagerEndpoint": format!("{}/", urls.arm),
        // A private cloud that speaks Azure's current api-versions: without this,
        // cloud-provider-azure's clients would speak Azure Stack Hub's (disks 2019-03-01, VMs
        // 2017-12-01; azclient's `AzureStackCloudAPIVersion` of each client), which the
        // simulator does not serve.
        "disableAzureStackCloud": true,
        "tenantId": w.tenant,
        "subscriptionId": w.subscription,
        "resourceGroup": w.resource_group,
        "location": w.location,
        "vmType": "vmss",
        "primaryScaleSetName": w.nodes.iter().find_map(|n| match &n.placement {
            crate::world::Placement::ScaleSet { scale_set, .. } => Some(scale_set.clone()),
            _ => None,
        }).unwrap_or_default(),
        "primaryAvailabilitySetName": w.nodes.iter().find_map(|n| match &n.placement {
            crate::world::Placement::AvailabilitySet { availability_set } => Some(availability_set.clone()),
            _ => None,
        }).unwrap_or_default(),
        "useInstanceMetadata": true,
    })
}

fn control_plane_config(sim: &Simulator, urls: &Urls) -> Value {
    let mut c = common_config(sim, urls);
    c["aadClientId"] = json!(sim.world.client_id);
    c["aadClientSecret"] = json!(sim.lock().client_secret);
    c["useManagedIdentityExtension"] = json!(false);
    c
}

fn node_config(sim: &Simulator, urls: &Urls) -> Value {
    let mut c = common_config(sim, urls);
    // What AKS writes on its nodes: the kubelet identity through IMDS.
    c["aadClientId"] = json!("msi");
    c["aadClientSecret"] = json!("msi");
    c["useManagedIdentityExtension"] = json!(true);
    c["userAssignedIdentityID"] = json!(sim.world.kubelet_identity.client_id);
    c
}
