//! The local kube-apiserver is real: CRDs become Established, custom objects can be created,
//! patched, listed and watched, and RBAC forbids what it should.

use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, DynamicObject, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::wait::{await_condition, conditions};
use mailvault_tests::{TestEnv, unique_name};
use serde_json::json;
use std::time::Duration;

const CRD_NAME: &str = "widgets.smoke.mailvault.io";

fn widget_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("smoke.mailvault.io", "v1", "Widget"),
        "widgets",
    )
}

async fn ensure_crd(client: &kube::Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": CRD_NAME},
        "spec": {
            "group": "smoke.mailvault.io",
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {"spec": {
                        "type": "object",
                        "properties": {"size": {"type": "integer", "minimum": 1}},
                        "required": ["size"]
                    }}
                }}
            }]
        }
    }))
    .unwrap();
    // Server-side apply: creates it on a fresh cluster, leaves it alone on a reused one.
    crds.patch(
        CRD_NAME,
        &PatchParams::apply("mailvault-smoke").force(),
        &Patch::Apply(&crd),
    )
    .await
    .expect("applying the smoke CRD");
    tokio::time::timeout(
        Duration::from_secs(60),
        await_condition(crds, CRD_NAME, conditions::is_crd_established()),
    )
    .await
    .expect("CRD not Established within 60s")
    .expect("waiting for the CRD");
}

async fn new_namespace(client: &kube::Client) -> String {
    let name = unique_name("smoke");
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("creating a namespace");
    name
}

#[tokio::test]
async fn custom_objects_are_created_patched_listed_and_watched() {
    let env = TestEnv::load();
    let client = env.kube_admin().await;
    ensure_crd(&client).await;
    let ns = new_namespace(&client).await;
    let widgets: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &widget_resource());

    // The schema is enforced at admission.
    let invalid: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "smoke.mailvault.io/v1", "kind": "Widget",
        "metadata": {"name": "bad"}, "spec": {"size": 0}
    }))
    .unwrap();
    let err = widgets
        .create(&PostParams::default(), &invalid)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 422),
        "expected 422 Invalid, got {err}"
    );

    let w: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "smoke.mailvault.io/v1", "kind": "Widget",
        "metadata": {"name": "w1"}, "spec": {"size": 1}
    }))
    .unwrap();
    let created = widgets
        .create(&PostParams::default(), &w)
        .await
        .expect("create");
    let rv = created
        .metadata
        .resource_version
        .clone()
        .expect("resourceVersion");

    let mut stream = widgets
        .watch(&WatchParams::default(), &rv)
        .await
        .expect("watch")
        .boxed();
    widgets
        .patch(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"size": 3}})),
        )
        .await
        .expect("patch");
    let event = tokio::time::timeout(Duration::from_secs(30), stream.try_next())
        .await
        .expect("no watch event within 30s")
        .expect("watch stream error")
        .expect("watch stream ended");
    match event {
        WatchEvent::Modified(o) => assert_eq!(o.data["spec"]["size"], 3),
        other => panic!("expected Modified, got {other:?}"),
    }

    let list = widgets.list(&ListParams::default()).await.expect("list");
    assert_eq!(list.items.len(), 1);
    assert_eq!(list.items[0].data["spec"]["size"], 3);
}

#[tokio::test]
async fn rbac_forbids_the_unprivileged_identity_until_granted() {
    let env = TestEnv::load();
    let admin = env.kube_admin().await;
    ensure_crd(&admin).await;
    let ns = new_namespace(&admin).await;
    let user = env.kube_unprivileged().await;
    let widgets: Api<DynamicObject> = Api::namespaced_with(user.clone(), &ns, &widget_resource());

    let forbidden =
        |r: Result<_, kube::Error>| matches!(r, Err(kube::Error::Api(s)) if s.code == 403);
    assert!(forbidden(
        widgets.list(&ListParams::default()).await.map(|_| ())
    ));
    assert!(forbidden(
        Api::<Namespace>::all(user.clone())
            .list(&ListParams::default())
            .await
            .map(|_| ())
    ));

    // Grant read access to widgets in this namespace only.
    let role: Role = serde_json::from_value(json!({
        "metadata": {"name": "widget-reader"},
        "rules": [{"apiGroups": ["smoke.mailvault.io"], "resources": ["widgets"], "verbs": ["get", "list", "watch"]}]
    }))
    .unwrap();
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "widget-reader"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "widget-reader"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "mailvault-unprivileged"}]
    }))
    .unwrap();
    Api::<Role>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &role)
        .await
        .expect("role");
    Api::<RoleBinding>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &binding)
        .await
        .expect("rolebinding");

    // The RBAC authorizer learns of new bindings through an informer: poll briefly.
    let mut granted = false;
    for _ in 0..50 {
        if widgets.list(&ListParams::default()).await.is_ok() {
            granted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(granted, "list still refused after the RoleBinding");
    let w: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "smoke.mailvault.io/v1", "kind": "Widget",
        "metadata": {"name": "w1"}, "spec": {"size": 1}
    }))
    .unwrap();
    assert!(forbidden(
        widgets.create(&PostParams::default(), &w).await.map(|_| ())
    ));
}
