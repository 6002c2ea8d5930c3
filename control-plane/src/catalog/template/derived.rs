//! The figures a catalog entry derives from its template.

use std::collections::BTreeMap;

use minispod_proto::v1 as pb;

/// What a catalog entry shows of its template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Derived {
    /// The exposed component's image.
    pub image: String,
    /// The exposed component's exposed container port.
    pub port: i32,
    /// Sum of every component's CPU request.
    pub cpu_millicores: i32,
    /// Sum of every component's memory request.
    pub memory_mb: i32,
    /// Sum of every volume's size, at least 1.
    pub storage_gb: i32,
    /// The exposed component's environment, as written.
    pub env: BTreeMap<String, String>,
}

/// The exposed component of `t`: the first that sets expose_port.
pub fn exposed(t: &pb::ServiceTemplate) -> Option<&pb::TemplateComponent> {
    t.components.iter().find(|c| !c.expose_port.is_empty())
}

/// The image and port of the exposed component, the sums of requests and
/// volume sizes (storage at least 1 GiB) and the exposed environment. Meant
/// for a template that passed [`validate`](super::validate); for another, missing pieces are
/// empty or 0.
pub fn derived(t: &pb::ServiceTemplate) -> Derived {
    let exposed = exposed(t);
    let port = exposed
        .and_then(|c| c.ports.iter().find(|p| p.name == c.expose_port))
        .map_or(0, |p| p.container_port);
    let sum = |f: fn(&pb::TemplateComponent) -> i32| {
        t.components
            .iter()
            .map(f)
            .fold(0i32, |a, b| a.saturating_add(b.max(0)))
    };
    Derived {
        image: exposed.map(|c| c.image.clone()).unwrap_or_default(),
        port,
        cpu_millicores: sum(|c| c.resources.as_ref().map_or(0, |r| r.cpu_request_millicores)),
        memory_mb: sum(|c| c.resources.as_ref().map_or(0, |r| r.memory_request_mb)),
        storage_gb: sum(|c| {
            c.volumes
                .iter()
                .fold(0i32, |a, v| a.saturating_add(v.size_gb.max(0)))
        })
        .max(1),
        env: exposed
            .map(|c| {
                c.env
                    .iter()
                    .map(|e| (e.name.clone(), e.value.clone()))
                    .collect()
            })
            .unwrap_or_default(),
    }
}
