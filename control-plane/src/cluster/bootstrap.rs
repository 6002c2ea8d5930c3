//! A K3s join token of its own for every enrollment: a Kubernetes
//! bootstrap token (a `bootstrap.kubernetes.io/token` Secret in
//! kube-system, as `k3s token create` makes), short-lived, instead of the
//! cluster-wide token every enrollee would otherwise share.
//!
//! The token handed to the agent is K3s's secure form
//! `K10<sha256 of the cluster CA>::<id>.<secret>`, so the agent's K3s
//! checks the server it joins. Expired tokens the control plane made are
//! deleted as new ones are created (the token cleaner controller is not
//! on in every cluster).

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::{ByteString, api::core::v1::Secret};
use kube::{
    Api,
    api::{DeleteParams, ListParams, ObjectMeta, PostParams},
};
use minispod_support::{WORKER_ID_LABEL, secret::Secret as Hidden};
use rand::Rng;

use super::{ClusterLink, FIELD_MANAGER};

/// The namespace bootstrap tokens live in.
const NAMESPACE: &str = "kube-system";
/// The label that marks the tokens this control plane made.
const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "minispod");
/// The group K3s grants its node tokens: what lets a bootstrap token join.
const K3S_NODE_GROUP: &str = "system:bootstrappers:k3s:default-node-token";

/// `n` characters of [a-z0-9], as bootstrap tokens require.
fn token_chars(n: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..n)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

fn rfc3339(unix_seconds: i64) -> String {
    k8s_openapi::jiff::Timestamp::from_second(unix_seconds).map_or_else(
        |_| "1970-01-01T00:00:00Z".into(),
        |t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
    )
}

/// The bootstrap-token Secret for `id`.`secret`, expiring at `expires`.
pub fn token_secret(worker_id: &str, id: &str, secret: &str, expires: i64) -> Secret {
    let data: BTreeMap<String, ByteString> = [
        (
            "description",
            format!("MiniSpod enrollment of worker {worker_id}"),
        ),
        ("token-id", id.to_owned()),
        ("token-secret", secret.to_owned()),
        ("expiration", rfc3339(expires)),
        ("usage-bootstrap-authentication", "true".into()),
        ("usage-bootstrap-signing", "true".into()),
        ("auth-extra-groups", K3S_NODE_GROUP.into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), ByteString(v.into_bytes())))
    .collect();
    Secret {
        metadata: ObjectMeta {
            name: Some(format!("bootstrap-token-{id}")),
            namespace: Some(NAMESPACE.into()),
            labels: Some(
                [
                    (MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned()),
                    (WORKER_ID_LABEL.to_owned(), worker_id.to_owned()),
                ]
                .into(),
            ),
            ..Default::default()
        },
        type_: Some("bootstrap.kubernetes.io/token".into()),
        data: Some(data),
        ..Default::default()
    }
}

impl ClusterLink {
    /// A new K3s join token for `worker_id`, valid for `ttl`; None when no
    /// cluster is linked. An error when the API server refused or could not
    /// be reached.
    pub async fn k3s_join_token(
        &self,
        worker_id: &str,
        ttl: Duration,
    ) -> anyhow::Result<Option<Hidden>> {
        let Some(client) = self.client() else {
            return Ok(None);
        };
        let api: Api<Secret> = Api::namespaced(client.clone(), NAMESPACE);
        let (id, secret) = (token_chars(6), token_chars(16));
        let expires = crate::store::now_ms() / 1000 + ttl.as_secs() as i64;
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        api.create(&params, &token_secret(worker_id, &id, &secret, expires))
            .await?;
        tracing::info!(worker_id, token_id = %id, "created a K3s bootstrap token for the enrollment");
        // Tidy up: the tokens this control plane made that have expired.
        let link = self.clone();
        tokio::spawn(async move { link.delete_expired_tokens(api).await });
        let token = match &self.inner.cluster_ca_hash {
            Some(hash) => format!("K10{hash}::{id}.{secret}"),
            None => format!("{id}.{secret}"),
        };
        Ok(Some(Hidden::new(token)))
    }

    async fn delete_expired_tokens(&self, api: Api<Secret>) {
        let mine = ListParams::default().labels(&format!("{}={}", MANAGED_BY.0, MANAGED_BY.1));
        let Ok(list) = api.list(&mine).await else {
            return;
        };
        let now = rfc3339(crate::store::now_ms() / 1000);
        for s in list.items {
            let expiration = s
                .data
                .as_ref()
                .and_then(|d| d.get("expiration"))
                .and_then(|b| String::from_utf8(b.0.clone()).ok());
            // RFC 3339 in UTC with the same layout orders as text.
            if expiration.is_some_and(|e| e < now)
                && let Some(name) = s.metadata.name.as_deref()
                && let Err(e) = api.delete(name, &DeleteParams::default()).await
            {
                tracing::debug!(name, error = %e, "could not delete an expired bootstrap token");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_have_the_form_kubernetes_requires() {
        let (id, secret) = (token_chars(6), token_chars(16));
        assert!(id.len() == 6 && secret.len() == 16);
        assert!(
            id.chars()
                .chain(secret.chars())
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        );
        let s = token_secret("w1", &id, &secret, 1_800_000_000);
        assert_eq!(
            s.metadata.name.as_deref(),
            Some(format!("bootstrap-token-{id}").as_str())
        );
        let data = s.data.unwrap();
        assert_eq!(data["expiration"].0, b"2027-01-15T08:00:00Z");
        assert_eq!(data["token-secret"].0, secret.as_bytes());
    }
}
