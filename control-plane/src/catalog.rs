//! The service catalog: public browsing and administration.

pub mod fields;
pub mod queries;
pub mod seed;
pub mod template;
pub mod versions;

use minispod_proto::v1 as pb;

use crate::store::timestamp;
use queries::ServiceRow;

impl From<&ServiceRow> for pb::Service {
    fn from(s: &ServiceRow) -> Self {
        pb::Service {
            id: s.id.clone(),
            slug: s.slug.clone(),
            name: s.name.clone(),
            description: s.description.clone(),
            category: s.category.clone(),
            version: s.version.clone(),
            image: s.image.clone(),
            port: s.port,
            resources: Some(pb::ResourceRequests {
                cpu_millicores: s.cpu_millicores,
                memory_mb: s.memory_mb,
                storage_gb: s.storage_gb,
            }),
            env_template: s.env().into_iter().collect(),
            monthly_price_cents: s.monthly_price_cents,
            active: s.active,
            tags: s.tags.clone(),
            icon_url: s.icon_url.clone(),
            docs_url: s.docs_url.clone(),
            created_at: Some(timestamp(s.created_at)),
            updated_at: Some(timestamp(s.updated_at)),
            template: s.template(),
        }
    }
}
