//! The test cluster through the real `kube` client, over HTTP: the API server conventions tideway will
//! depend on in Kubernetes mode.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher;
use kube::{Api, Client, Config};
use serde_json::json;
use tideway_testkit::cluster::{POD_DELETION_COST, Permission, Resource, StatusCode, TestCluster, manifests};

const PATIENCE: Duration = Duration::from_secs(10);

async fn client(cluster: &TestCluster) -> Client {
    let config = Config::new(cluster.url().parse().expect("the cluster's URL"));
    Client::try_from(config).expect("a client")
}

fn deployment(name: &str, replicas: u32) -> Deployment {
    serde_json::from_value(manifests::deployment(name, replicas)).expect("a deployment")
}

fn api_error(result: Result<impl std::fmt::Debug, kube::Error>) -> (u16, String) {
    match result {
        Err(kube::Error::Api(status)) => (status.code, status.reason),
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn objects_keep_the_api_servers_conventions() {
    let cluster = TestCluster::start().await.expect("cluster");
    let api: Api<Deployment> = Api::namespaced(client(&cluster).await, "apps");

    let created = api
        .create(&PostParams::default(), &deployment("shiny", 1))
        .await
        .expect("created");
    assert_eq!(created.metadata.generation, Some(1));
    assert!(created.metadata.uid.is_some() && created.metadata.creation_timestamp.is_some());
    let first_version = created
        .metadata
        .resource_version
        .clone()
        .expect("a resourceVersion");
    assert_eq!(
        api_error(api.create(&PostParams::default(), &deployment("shiny", 1)).await),
        (409, "AlreadyExists".to_owned())
    );
    assert_eq!(api_error(api.get("nope").await), (404, "NotFound".to_owned()));

    // The scale subresource speaks autoscaling/v1 and moves the generation.
    assert_eq!(
        api.get_scale("shiny")
            .await
            .expect("scale")
            .spec
            .and_then(|s| s.replicas),
        Some(1)
    );
    let scaled = api
        .patch_scale(
            "shiny",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "replicas": 3 } })),
        )
        .await
        .expect("scaled");
    assert_eq!(scaled.spec.and_then(|s| s.replicas), Some(3));
    let after = api.get("shiny").await.expect("the deployment");
    assert_eq!(after.spec.as_ref().and_then(|s| s.replicas), Some(3));
    assert_eq!(after.metadata.generation, Some(2));

    // A status write changes only the status; a write of the object never changes it, and moves the
    // generation only when the spec changed.
    let status = api
        .patch_status(
            "shiny",
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": { "replicas": 3 } })),
        )
        .await
        .expect("status written");
    assert_eq!(status.status.as_ref().and_then(|s| s.replicas), Some(3));
    assert_eq!(status.metadata.generation, Some(2));
    let labelled = api
        .patch(
            "shiny",
            &PatchParams::default(),
            &Patch::Merge(
                json!({ "metadata": { "labels": { "tier": "web" } }, "status": { "replicas": 9 } }),
            ),
        )
        .await
        .expect("labelled");
    assert_eq!(labelled.status.as_ref().and_then(|s| s.replicas), Some(3));
    assert_eq!(labelled.metadata.generation, Some(2));

    // A write from a stale resourceVersion is a conflict.
    let mut stale = created;
    stale.metadata.resource_version = Some(first_version);
    assert_eq!(
        api_error(api.replace("shiny", &PostParams::default(), &stale).await),
        (409, "Conflict".to_owned())
    );
    let stored = cluster
        .object(
            &Resource {
                group: "apps".into(),
                plural: "deployments".into(),
            },
            "apps",
            "shiny",
        )
        .expect("stored");
    assert_eq!(
        stored["spec"]["replicas"], 3,
        "the conflicting write changed nothing"
    );

    // Lists carry a resourceVersion and honour label selectors.
    api.create(&PostParams::default(), &deployment("streamlit", 1))
        .await
        .expect("created");
    let all = api.list(&ListParams::default()).await.expect("listed");
    assert_eq!(all.items.len(), 2);
    assert!(all.metadata.resource_version.is_some());
    let one = api
        .list(&ListParams::default().labels("app=streamlit"))
        .await
        .expect("listed");
    assert_eq!(one.items.len(), 1);
    api.delete("streamlit", &Default::default())
        .await
        .expect("deleted");
    assert_eq!(
        api_error(api.get("streamlit").await),
        (404, "NotFound".to_owned())
    );
}

#[tokio::test]
async fn a_watch_that_ends_resumes_and_one_whose_version_is_gone_lists_again() {
    let cluster = TestCluster::start().await.expect("cluster");
    let api: Api<Deployment> = Api::namespaced(client(&cluster).await, "apps");
    api.create(&PostParams::default(), &deployment("a", 1))
        .await
        .expect("created");

    // The watcher reports a failed watch (then lists or resumes on the next poll); the test notes them.
    let mut seen = watcher(api.clone(), watcher::Config::default().any_semantic()).boxed();
    let mut errors = Vec::new();
    let mut next = async || loop {
        let event = tokio::time::timeout(PATIENCE, seen.next())
            .await
            .expect("the watcher moves on")
            .expect("the watch goes on");
        match event {
            Ok(watcher::Event::Apply(d) | watcher::Event::InitApply(d)) => {
                return d.metadata.name.unwrap_or_default();
            }
            Ok(_) => {}
            Err(error) => errors.push(error.to_string()),
        }
    };
    assert_eq!(next().await, "a");

    // A watch the server ends resumes from its last version: it misses nothing, and lists nothing.
    let lists = cluster.lists();
    cluster.end_watches();
    api.create(&PostParams::default(), &deployment("b", 1))
        .await
        .expect("created");
    assert_eq!(next().await, "b");
    assert_eq!(cluster.lists(), lists, "resumed from its version");

    // A watch from a version the server no longer has gets 410 Gone and lists again: it still sees
    // everything.
    cluster.expire_next_watch();
    cluster.end_watches();
    api.create(&PostParams::default(), &deployment("c", 1))
        .await
        .expect("created");
    let mut names = Vec::new();
    while !names.contains(&"c".to_owned()) {
        names.push(next().await);
    }
    assert!(cluster.lists() > lists, "listed again after 410 Gone: {names:?}");
    assert!(
        errors.iter().any(|e| e.contains("410") || e.contains("too old")),
        "the watch was told its version is gone: {errors:?}"
    );
}

fn service(name: &str) -> k8s_openapi::api::core::v1::Service {
    serde_json::from_value(manifests::service(name)).expect("a service")
}

/// The ready endpoints of `service`'s slice, as `(pod, address)`, and how many are terminating.
async fn endpoints(api: &Api<EndpointSlice>, service: &str) -> (Vec<(String, String)>, usize) {
    let slices = api
        .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={service}")))
        .await
        .expect("listed");
    let endpoints: Vec<_> = slices
        .items
        .into_iter()
        .flat_map(|slice| slice.endpoints)
        .collect();
    let terminating = endpoints
        .iter()
        .filter(|e| e.conditions.as_ref().and_then(|c| c.terminating) == Some(true))
        .count();
    let ready = endpoints
        .into_iter()
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
        .filter_map(|e| Some((e.target_ref?.name?, e.addresses.first()?.clone())))
        .collect();
    (ready, terminating)
}

async fn until<T>(what: &str, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(found) = probe().await {
            return found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn deployments_become_pods_with_real_replicas_and_scale_down_removes_the_cheapest() {
    let cluster = TestCluster::start().await.expect("cluster");
    let client = client(&cluster).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "apps");
    let services: Api<k8s_openapi::api::core::v1::Service> = Api::namespaced(client.clone(), "apps");
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "apps");
    let pods: Api<Pod> = Api::namespaced(client, "apps");
    services
        .create(&PostParams::default(), &service("shiny"))
        .await
        .expect("service");
    deployments
        .create(&PostParams::default(), &deployment("shiny", 3))
        .await
        .expect("deployment");

    let ready = until("three ready endpoints", async || {
        let (ready, _) = endpoints(&slices, "shiny").await;
        (ready.len() == 3).then_some(ready)
    })
    .await;
    let status = deployments
        .get("shiny")
        .await
        .expect("deployment")
        .status
        .expect("a status");
    assert_eq!((status.replicas, status.ready_replicas), (Some(3), Some(3)));
    // Each endpoint is a real replica on an address of its own, at the Service's target port.
    for (pod, address) in &ready {
        let addr: std::net::SocketAddr = format!("{address}:8080").parse().expect("an address");
        let (code, headers, _) = tideway_testkit::http1_get(addr, "shiny", "/")
            .await
            .expect("an answer");
        assert_eq!(
            (code.as_u16(), headers["x-backend"].to_str().ok()),
            (200, Some(pod.as_str()))
        );
    }

    // Scaling down removes the pod with the lowest deletion cost, terminating first.
    let (cheap, _) = &ready[1];
    pods.patch(
        cheap,
        &PatchParams::default(),
        &Patch::Merge(json!({ "metadata": { "annotations": { POD_DELETION_COST: "-100" } } })),
    )
    .await
    .expect("annotated");
    deployments
        .patch_scale(
            "shiny",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "replicas": 2 } })),
        )
        .await
        .expect("scaled");
    let left = until("the cheap pod gone", async || {
        let names: Vec<String> = pods
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .into_iter()
            .filter_map(|pod| pod.metadata.name)
            .collect();
        (names.len() == 2).then_some(names)
    })
    .await;
    assert!(!left.contains(cheap), "{cheap} went, not another: {left:?}");
    let (ready, terminating) = endpoints(&slices, "shiny").await;
    assert_eq!((ready.len(), terminating), (2, 0));
    assert!(cluster.replica("apps", cheap).is_none(), "its replica stopped");

    // A pod that dies is gone at once, and the Deployment gets a new one in its place.
    let (victim, _) = ready.iter().find(|(pod, _)| pod != cheap).expect("a pod left");
    cluster.kill_pod("apps", victim);
    assert!(cluster.replica("apps", victim).is_none());
    let replaced = until("a replacement pod ready", async || {
        let (ready, _) = endpoints(&slices, "shiny").await;
        (ready.len() == 2 && ready.iter().all(|(pod, _)| pod != victim)).then_some(ready)
    })
    .await;
    assert!(
        replaced
            .iter()
            .all(|(pod, _)| cluster.replica("apps", pod).is_some())
    );
}

#[tokio::test]
async fn injected_faults_look_like_a_real_api_servers() {
    let cluster = TestCluster::start().await.expect("cluster");
    let api: Api<Deployment> = Api::namespaced(client(&cluster).await, "apps");
    api.create(&PostParams::default(), &deployment("a", 1))
        .await
        .expect("created");

    // The client retries 429 and 503 by itself (after their Retry-After); a 500 it hands over at once.
    for status in [StatusCode::SERVICE_UNAVAILABLE, StatusCode::TOO_MANY_REQUESTS] {
        cluster.fail_next(1, status, 0);
        api.get("a").await.expect("retried past one failure");
    }
    cluster.fail_next(1, StatusCode::INTERNAL_SERVER_ERROR, 0);
    assert_eq!(api_error(api.get("a").await), (500, "InternalError".to_owned()));

    cluster.conflict_next_write();
    let relabel = Patch::Merge(json!({ "metadata": { "labels": { "x": "y" } } }));
    assert_eq!(
        api_error(api.patch("a", &PatchParams::default(), &relabel).await),
        (409, "Conflict".to_owned())
    );
    api.patch("a", &PatchParams::default(), &relabel)
        .await
        .expect("the next write goes through");

    // An outage refuses connections; the client reaches the server again once it is back.
    cluster.outage();
    assert!(matches!(api.get("a").await, Err(error) if !matches!(error, kube::Error::Api(_))));
    cluster.restore().await.expect("restored");
    api.get("a").await.expect("reachable again");

    // A stalled watch sends nothing and stays open; what changed comes once it moves again.
    let mut events = watcher(api.clone(), watcher::Config::default()).boxed();
    let mut applied = async |within: Duration| loop {
        match tokio::time::timeout(within, events.next()).await {
            Ok(Some(Ok(watcher::Event::Apply(d) | watcher::Event::InitApply(d)))) => {
                return d.metadata.name;
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return None,
        }
    };
    assert_eq!(applied(PATIENCE).await.as_deref(), Some("a"));
    cluster.stall_watches(true);
    api.create(&PostParams::default(), &deployment("b", 1))
        .await
        .expect("created");
    assert_eq!(
        applied(Duration::from_millis(300)).await,
        None,
        "nothing comes while stalled"
    );
    cluster.stall_watches(false);
    assert_eq!(applied(PATIENCE).await.as_deref(), Some("b"));
}

#[tokio::test]
async fn a_token_may_do_what_it_was_granted_and_nothing_else() {
    let cluster = TestCluster::start().await.expect("cluster");
    let admin: Api<Deployment> = Api::namespaced(client(&cluster).await, "apps");
    admin
        .create(&PostParams::default(), &deployment("a", 1))
        .await
        .expect("created");

    let token = cluster.token([
        Permission::new("apps", "deployments", "get"),
        Permission::new("apps", "deployments/scale", "patch"),
    ]);
    let as_user = async |token: &str| {
        let kubeconfig =
            Kubeconfig::from_yaml(&cluster.kubeconfig_as("apps", Some(token))).expect("a kubeconfig");
        let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .expect("a config");
        Client::try_from(config).expect("a client")
    };
    let api: Api<Deployment> = Api::default_namespaced(as_user(&token).await);
    api.get("a").await.expect("granted: get");
    api.patch_scale(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({ "spec": { "replicas": 2 } })),
    )
    .await
    .expect("granted: patch of the scale");
    assert_eq!(
        api_error(api.list(&ListParams::default()).await),
        (403, "Forbidden".to_owned())
    );
    assert_eq!(api_error(api.get_scale("a").await), (403, "Forbidden".to_owned()));
    let pods: Api<Pod> = Api::default_namespaced(as_user(&token).await);
    assert_eq!(
        api_error(pods.list(&ListParams::default()).await),
        (403, "Forbidden".to_owned())
    );

    let stranger: Api<Deployment> = Api::default_namespaced(as_user("not-a-token").await);
    assert_eq!(
        api_error(stranger.get("a").await),
        (401, "Unauthorized".to_owned())
    );
}
