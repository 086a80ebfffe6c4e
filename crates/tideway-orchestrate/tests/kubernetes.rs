//! Kubernetes mode against the test cluster, over real HTTP through the `kube` client.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client, Config};
use serde_json::json;
use tideway_core::{ReplicaState, Timestamp};
use tideway_orchestrate::kubernetes::{EndpointReplicas, EndpointView, PortRef, watch_endpoints};
use tideway_testkit::cluster::TestCluster;

const PATIENCE: Duration = Duration::from_secs(10);

fn client(cluster: &TestCluster) -> Client {
    Client::try_from(Config::new(cluster.url().parse().expect("a URL"))).expect("a client")
}

async fn app(client: &Client, name: &str, replicas: i32) {
    let service: Service = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": { "name": name },
        "spec": { "selector": { "app": name }, "ports": [{ "name": "http", "port": 80, "targetPort": 8080 }] },
    }))
    .expect("a service");
    let deployment: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": { "name": name },
        "spec": {
            "replicas": replicas,
            "selector": { "matchLabels": { "app": name } },
            "template": { "metadata": { "labels": { "app": name } }, "spec": { "containers": [{ "name": "app" }] } },
        },
    }))
    .expect("a deployment");
    Api::<Service>::namespaced(client.clone(), "apps")
        .create(&PostParams::default(), &service)
        .await
        .expect("service");
    Api::<Deployment>::namespaced(client.clone(), "apps")
        .create(&PostParams::default(), &deployment)
        .await
        .expect("deployment");
}

fn states(views: &[EndpointView]) -> Vec<ReplicaState> {
    views.iter().map(|v| v.state).collect()
}

#[tokio::test]
async fn a_services_endpoints_are_watched_into_replicas_named_after_their_pods() {
    let cluster = TestCluster::start().await.expect("cluster");
    let client = client(&cluster);
    app(&client, "shiny", 2).await;
    let mut watch = watch_endpoints(client.clone(), "apps", "shiny", PortRef::Name("http".into())).boxed();
    let mut next_until = async |what: &str, done: &dyn Fn(&[EndpointView]) -> bool| loop {
        let views = tokio::time::timeout(PATIENCE, watch.next())
            .await
            .unwrap_or_else(|_| panic!("gave up waiting for {what}"))
            .expect("the watch goes on");
        if done(&views) {
            return views;
        }
    };
    let ready = next_until("two ready endpoints", &|v| states(v) == [ReplicaState::Ready; 2]).await;
    let mut replicas = EndpointReplicas::default();
    let set = replicas.apply(&ready, Timestamp::ZERO);
    for replica in &set {
        assert!(
            cluster.replica("apps", replica.name()).is_some(),
            "{} is a pod",
            replica.name()
        );
        let (status, headers, _) = tideway_testkit::http1_get(replica.addr(), "shiny", "/")
            .await
            .expect("an answer");
        assert_eq!(
            (status.as_u16(), headers["x-backend"].to_str().ok()),
            (200, Some(replica.name()))
        );
    }

    // Scaled down, one pod's endpoint goes; the other keeps its replica.
    Api::<Deployment>::namespaced(client.clone(), "apps")
        .patch_scale(
            "shiny",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "replicas": 1 } })),
        )
        .await
        .expect("scaled");
    let one = next_until("one endpoint", &|v| v.len() == 1).await;
    let after = replicas.apply(&one, Timestamp::ZERO);
    assert!(
        set.iter().any(|r| std::sync::Arc::ptr_eq(r, &after[0])),
        "the staying pod keeps its replica"
    );

    // The watch is cut by an outage and retries; once the API server is back the endpoints come again.
    cluster.outage();
    cluster.restore().await.expect("restored");
    Api::<Deployment>::namespaced(client, "apps")
        .patch_scale(
            "shiny",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "replicas": 3 } })),
        )
        .await
        .expect("scaled");
    next_until("three ready endpoints", &|v| {
        states(v) == [ReplicaState::Ready; 3]
    })
    .await;
}
