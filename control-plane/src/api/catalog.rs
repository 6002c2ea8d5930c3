//! CatalogService: public browsing of active services, administration of all.

use std::collections::BTreeMap;

use minispod_proto::v1::{self as pb, catalog_service_server::CatalogService};
use tonic::{Request, Response, Status};

use super::access::{caller, maybe_caller};
use crate::catalog::{
    fields::ServiceSpec,
    queries::{self as catalog_db, Lookup, ServiceFilter},
    versions,
};
use crate::{
    auth::AuthState,
    error::{AppError, AppResult, Violations},
    store::Page,
};

/// The gRPC CatalogService.
#[derive(Debug, Clone)]
pub struct CatalogApi {
    auth: AuthState,
}

impl CatalogApi {
    /// The service over `auth`.
    pub fn new(auth: AuthState) -> Self {
        CatalogApi { auth }
    }

    async fn list(
        &self,
        page_size: i32,
        page_token: &str,
        filter: ServiceFilter,
    ) -> AppResult<(Vec<pb::Service>, String, i64)> {
        let page = Page::parse(page_size, page_token)?;
        if filter.search.chars().count() > 200 {
            return Err(AppError::invalid(
                "search",
                "must be at most 200 characters",
            ));
        }
        if filter.tags.len() > 20 {
            return Err(AppError::invalid("tags", "at most 20 tags per filter"));
        }
        let (rows, total) = catalog_db::list(&self.auth.db, &filter, page).await?;
        Ok((
            rows.iter().map(Into::into).collect(),
            page.next_token(total),
            total,
        ))
    }

    async fn update(&self, req: Request<pb::UpdateServiceRequest>) -> AppResult<pb::Service> {
        let r = req.into_inner();
        if r.id.is_empty() {
            return Err(AppError::invalid("id", "is required"));
        }
        let current = catalog_db::get(&self.auth.db, Lookup::Id(&r.id), false).await?;
        let given = Given {
            image: r.image.clone(),
            port: r.port,
            resources: r.resources,
            env_template: r
                .env_template
                .as_ref()
                .map(|e| e.entries.clone().into_iter().collect()),
        };
        let mut spec = current.spec();
        macro_rules! set {
            ($($field:ident),*) => { $( if let Some(v) = r.$field { spec.$field = v; } )* };
        }
        set!(
            slug,
            name,
            description,
            category,
            version,
            image,
            port,
            monthly_price_cents,
            active,
            icon_url,
            docs_url
        );
        if let Some(res) = r.resources {
            spec.cpu_millicores = res.cpu_millicores;
            spec.memory_mb = res.memory_mb;
            spec.storage_gb = res.storage_gb;
        }
        if let Some(env) = r.env_template {
            spec.env_template = env.entries.into_iter().collect();
        }
        if let Some(tags) = r.tags {
            spec.tags = tags.values;
        }
        if let Some(template) = r.template {
            spec.template = Some(template);
        }
        let spec = spec.validated()?;
        given.check(&spec)?;
        let mut tx = self.auth.db.begin().await?;
        if !catalog_db::update(&mut tx, &r.id, &spec).await? {
            return Err(AppError::NotFound(format!("no service with id {:?}", r.id)));
        }
        tx.commit().await?;
        let row = catalog_db::get(&self.auth.db, Lookup::Id(&r.id), false).await?;
        Ok((&row).into())
    }
}

/// The fields a request gave that a template derives.
struct Given {
    image: Option<String>,
    port: Option<i32>,
    resources: Option<pb::ResourceRequests>,
    env_template: Option<BTreeMap<String, String>>,
}

impl Given {
    /// With a template, image, port, resources and env_template come from
    /// it: a request may leave them unset or repeat what the template gives,
    /// but a different value is refused rather than silently replaced.
    fn check(&self, spec: &ServiceSpec) -> AppResult<()> {
        if spec.template.is_none() {
            return Ok(());
        }
        let mut v = Violations::new();
        let why = "is derived from the template: leave it unset or change the template";
        if self.image.as_ref().is_some_and(|i| *i != spec.image) {
            v.add("image", why);
        }
        if self.port.is_some_and(|p| p != spec.port) {
            v.add("port", why);
        }
        if self.resources.is_some_and(|r| {
            (r.cpu_millicores, r.memory_mb, r.storage_gb)
                != (spec.cpu_millicores, spec.memory_mb, spec.storage_gb)
        }) {
            v.add("resources", why);
        }
        if self
            .env_template
            .as_ref()
            .is_some_and(|e| *e != spec.env_template)
        {
            v.add("env_template", why);
        }
        v.finish()
    }
}

fn lookup(r: &pb::GetServiceRequest) -> AppResult<Lookup<'_>> {
    match &r.lookup {
        Some(pb::get_service_request::Lookup::Id(id)) if !id.is_empty() => Ok(Lookup::Id(id)),
        Some(pb::get_service_request::Lookup::Slug(s)) if !s.is_empty() => Ok(Lookup::Slug(s)),
        _ => Err(AppError::invalid("lookup", "give an id or a slug")),
    }
}

fn clean_tags(tags: Vec<String>) -> Vec<String> {
    tags.into_iter()
        .map(|t| t.trim().to_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

#[tonic::async_trait]
impl CatalogService for CatalogApi {
    async fn list_services(
        &self,
        request: Request<pb::ListServicesRequest>,
    ) -> Result<Response<pb::ListServicesResponse>, Status> {
        let r = request.into_inner();
        let filter = ServiceFilter {
            search: r.search.trim().to_owned(),
            category: r.category.trim().to_lowercase(),
            tags: clean_tags(r.tags),
            active: Some(true),
        };
        let (services, next_page_token, total_size) =
            self.list(r.page_size, &r.page_token, filter).await?;
        Ok(Response::new(pb::ListServicesResponse {
            services,
            next_page_token,
            total_size,
        }))
    }

    async fn get_service(
        &self,
        request: Request<pb::GetServiceRequest>,
    ) -> Result<Response<pb::GetServiceResponse>, Status> {
        // Administrators also see inactive services (to edit or re-activate
        // them); everyone else, token or not, only active ones.
        // (The access layer ignored a bad or expired token: no caller.)
        let active_only =
            maybe_caller(&request).is_none_or(|u| u.role() != pb::Role::Administrator);
        let r = request.get_ref();
        let row = catalog_db::get(&self.auth.db, lookup(r)?, active_only).await?;
        Ok(Response::new(pb::GetServiceResponse {
            service: Some((&row).into()),
        }))
    }

    async fn list_categories(
        &self,
        _request: Request<pb::ListCategoriesRequest>,
    ) -> Result<Response<pb::ListCategoriesResponse>, Status> {
        let categories = catalog_db::categories(&self.auth.db, true).await?;
        Ok(Response::new(pb::ListCategoriesResponse {
            categories: categories
                .into_iter()
                .map(|(name, service_count)| pb::Category {
                    name,
                    service_count,
                })
                .collect(),
        }))
    }

    async fn create_service(
        &self,
        request: Request<pb::CreateServiceRequest>,
    ) -> Result<Response<pb::CreateServiceResponse>, Status> {
        let admin = caller(&request)?;
        let r = request.into_inner();
        // With a template, image, port and resources are derived from it.
        let res = match r.resources {
            Some(res) => res,
            None if r.template.is_some() => pb::ResourceRequests::default(),
            None => return Err(AppError::invalid("resources", "is required").into()),
        };
        let given = Given {
            image: Some(r.image.clone()).filter(|i| !i.is_empty()),
            port: Some(r.port).filter(|p| *p != 0),
            resources: r.resources,
            env_template: Some(r.env_template.clone().into_iter().collect())
                .filter(|e: &BTreeMap<_, _>| !e.is_empty()),
        };
        let spec = ServiceSpec {
            slug: r.slug,
            name: r.name,
            description: r.description,
            category: r.category,
            version: r.version,
            image: r.image,
            port: r.port,
            cpu_millicores: res.cpu_millicores,
            memory_mb: res.memory_mb,
            storage_gb: res.storage_gb,
            env_template: r.env_template.into_iter().collect(),
            monthly_price_cents: r.monthly_price_cents,
            active: r.active,
            tags: r.tags,
            icon_url: r.icon_url,
            docs_url: r.docs_url,
            template: r.template,
        }
        .validated()?;
        given.check(&spec)?;
        let mut tx = self.auth.db.begin().await?;
        let id = catalog_db::insert(&mut tx, &spec).await?;
        tx.commit().await.map_err(AppError::from)?;
        tracing::info!(by = %admin.id, service_id = %id, slug = %spec.slug, "catalog service created");
        let row = catalog_db::get(&self.auth.db, Lookup::Id(&id), false).await?;
        Ok(Response::new(pb::CreateServiceResponse {
            service: Some((&row).into()),
        }))
    }

    async fn update_service(
        &self,
        request: Request<pb::UpdateServiceRequest>,
    ) -> Result<Response<pb::UpdateServiceResponse>, Status> {
        let service = self.update(request).await?;
        Ok(Response::new(pb::UpdateServiceResponse {
            service: Some(service),
        }))
    }

    async fn delete_service(
        &self,
        request: Request<pb::DeleteServiceRequest>,
    ) -> Result<Response<pb::DeleteServiceResponse>, Status> {
        let admin = caller(&request)?;
        let id = &request.get_ref().id;
        if id.is_empty() {
            return Err(AppError::invalid("id", "is required").into());
        }
        let mut tx = self.auth.db.begin().await.map_err(Status::from)?;
        let subscribed = crate::subscriptions::queries::count_for_service(&mut tx, id).await?;
        if subscribed > 0 {
            return Err(AppError::FailedPrecondition(format!(
                "{subscribed} subscription(s) run this service: deactivate it instead, or delete \
                 them first"
            ))
            .into());
        }
        if !catalog_db::delete(&mut tx, id).await? {
            return Err(AppError::NotFound(format!("no service with id {id:?}")).into());
        }
        tx.commit().await.map_err(AppError::from)?;
        tracing::info!(by = %admin.id, service_id = %id, "catalog service deleted");
        Ok(Response::new(pb::DeleteServiceResponse {}))
    }

    async fn list_all_services(
        &self,
        request: Request<pb::ListAllServicesRequest>,
    ) -> Result<Response<pb::ListAllServicesResponse>, Status> {
        let r = request.into_inner();
        let filter = ServiceFilter {
            search: r.search.trim().to_owned(),
            category: r.category.trim().to_lowercase(),
            tags: clean_tags(r.tags),
            active: r.active,
        };
        let (services, next_page_token, total_size) =
            self.list(r.page_size, &r.page_token, filter).await?;
        Ok(Response::new(pb::ListAllServicesResponse {
            services,
            next_page_token,
            total_size,
        }))
    }

    async fn publish_service_version(
        &self,
        request: Request<pb::PublishServiceVersionRequest>,
    ) -> Result<Response<pb::PublishServiceVersionResponse>, Status> {
        let admin = caller(&request)?;
        let (version, service) = versions::publish(&self.auth.db, request.into_inner()).await?;
        tracing::info!(by = %admin.id, service_id = %service.id, version = %version.version,
            "catalog version published");
        Ok(Response::new(pb::PublishServiceVersionResponse {
            version: Some(version.to_pb(0)),
            service: Some((&service).into()),
        }))
    }

    async fn withdraw_service_version(
        &self,
        request: Request<pb::WithdrawServiceVersionRequest>,
    ) -> Result<Response<pb::WithdrawServiceVersionResponse>, Status> {
        let admin = caller(&request)?;
        let version = versions::withdraw_version(&self.auth.db, request.get_ref()).await?;
        tracing::info!(by = %admin.id, service_id = %request.get_ref().service_id,
            version = %version.version, "catalog version withdrawn");
        Ok(Response::new(pb::WithdrawServiceVersionResponse {
            version: Some(version),
        }))
    }

    async fn list_service_versions(
        &self,
        request: Request<pb::ListServiceVersionsRequest>,
    ) -> Result<Response<pb::ListServiceVersionsResponse>, Status> {
        let versions =
            versions::list_versions(&self.auth.db, &request.get_ref().service_id).await?;
        Ok(Response::new(pb::ListServiceVersionsResponse { versions }))
    }

    async fn get_catalog_stats(
        &self,
        _request: Request<pb::GetCatalogStatsRequest>,
    ) -> Result<Response<pb::GetCatalogStatsResponse>, Status> {
        let (total, active, average) = catalog_db::totals(&self.auth.db).await?;
        let categories = catalog_db::categories(&self.auth.db, false).await?;
        Ok(Response::new(pb::GetCatalogStatsResponse {
            total,
            active,
            inactive: total - active,
            categories: categories
                .into_iter()
                .map(|(name, service_count)| pb::Category {
                    name,
                    service_count,
                })
                .collect(),
            average_monthly_price_cents: average,
        }))
    }
}
