//! Authorization decisions as kube-apiserver's RBAC authorizer makes them.

use super::*;

fn cp() -> UserInfo {
    UserInfo::service_account("minispod-system", "minispod-control-plane")
}

fn api_with(objects: &[(&str, &str, Value)]) -> Api {
    let mut api = Api::new(100);
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ms-a"}});
    api.create(kinds::namespaces(), "", ns, "test").unwrap();
    for (plural, namespace, object) in objects {
        api.create(rbac_kind(plural), namespace, object.clone(), "test")
            .expect("a valid RBAC object");
    }
    api
}

fn cluster_role(name: &str, rules: Value) -> Value {
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": name}, "rules": rules})
}

fn binding(kind: &str, name: &str, namespace: Option<&str>, role: (&str, &str)) -> Value {
    let mut b = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind,
        "metadata": {"name": name},
        "roleRef": {"apiGroup": RBAC_GROUP, "kind": role.0, "name": role.1},
        "subjects": [{"kind": "ServiceAccount", "name": "minispod-control-plane",
            "namespace": "minispod-system"}]});
    if let Some(ns) = namespace {
        b["metadata"]["namespace"] = json!(ns);
    }
    b
}

fn pods() -> &'static Kind {
    kinds::pods()
}

#[test]
fn rules_match_verbs_groups_resources_subresources_and_names() {
    let rule = Rule::from_json(
        &json!({"apiGroups": [""], "resources": ["pods", "pods/log"],
        "verbs": ["get", "list"]}),
    );
    assert!(rule.allows(&Attributes::resource("get", pods(), "a", "p")));
    assert!(rule.allows(&Attributes::resource("get", pods(), "a", "p").with_subresource("log")));
    assert!(!rule.allows(&Attributes::resource("create", pods(), "a", "p")));
    assert!(
        !rule
            .allows(&Attributes::resource("create", pods(), "a", "p").with_subresource("eviction"))
    );
    let deployments = kinds::lookup("apps", "v1", "deployments").unwrap();
    assert!(!rule.allows(&Attributes::resource("get", deployments, "a", "d")));

    let status = Rule::from_json(&json!({"apiGroups": ["*"], "resources": ["*/status"],
        "verbs": ["*"]}));
    assert!(
        status.allows(
            &Attributes::resource("patch", deployments, "a", "d").with_subresource("status")
        )
    );
    assert!(!status.allows(&Attributes::resource("patch", deployments, "a", "d")));

    let named = Rule::from_json(
        &json!({"apiGroups": [RBAC_GROUP], "resources": ["clusterroles"],
        "verbs": ["bind"], "resourceNames": ["minispod-tenant"]}),
    );
    let clusterroles = rbac_kind("clusterroles");
    assert!(named.allows(&Attributes::resource(
        "bind",
        clusterroles,
        "",
        "minispod-tenant"
    )));
    assert!(!named.allows(&Attributes::resource(
        "bind",
        clusterroles,
        "",
        "cluster-admin"
    )));
    // A rule with resourceNames never allows a request without a name.
    assert!(!named.allows(&Attributes::resource("bind", clusterroles, "", "")));

    let urls =
        Rule::from_json(&json!({"nonResourceURLs": ["/apis/*", "/version"], "verbs": ["get"]}));
    assert!(urls.allows(&Attributes::non_resource("get", "/apis/apps/v1")));
    assert!(urls.allows(&Attributes::non_resource("get", "/version")));
    assert!(!urls.allows(&Attributes::non_resource("get", "/version/x")));
    assert!(!urls.allows(&Attributes::non_resource("post", "/version")));
    assert!(!urls.allows(&Attributes::resource("get", pods(), "", "")));
}

#[test]
fn request_attributes_are_derived_as_kube_apiserver_does() {
    let a = Attributes::of_request(&Method::GET, pods(), "", None, None, true, None);
    assert_eq!((a.verb.as_str(), a.namespace.as_str()), ("watch", ""));
    let a = Attributes::of_request(
        &Method::GET,
        pods(),
        "ns",
        None,
        None,
        false,
        Some("spec.nodeName=n1,metadata.name=p1"),
    );
    assert_eq!((a.verb.as_str(), a.name.as_str()), ("list", "p1"));
    let a = Attributes::of_request(
        &Method::POST,
        pods(),
        "ns",
        Some("p"),
        Some("eviction"),
        false,
        None,
    );
    assert_eq!(
        (a.verb.as_str(), a.subresource.as_str()),
        ("create", "eviction")
    );
    let a = Attributes::of_request(
        &Method::PATCH,
        kinds::namespaces(),
        "",
        Some("ms-u"),
        None,
        false,
        None,
    );
    assert_eq!((a.verb.as_str(), a.namespace.as_str()), ("patch", "ms-u"));
    let a = Attributes::of_request(&Method::DELETE, pods(), "ns", None, None, false, None);
    assert_eq!(a.verb, "deletecollection");
}

#[test]
fn bindings_grant_in_their_scope_only() {
    let api = api_with(&[
        (
            "clusterroles",
            "",
            cluster_role(
                "tenant",
                json!([
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]),
            ),
        ),
        (
            "clusterroles",
            "",
            cluster_role(
                "nodes",
                json!([
            {"apiGroups": [""], "resources": ["nodes"], "verbs": ["list"]}]),
            ),
        ),
        (
            "rolebindings",
            "ms-a",
            binding("RoleBinding", "b", Some("ms-a"), ("ClusterRole", "tenant")),
        ),
        (
            "clusterrolebindings",
            "",
            binding("ClusterRoleBinding", "b", None, ("ClusterRole", "nodes")),
        ),
    ]);
    let secrets = kinds::lookup("", "v1", "secrets").unwrap();
    let nodes = kinds::lookup("", "v1", "nodes").unwrap();
    let user = cp();
    assert!(
        authorize(
            &api,
            &user,
            &Attributes::resource("get", secrets, "ms-a", "s")
        )
        .is_ok()
    );
    let refused = authorize(
        &api,
        &user,
        &Attributes::resource("get", secrets, "kube-system", "s"),
    )
    .unwrap_err();
    assert_eq!(refused.code, 403);
    assert_eq!(refused.reason, "Forbidden");
    assert_eq!(
        refused.message,
        "secrets \"s\" is forbidden: User \"system:serviceaccount:minispod-system:minispod-control-plane\" \
         cannot get resource \"secrets\" in API group \"\" in the namespace \"kube-system\""
    );
    assert_eq!(
        refused.details,
        Some(json!({"name": "s", "kind": "secrets"}))
    );
    assert!(authorize(&api, &user, &Attributes::resource("list", nodes, "", "")).is_ok());
    let refused = authorize(
        &api,
        &user,
        &Attributes::resource("delete", nodes, "", "n1"),
    )
    .unwrap_err();
    assert!(
        refused
            .message
            .ends_with("cannot delete resource \"nodes\" in API group \"\" at the cluster scope")
    );
    // A ServiceAccount subject names one account; another is refused.
    let other = UserInfo::service_account("minispod-system", "someone-else");
    assert!(authorize(&api, &other, &Attributes::resource("list", nodes, "", "")).is_err());
    // Superusers pass everything; every authenticated user may discover.
    assert!(
        authorize(
            &api,
            &UserInfo::admin(),
            &Attributes::resource("delete", nodes, "", "n1")
        )
        .is_ok()
    );
    assert!(
        authorize(
            &api,
            &user,
            &Attributes::non_resource("get", "/apis/apps/v1")
        )
        .is_ok()
    );
    let refused = authorize(&api, &user, &Attributes::non_resource("get", "/metrics")).unwrap_err();
    assert_eq!(
        refused.message,
        "forbidden: User \"system:serviceaccount:minispod-system:minispod-control-plane\" cannot get path \"/metrics\""
    );
}

#[test]
fn a_binding_to_a_missing_role_says_so() {
    let api = api_with(&[(
        "clusterrolebindings",
        "",
        binding("ClusterRoleBinding", "b", None, ("ClusterRole", "gone")),
    )]);
    let refused =
        authorize(&api, &cp(), &Attributes::resource("list", pods(), "", "")).unwrap_err();
    assert!(
        refused
            .message
            .ends_with(": RBAC: [clusterroles.rbac.authorization.k8s.io \"gone\" not found]"),
        "{}",
        refused.message
    );
}

#[test]
fn bindings_need_bind_on_their_role_or_all_its_rules() {
    let api = api_with(&[
        (
            "clusterroles",
            "",
            cluster_role(
                "minispod-tenant",
                json!([
            {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["create", "patch"]}]),
            ),
        ),
        (
            "clusterroles",
            "",
            cluster_role(
                "cp",
                json!([
            {"apiGroups": [RBAC_GROUP], "resources": ["clusterroles"], "verbs": ["bind"],
             "resourceNames": ["minispod-tenant"]},
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}]),
            ),
        ),
        (
            "clusterroles",
            "",
            cluster_role(
                "pod-reader",
                json!([
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}]),
            ),
        ),
        (
            "clusterrolebindings",
            "",
            binding("ClusterRoleBinding", "cp", None, ("ClusterRole", "cp")),
        ),
    ]);
    let rolebindings = rbac_kind("rolebindings");
    let user = cp();
    let tenant = binding(
        "RoleBinding",
        "x",
        Some("ms-a"),
        ("ClusterRole", "minispod-tenant"),
    );
    assert!(check_escalation(&api, &user, rolebindings, "ms-a", "x", &tenant).is_ok());
    // Holding every rule of the role is enough without bind.
    let reader = binding(
        "RoleBinding",
        "x",
        Some("ms-a"),
        ("ClusterRole", "pod-reader"),
    );
    assert!(check_escalation(&api, &user, rolebindings, "ms-a", "x", &reader).is_ok());
    // cluster-admin: neither bind nor its rules.
    let admin = binding(
        "RoleBinding",
        "x",
        Some("ms-a"),
        ("ClusterRole", "cluster-admin"),
    );
    let refused = check_escalation(&api, &user, rolebindings, "ms-a", "x", &admin).unwrap_err();
    assert_eq!(refused.code, 403);
    assert!(refused.message.starts_with(
        "rolebindings.rbac.authorization.k8s.io \"x\" is forbidden: user \"system:serviceaccount:minispod-system:minispod-control-plane\" \
         (groups=[\"system:serviceaccounts\" \"system:serviceaccounts:minispod-system\" \"system:authenticated\"]) \
         is attempting to grant RBAC permissions not currently held:\n"
    ), "{}", refused.message);
    assert!(
        refused
            .message
            .contains("{APIGroups:[\"*\"], Resources:[\"*\"], Verbs:[\"*\"]}")
    );
    let crb = rbac_kind("clusterrolebindings");
    let admin = binding(
        "ClusterRoleBinding",
        "x",
        None,
        ("ClusterRole", "cluster-admin"),
    );
    assert!(check_escalation(&api, &user, crb, "", "x", &admin).is_err());
    // Superusers may bind anything.
    assert!(check_escalation(&api, &UserInfo::admin(), crb, "", "x", &admin).is_ok());
    // A role granting more than its writer holds is refused too.
    let clusterroles = rbac_kind("clusterroles");
    let wide = cluster_role(
        "wide",
        json!([{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]),
    );
    assert!(check_escalation(&api, &user, clusterroles, "", "wide", &wide).is_err());
    let narrow = cluster_role(
        "narrow",
        json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}]),
    );
    assert!(check_escalation(&api, &user, clusterroles, "", "narrow", &narrow).is_ok());
}

#[test]
fn covering_follows_resource_names_and_subresources() {
    let owner =
        Rule::from_json(&json!({"apiGroups": [""], "resources": ["*/log"], "verbs": ["get"]}));
    let sub =
        Rule::from_json(&json!({"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]}));
    assert!(breakdown(&sub).iter().all(|s| covers(&owner, s)));
    let named = Rule::from_json(
        &json!({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"],
        "resourceNames": ["a"]}),
    );
    let all =
        Rule::from_json(&json!({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}));
    assert!(breakdown(&named).iter().all(|s| covers(&all, s)));
    assert!(!breakdown(&all).iter().all(|s| covers(&named, s)));
}
