//! Authentication by bearer token and RBAC authorization, as kube-apiserver
//! does them with `--authorization-mode=RBAC`.
//!
//! Tokens map to users (a name and groups). Every request becomes
//! authorizer attributes as kube-apiserver's `RequestInfoFactory` derives
//! them (verb from the method: get/list/watch/create/update/patch/delete;
//! the resource, subresource, namespace and name from the URL; the
//! lower-cased method and the path for non-resource URLs), and is allowed
//! when the user is in `system:masters` or a rule of a role bound to them
//! allows it: ClusterRoles through ClusterRoleBindings anywhere, Roles and
//! ClusterRoles through RoleBindings in the request's namespace. Rules
//! match as `plugin/pkg/auth/authorizer/rbac` matches them (`*` for verbs,
//! groups and resources, `*/subresource`, resourceNames, nonResourceURLs
//! with a trailing `*`). A refusal is kube-apiserver's Forbidden Status.
//!
//! Writes of RBAC objects get the registry's escalation check
//! (`pkg/registry/rbac/*/policybased`): a (Cluster)RoleBinding only with
//! `bind` on the role it references or when the writer holds every rule of
//! that role; a (Cluster)Role only with `escalate` on it or when the writer
//! holds every rule it grants.
//!
//! The stand-in starts with the bootstrap roles every cluster has and this
//! code relies on: `cluster-admin` (bound to `system:masters`),
//! `system:discovery`, `system:basic-user` and `system:public-info-viewer`
//! (bound to `system:authenticated`, which every token's user is in).

use std::collections::BTreeSet;

use http::Method;
use serde_json::{Value, json};

use crate::api::Api;
use crate::error::ApiError;
use crate::kinds::{self, Kind};
use crate::selectors::{FieldSelector, LabelSelector};

/// The group whose members pass every authorization check.
pub const SUPERUSER_GROUP: &str = "system:masters";
/// The group of every authenticated user.
pub const AUTHENTICATED_GROUP: &str = "system:authenticated";
/// The API group of RBAC objects.
pub const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

/// A user as authentication tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    /// User name (`system:serviceaccount:<namespace>:<name>` for a
    /// service account).
    pub name: String,
    /// Groups, `system:authenticated` included.
    pub groups: Vec<String>,
}

impl UserInfo {
    /// A cluster administrator, as the admin kubeconfig of K3s is
    /// (`system:admin` in `system:masters`).
    pub fn admin() -> UserInfo {
        UserInfo {
            name: "system:admin".into(),
            groups: vec![SUPERUSER_GROUP.into(), AUTHENTICATED_GROUP.into()],
        }
    }

    /// A service account's user, as its token authenticates.
    pub fn service_account(namespace: &str, name: &str) -> UserInfo {
        UserInfo {
            name: format!("system:serviceaccount:{namespace}:{name}"),
            groups: vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{namespace}"),
                AUTHENTICATED_GROUP.into(),
            ],
        }
    }

    /// Whether the user is in `system:masters`.
    pub fn is_superuser(&self) -> bool {
        self.groups.iter().any(|g| g == SUPERUSER_GROUP)
    }
}

/// What the authorizer decides on, as kube-apiserver's
/// `authorizer.AttributesRecord`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Attributes {
    /// get, list, watch, create, update, patch, delete, bind, escalate...
    /// (for non-resource requests the lower-cased HTTP method).
    pub verb: String,
    /// A request for an API resource (false: a non-resource URL).
    pub resource_request: bool,
    /// The URL path (non-resource requests).
    pub path: String,
    /// API group ("" for the core group).
    pub api_group: String,
    /// API version.
    pub api_version: String,
    /// Resource (`pods`).
    pub resource: String,
    /// Subresource (`log`, `eviction`, `status`) or "".
    pub subresource: String,
    /// Namespace, "" for cluster scope.
    pub namespace: String,
    /// Object name, "" when none.
    pub name: String,
}

impl Attributes {
    /// A resource request.
    pub fn resource(verb: &str, kind: &Kind, namespace: &str, name: &str) -> Attributes {
        Attributes {
            verb: verb.into(),
            resource_request: true,
            api_group: kind.group.into(),
            api_version: kind.version.into(),
            resource: kind.plural.into(),
            namespace: namespace.into(),
            name: name.into(),
            ..Attributes::default()
        }
    }

    /// The same with a subresource.
    pub fn with_subresource(mut self, subresource: &str) -> Attributes {
        self.subresource = subresource.into();
        self
    }

    /// A non-resource request.
    pub fn non_resource(verb: &str, path: &str) -> Attributes {
        Attributes {
            verb: verb.into(),
            path: path.into(),
            ..Attributes::default()
        }
    }

    /// The attributes of a request for `kind`, as `RequestInfoFactory`
    /// derives them: GET of a collection is list (watch with
    /// `watch=true`), and a `metadata.name=` field selector names the object.
    #[allow(clippy::too_many_arguments)]
    pub fn of_request(
        method: &Method,
        kind: &Kind,
        namespace: &str,
        name: Option<&str>,
        subresource: Option<&str>,
        watch: bool,
        field_selector: Option<&str>,
    ) -> Attributes {
        let mut name = name.unwrap_or_default().to_string();
        let verb = match *method {
            Method::GET if name.is_empty() && watch => "watch",
            Method::GET if name.is_empty() => "list",
            Method::GET if watch => "watch",
            Method::GET => "get",
            Method::POST => "create",
            Method::PUT => "update",
            Method::PATCH => "patch",
            Method::DELETE if name.is_empty() => "deletecollection",
            Method::DELETE => "delete",
            _ => "",
        };
        if name.is_empty()
            && matches!(verb, "list" | "watch")
            && let Some(selected) = field_selector.and_then(exact_name)
        {
            name = selected;
        }
        // A namespace's own URL carries it as the request's namespace too.
        let namespace = if kind == kinds::namespaces() {
            name.clone()
        } else {
            namespace.to_string()
        };
        Attributes::resource(verb, kind, &namespace, &name)
            .with_subresource(subresource.unwrap_or_default())
    }
}

/// The name a field selector requires exactly (`metadata.name=x`).
fn exact_name(selector: &str) -> Option<String> {
    selector.split(',').find_map(|term| {
        let (key, value) = term
            .split_once("==")
            .or_else(|| term.split_once('='))
            .filter(|(k, _)| !k.ends_with('!'))?;
        (key.trim() == "metadata.name" && !value.is_empty()).then(|| value.trim().to_string())
    })
}

/// One rule of a role, as `rbac/v1 PolicyRule`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rule {
    /// verbs.
    pub verbs: Vec<String>,
    /// apiGroups.
    pub api_groups: Vec<String>,
    /// resources (`pods`, `pods/log`, `*`, `*/status`).
    pub resources: Vec<String>,
    /// resourceNames.
    pub resource_names: Vec<String>,
    /// nonResourceURLs.
    pub non_resource_urls: Vec<String>,
}

fn strings(value: &Value, key: &str) -> Vec<String> {
    value[key]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

impl Rule {
    /// A rule from its JSON.
    pub fn from_json(value: &Value) -> Rule {
        Rule {
            verbs: strings(value, "verbs"),
            api_groups: strings(value, "apiGroups"),
            resources: strings(value, "resources"),
            resource_names: strings(value, "resourceNames"),
            non_resource_urls: strings(value, "nonResourceURLs"),
        }
    }

    /// The rules of a role object.
    pub fn of_role(role: &Value) -> Vec<Rule> {
        role["rules"]
            .as_array()
            .map(|rules| rules.iter().map(Rule::from_json).collect())
            .unwrap_or_default()
    }

    /// Whether the rule allows the request (`RuleAllows`).
    pub fn allows(&self, a: &Attributes) -> bool {
        let has = |list: &[String], item: &str| list.iter().any(|x| x == "*" || x == item);
        if !has(&self.verbs, &a.verb) {
            return false;
        }
        if !a.resource_request {
            return self.non_resource_urls.iter().any(|url| {
                url == "*"
                    || *url == a.path
                    || (url.ends_with('*') && a.path.starts_with(url.trim_end_matches('*')))
            });
        }
        let combined = if a.subresource.is_empty() {
            a.resource.clone()
        } else {
            format!("{}/{}", a.resource, a.subresource)
        };
        let resource = self.resources.iter().any(|r| {
            r == "*"
                || *r == combined
                || (!a.subresource.is_empty() && *r == format!("*/{}", a.subresource))
        });
        has(&self.api_groups, &a.api_group)
            && resource
            && (self.resource_names.is_empty() || self.resource_names.contains(&a.name))
    }

    /// `CompactString`: how kube-apiserver prints a rule in escalation
    /// errors.
    fn compact(&self) -> String {
        let quoted = |l: &[String]| {
            let items: Vec<String> = l.iter().map(|s| format!("{s:?}")).collect();
            format!("[{}]", items.join(" "))
        };
        let mut parts = Vec::new();
        for (label, list) in [
            ("APIGroups", &self.api_groups),
            ("Resources", &self.resources),
            ("NonResourceURLs", &self.non_resource_urls),
            ("ResourceNames", &self.resource_names),
            ("Verbs", &self.verbs),
        ] {
            if !list.is_empty() {
                parts.push(format!("{label}:{}", quoted(list)));
            }
        }
        format!("{{{}}}", parts.join(", "))
    }
}

fn subject_applies(user: &UserInfo, subject: &Value, binding_namespace: &str) -> bool {
    let name = subject["name"].as_str().unwrap_or_default();
    match subject["kind"].as_str() {
        Some("User") => user.name == name,
        Some("Group") => user.groups.iter().any(|g| g == name),
        Some("ServiceAccount") => {
            let ns = subject["namespace"]
                .as_str()
                .filter(|n| !n.is_empty())
                .unwrap_or(binding_namespace);
            !ns.is_empty() && user.name == format!("system:serviceaccount:{ns}:{name}")
        }
        _ => false,
    }
}

fn bound(user: &UserInfo, binding: &Value, namespace: &str) -> bool {
    binding["subjects"]
        .as_array()
        .is_some_and(|s| s.iter().any(|s| subject_applies(user, s, namespace)))
}

fn rbac_kind(plural: &str) -> &'static Kind {
    kinds::lookup(RBAC_GROUP, "v1", plural).expect("RBAC kinds are in the table")
}

fn all(api: &Api, plural: &str, namespace: Option<&str>) -> Vec<Value> {
    let everything = LabelSelector::parse("").expect("the empty selector parses");
    let fields = FieldSelector::parse("").expect("the empty selector parses");
    api.list(rbac_kind(plural), namespace, &everything, &fields)["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The rules of the role a binding references (in `namespace` for a
/// RoleBinding's Role); Err names what is missing as kube-apiserver does.
fn role_rules(api: &Api, role_ref: &Value, namespace: &str) -> Result<Vec<Rule>, String> {
    let name = role_ref["name"].as_str().unwrap_or_default();
    let (plural, ns) = match role_ref["kind"].as_str() {
        Some("Role") => ("roles", namespace),
        Some("ClusterRole") => ("clusterroles", ""),
        other => return Err(format!("unknown role reference kind: {other:?}")),
    };
    api.get(rbac_kind(plural), ns, name)
        .map(|role| Rule::of_role(&role))
        .map_err(|e| e.message)
}

/// Every rule that applies to `user` in `namespace` ("" for cluster
/// scope), and the errors met resolving them (bindings to missing roles).
pub fn rules_for(api: &Api, user: &UserInfo, namespace: &str) -> (Vec<Rule>, Vec<String>) {
    let mut rules = Vec::new();
    let mut errors = Vec::new();
    for binding in all(api, "clusterrolebindings", None) {
        if bound(user, &binding, "") {
            match role_rules(api, &binding["roleRef"], "") {
                Ok(r) => rules.extend(r),
                Err(e) => errors.push(e),
            }
        }
    }
    if !namespace.is_empty() {
        for binding in all(api, "rolebindings", Some(namespace)) {
            if bound(user, &binding, namespace) {
                match role_rules(api, &binding["roleRef"], namespace) {
                    Ok(r) => rules.extend(r),
                    Err(e) => errors.push(e),
                }
            }
        }
    }
    (rules, errors)
}

/// Whether `user` may do what `a` describes; Err: the reason RBAC gives
/// (empty unless bindings name missing roles).
pub fn allowed(api: &Api, user: &UserInfo, a: &Attributes) -> Result<(), String> {
    if user.is_superuser() {
        return Ok(());
    }
    let (rules, errors) = rules_for(api, user, &a.namespace);
    if rules.iter().any(|r| r.allows(a)) {
        return Ok(());
    }
    if errors.is_empty() {
        Err(String::new())
    } else {
        Err(format!("RBAC: [{}]", errors.join(", ")))
    }
}

/// `Forbidden` for a request the authorizer refused, with kube-apiserver's
/// message (`responsewriters.Forbidden`).
pub fn forbidden(user: &UserInfo, a: &Attributes, reason: &str) -> ApiError {
    let who = &user.name;
    let message = if !a.resource_request {
        format!("User {who:?} cannot {} path {:?}", a.verb, a.path)
    } else {
        let resource = if a.subresource.is_empty() {
            a.resource.clone()
        } else {
            format!("{}/{}", a.resource, a.subresource)
        };
        if a.namespace.is_empty() {
            format!(
                "User {who:?} cannot {} resource {resource:?} in API group {:?} at the cluster scope",
                a.verb, a.api_group
            )
        } else {
            format!(
                "User {who:?} cannot {} resource {resource:?} in API group {:?} in the namespace {:?}",
                a.verb, a.api_group, a.namespace
            )
        }
    };
    let message = if reason.is_empty() {
        message
    } else {
        format!("{message}: {reason}")
    };
    let resource = if a.resource_request {
        a.resource.as_str()
    } else {
        ""
    };
    forbidden_status(&a.api_group, resource, &a.name, &message)
}

/// `errors.NewForbidden(groupResource, name, err)`.
pub fn forbidden_status(group: &str, resource: &str, name: &str, why: &str) -> ApiError {
    let qualified = if group.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
    };
    let message = if qualified.is_empty() {
        format!("forbidden: {why}")
    } else if name.is_empty() {
        format!("{qualified} is forbidden: {why}")
    } else {
        format!("{qualified} {name:?} is forbidden: {why}")
    };
    let mut details = json!({});
    if !name.is_empty() {
        details["name"] = json!(name);
    }
    if !group.is_empty() {
        details["group"] = json!(group);
    }
    if !resource.is_empty() {
        details["kind"] = json!(resource);
    }
    ApiError::forbidden(message, details)
}

/// The authorization filter: Ok when allowed, else 403 Forbidden.
pub fn authorize(api: &Api, user: &UserInfo, a: &Attributes) -> Result<(), ApiError> {
    allowed(api, user, a).map_err(|reason| forbidden(user, a, &reason))
}

/// The second check a server-side apply (or PUT) that creates its object
/// gets: `create` on it (`withAuthorization` in the handlers); refused with
/// `<resource> "<name>" is forbidden: <RBAC reason>`.
pub fn authorize_create_on_write(
    api: &Api,
    user: &UserInfo,
    kind: &Kind,
    namespace: &str,
    name: &str,
) -> Result<(), ApiError> {
    let a = Attributes::resource("create", kind, namespace, name);
    allowed(api, user, &a)
        .map_err(|reason| forbidden_status(kind.group, kind.plural, name, &reason))
}

/// One rule per verb, group, resource and name (or URL): what `Covers`
/// compares.
fn breakdown(rule: &Rule) -> Vec<Rule> {
    let mut out = Vec::new();
    for verb in &rule.verbs {
        for group in &rule.api_groups {
            for resource in &rule.resources {
                let names: Vec<Vec<String>> = if rule.resource_names.is_empty() {
                    vec![Vec::new()]
                } else {
                    rule.resource_names
                        .iter()
                        .map(|n| vec![n.clone()])
                        .collect()
                };
                for names in names {
                    out.push(Rule {
                        verbs: vec![verb.clone()],
                        api_groups: vec![group.clone()],
                        resources: vec![resource.clone()],
                        resource_names: names,
                        ..Rule::default()
                    });
                }
            }
        }
        for url in &rule.non_resource_urls {
            out.push(Rule {
                verbs: vec![verb.clone()],
                non_resource_urls: vec![url.clone()],
                ..Rule::default()
            });
        }
    }
    out
}

/// `ruleCovers` for a broken-down rule.
fn covers(owner: &Rule, sub: &Rule) -> bool {
    let has_all =
        |set: &[String], items: &[String]| items.iter().all(|i| set.iter().any(|s| s == i));
    let star = |set: &[String]| set.iter().any(|s| s == "*");
    let verbs = star(&owner.verbs) || has_all(&owner.verbs, &sub.verbs);
    let groups = star(&owner.api_groups) || has_all(&owner.api_groups, &sub.api_groups);
    let resources = star(&owner.resources)
        || sub.resources.iter().all(|path| {
            owner.resources.contains(path)
                || path
                    .split_once('/')
                    .is_some_and(|(_, sub)| owner.resources.contains(&format!("*/{sub}")))
        });
    let urls = sub.non_resource_urls.iter().all(|url| {
        owner
            .non_resource_urls
            .iter()
            .any(|o| o == url || (o.ends_with('*') && url.starts_with(o.trim_end_matches('*'))))
    });
    let names = owner.resource_names.is_empty()
        || (!sub.resource_names.is_empty() && has_all(&owner.resource_names, &sub.resource_names));
    verbs && groups && resources && urls && names
}

/// `ConfirmNoEscalation`: Ok when `user` holds every rule of `rules` in
/// `namespace`, else the message naming what they lack.
fn confirm_no_escalation(
    api: &Api,
    user: &UserInfo,
    namespace: &str,
    rules: &[Rule],
) -> Result<(), String> {
    let (owned, errors) = rules_for(api, user, namespace);
    let missing: BTreeSet<String> = rules
        .iter()
        .flat_map(breakdown)
        .filter(|sub| !owned.iter().any(|o| covers(o, sub)))
        .map(|r| r.compact())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let groups: Vec<String> = user.groups.iter().map(|g| format!("{g:?}")).collect();
    let mut message = format!(
        "user {:?} (groups=[{}]) is attempting to grant RBAC permissions not currently held:\n{}",
        user.name,
        groups.join(" "),
        missing.into_iter().collect::<Vec<_>>().join("\n")
    );
    if !errors.is_empty() {
        message.push_str(&format!("; resolution errors: [{}]", errors.join(", ")));
    }
    Err(message)
}

/// The escalation check of the RBAC registry on a write of a Role,
/// ClusterRole, RoleBinding or ClusterRoleBinding named `name` in
/// `namespace` whose new content is `object`. Other kinds pass.
pub fn check_escalation(
    api: &Api,
    user: &UserInfo,
    kind: &Kind,
    namespace: &str,
    name: &str,
    object: &Value,
) -> Result<(), ApiError> {
    if kind.group != RBAC_GROUP || user.is_superuser() {
        return Ok(());
    }
    let refuse = |why: String| forbidden_status(kind.group, kind.plural, name, &why);
    match kind.plural {
        "rolebindings" | "clusterrolebindings" => {
            let role_ref = &object["roleRef"];
            let role_plural = match role_ref["kind"].as_str() {
                Some("Role") => "roles",
                _ => "clusterroles",
            };
            let bind = Attributes::resource(
                "bind",
                rbac_kind(role_plural),
                namespace,
                role_ref["name"].as_str().unwrap_or_default(),
            );
            if allowed(api, user, &bind).is_ok() {
                return Ok(());
            }
            let rules = role_rules(api, role_ref, namespace).map_err(refuse)?;
            confirm_no_escalation(api, user, namespace, &rules).map_err(refuse)
        }
        "roles" | "clusterroles" => {
            let escalate = Attributes::resource("escalate", kind, namespace, name);
            if allowed(api, user, &escalate).is_ok() {
                return Ok(());
            }
            confirm_no_escalation(api, user, namespace, &Rule::of_role(object)).map_err(refuse)
        }
        _ => Ok(()),
    }
}

/// The bootstrap roles and bindings a cluster starts with, as far as the
/// stand-in's users need them.
pub fn bootstrap_objects() -> Vec<(&'static str, Value)> {
    let labels = json!({"kubernetes.io/bootstrapping": "rbac-defaults"});
    let annotations = json!({"rbac.authorization.kubernetes.io/autoupdate": "true"});
    let role = |name: &str, rules: Value| {
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": name, "labels": labels, "annotations": annotations},
            "rules": rules})
    };
    let binding = |name: &str, groups: &[&str]| {
        let subjects: Vec<Value> = groups
            .iter()
            .map(|g| json!({"apiGroup": RBAC_GROUP, "kind": "Group", "name": g}))
            .collect();
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": name, "labels": labels, "annotations": annotations},
            "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": name},
            "subjects": subjects})
    };
    vec![
        (
            "clusterroles",
            role(
                "cluster-admin",
                json!([{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
                    {"nonResourceURLs": ["*"], "verbs": ["*"]}]),
            ),
        ),
        (
            "clusterroles",
            role(
                "system:discovery",
                json!([{"nonResourceURLs": ["/api", "/api/*", "/apis", "/apis/*", "/healthz",
                    "/livez", "/openapi", "/openapi/*", "/readyz", "/version", "/version/"],
                    "verbs": ["get"]}]),
            ),
        ),
        (
            "clusterroles",
            role(
                "system:basic-user",
                json!([{"apiGroups": ["authentication.k8s.io"], "resources": ["selfsubjectreviews"], "verbs": ["create"]},
                    {"apiGroups": ["authorization.k8s.io"],
                     "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"], "verbs": ["create"]}]),
            ),
        ),
        (
            "clusterroles",
            role(
                "system:public-info-viewer",
                json!([{"nonResourceURLs": ["/healthz", "/livez", "/readyz", "/version", "/version/"],
                    "verbs": ["get"]}]),
            ),
        ),
        (
            "clusterrolebindings",
            binding("cluster-admin", &[SUPERUSER_GROUP]),
        ),
        (
            "clusterrolebindings",
            binding("system:discovery", &[AUTHENTICATED_GROUP]),
        ),
        (
            "clusterrolebindings",
            binding("system:basic-user", &[AUTHENTICATED_GROUP]),
        ),
        (
            "clusterrolebindings",
            binding(
                "system:public-info-viewer",
                &[AUTHENTICATED_GROUP, "system:unauthenticated"],
            ),
        ),
    ]
}

/// Creates the bootstrap roles and bindings in a new store.
pub fn bootstrap(api: &mut Api) {
    for (plural, object) in bootstrap_objects() {
        api.create(rbac_kind(plural), "", object, "kube-apiserver")
            .expect("the bootstrap RBAC objects are valid");
    }
}

#[cfg(test)]
mod tests;
