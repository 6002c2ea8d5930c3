//! An in-process stand-in for kube-apiserver, and `TestCluster`, which cluster
//! tests use to run against it or against a real cluster unchanged.
//!
//! The stand-in aims to answer every request the control plane makes as
//! kube-apiserver would, so that a request failing here fails on a cluster
//! and the other way round. Faithful: URL layout, bearer-token auth (401),
//! RBAC authorization (see `rbac`: ClusterRoles, ClusterRoleBindings,
//! Roles and RoleBindings served and evaluated on every request, with
//! subresources, resourceNames, nonResourceURLs, the bootstrap discovery
//! roles, 403 Forbidden with kube-apiserver's message, `create` checked on
//! an apply that creates, the escalation check on writing roles and
//! bindings), `Status` errors with kube-apiserver's reasons, codes and messages, one
//! global resourceVersion, uid/creationTimestamp/generation/generateName,
//! label and field selectors, watches (replay from a bounded history, 410
//! Expired beyond it, selector transitions as ADDED/DELETED, bookmarks,
//! `sendInitialEvents`, `timeoutSeconds`), optimistic concurrency (409),
//! merge patch, server-side apply with per-manager field ownership,
//! conflicts and `force`, managedFields, `/status` subresources, the
//! eviction subresource with PodDisruptionBudgets whose status the stand-in
//! keeps as the disruption controller would, pod logs (`pods/{name}/log`
//! with container, tailLines, sinceSeconds/sinceTime, timestamps,
//! limitBytes and a chunked `follow`), and the work of kube-controller-
//! manager, kube-scheduler and the kubelets on workloads, written through
//! the store so watches see every step (see `controllers`):
//! Deployment → ReplicaSet (`<name>-<pod-template-hash>`, revision
//! annotations) → Pods (`<rs>-<5 chars>`), StatefulSet → Pods
//! (`<name>-<ordinal>`, OrderedReady or Parallel, claims from
//! volumeClaimTemplates), scale up and down, template changes, status of
//! all three, garbage collection of pods and ReplicaSets whose owner is
//! gone; a scheduler (cordons, NoSchedule
//! and NoExecute taints with toleration matching, nodeSelector, cpu, memory
//! and pod count against allocatable, least requested first, `0/N nodes are
//! available: ...` when nothing fits, retried on every change); a kubelet
//! for the pods it bound (ContainerCreating, then Running and Ready after
//! `Settings::pod_ready_delay`, or ErrImagePull then ImagePullBackOff for
//! images made unpullable, or Running and never Ready for images whose
//! readiness probe is made to fail); the node lifecycle controller's Ready=False on
//! pods of nodes whose Ready is not True; the taint manager's eviction for
//! untolerated NoExecute taints (after `tolerationSeconds` when tolerated
//! for a while); PVCs given their first pod's node
//! (`volume.kubernetes.io/selected-node`, as for K3s's WaitForFirstConsumer
//! `local-path` class) and then Bound at their requested size; ResourceQuota
//! `status.hard` and `status.used`.
//!
//! Deliberate differences:
//! - DELETE of a pod bound to a node and not finished is graceful, as
//!   kube-apiserver's (`api::Api::delete`): the pod stays Terminating until
//!   a kubelet deletes it with `gracePeriodSeconds=0`: the stand-in's, 200
//!   ms later, for the pods its scheduler bound on a node that is Ready or
//!   gone; the fixture kubelet of `TestCluster` for pods on the test's
//!   nodes. The grace period itself is never waited out (a real kubelet
//!   kills at its end), and a pod on a node that is not Ready stays
//!   Terminating (no pod GC, no `out-of-service` taint). Other kinds go at
//!   once; objects with finalizers get a deletionTimestamp and go when the
//!   last finalizer is removed. A deleted namespace is Terminating (new
//!   content refused as NamespaceLifecycle does) while the namespace
//!   controller deletes its objects, then goes. `propagationPolicy` is
//!   ignored: dependents always go in the background (Orphan and
//!   Foreground behave as Background).
//! - Both Deployment strategies roll out as Recreate (old ReplicaSets to
//!   zero, new pods once the old are gone); RollingUpdate's maxSurge is not
//!   used. `paused` stops scaling. Pods of an old ReplicaSet are not
//!   adopted or orphaned by selector, only by owner uid. There are no
//!   ControllerRevision objects (StatefulSets' revisions are only labels
//!   and status), no DaemonSets, Jobs or HorizontalPodAutoscalers at work.
//!   ReplicaSets are reused only when their template hash matches (no
//!   revision bump on a rollback to an old ReplicaSet). Progressing turns
//!   False (ProgressDeadlineExceeded) when no replica count moved for
//!   `progressDeadlineSeconds`, whole seconds as the condition times.
//! - The kubelet runs only pods the stand-in's scheduler bound: pods created
//!   with `spec.nodeName` set (the fixtures' `create_pod`) keep the status
//!   their creator writes. Containers never exit or restart (restartCount
//!   stays 0; no liveness or readiness probes, no init containers run, no
//!   CrashLoopBackOff, `previous` logs never exist). ImagePullBackOff
//!   stays once reached (a real kubelet retries, showing ErrImagePull
//!   again); its message is `Back-off pulling image "<image>"` without the
//!   error some kubelet versions append. Pod IPs are made up, hostIP is the
//!   node's InternalIP or 10.0.0.1.
//! - Nodes never go NotReady on their own. A new Node gets the
//!   `node.kubernetes.io/not-ready:NoSchedule` taint (TaintNodesByCondition
//!   admission) and the node lifecycle controller keeps `not-ready` (Ready
//!   False or missing) or `unreachable` (Unknown) NoSchedule on it until
//!   it is Ready; its pods get Ready=False, but nothing is evicted from it
//!   (a real cluster adds NoExecute taints too and evicts after the
//!   default 300 s tolerations, which the stand-in does not add to pods).
//!   Pods bound to a deleted node stay, unless Terminating.
//! - The serviceaccount controller creates a namespace's `default`
//!   ServiceAccount 100 ms after the namespace appears (the initial
//!   namespaces have theirs); until then the ServiceAccount admission
//!   plugin refuses the namespace's pods with 403, and a pod without
//!   `serviceAccountName` gets `default` (no token volume is mounted).
//! - The garbage collector deletes pods and ReplicaSets all of whose
//!   owners are gone, for owners of any kind the stand-in serves (owners
//!   of other kinds keep their dependents); it does not remove dangling
//!   references from dependents that still have an owner.
//! - Scheduling looks at cpu, memory and pod count only (no extended
//!   resources, ephemeral storage, ports, affinity/anti-affinity, topology
//!   spread, volume topology, priorities or preemption; the message's
//!   "preemption:" part is what a cluster without priorities says).
//! - Admission is NamespaceLifecycle's refusal in a terminating namespace,
//!   ServiceAccount's (above), TaintNodesByCondition's and Pod Security
//!   (`admission`): a pod created (POST or
//!   server-side apply) in a namespace labelled
//!   `pod-security.kubernetes.io/enforce: baseline|restricted` is refused
//!   with kube-apiserver's 403 message, and a ReplicaSet whose pod is
//!   refused gets ReplicaFailure/FailedCreate (copied to its Deployment);
//!   a StatefulSet just gets no pod (no Events are served). Checks are the
//!   latest version's whatever `enforce-version` says, without
//!   appArmorProfile, seLinuxOptions, procMount and windowsHostProcess;
//!   `warn`/`audit`, exemptions and pod updates are not evaluated.
//!   ResourceQuotas and LimitRanges are stored and quotas' status kept, but
//!   nothing over quota is refused and no default requests or limits are
//!   filled in. `status.used` counts pods, cpu and memory
//!   requests and limits of pods not finished, PVCs and their requested
//!   storage, services, secrets, configmaps and `count/<resource>` for kinds
//!   the stand-in serves; other quota resources are left out of `used`.
//!   NetworkPolicies are stored, not enforced.
//! - PVCs are provisioned as K3s's local-path provisions them once the
//!   scheduler gave them a node: a PersistentVolume `pvc-<uid>` with a
//!   hostPath directory on that node (a real directory under
//!   `Settings::storage_root` when set), node affinity, reclaim policy
//!   Delete; the claim gets `spec.volumeName` and turns Bound with its
//!   requested capacity. Claims are never resized, and every claim binds
//!   on first use, as if every storage class were WaitForFirstConsumer.
//!   Claims and volumes carry their protection finalizers: a deleted claim
//!   stays Terminating while a pod not finished names it, and its volume
//!   (and directory) goes once the claim is gone.
//! - Server-side apply treats every list as atomic (kube merges
//!   list-type=map lists such as containers, env or ports by key).
//! - No OpenAPI validation: unknown or mistyped fields are stored as sent.
//!   Dumps (`MINISPOD_KUBE_REQUEST_DIR`) with `kubernetes-validate` cover
//!   that.
//! - LIST ignores `limit` and returns everything without a continue token
//!   (allowed by the API conventions); `resourceVersion` on GET/LIST is
//!   ignored (the latest state is served).
//! - Strategic merge patch, JSON patch, dryRun, deletecollection, YAML
//!   and protobuf bodies are refused (415/400/405). There is no `binding`,
//!   `exec`, `attach`, `portforward` or `scale` subresource.
//! - Authentication knows two bearer tokens: an administrator
//!   (`system:admin` in `system:masters`) and the control plane's
//!   ServiceAccount (`system:serviceaccount:minispod-system:
//!   minispod-control-plane`); no client certificates, TokenRequest,
//!   TokenReview, SelfSubjectReview or access reviews, no impersonation.
//!   RBAC is the only authorizer (no Node authorizer); aggregated
//!   ClusterRoles (`aggregationRule`) are not filled in; a request to an
//!   unknown path gets 404 before authorization (kube-apiserver answers
//!   403 to a user who may not see it). Escalation errors list the missing
//!   rules one verb at a time (kube-apiserver compacts them).
//! - A PDB's expected pod count is the number of matching pods (the
//!   disruption controller uses the scale of the pods' controllers for
//!   percentages and maxUnavailable).

pub mod admission;
pub mod api;
pub mod cluster;
pub mod controllers;
pub mod dump;
pub mod error;
pub mod eviction;
pub mod fields;
pub mod fixtures;
pub mod http;
pub mod kinds;
pub mod logs;
pub mod merge_patch;
pub mod meta;
pub mod ownership;
pub mod proxy;
pub use minispod_support::quantity;
pub mod rbac;
pub mod record;
pub mod selectors;
pub mod standin;
pub mod store;
pub mod watch;

pub use cluster::{TestCluster, require_kubernetes_if_asked};
pub use http::Settings;
pub use proxy::CutProxy;
pub use record::{Recorded, Verb};
pub use standin::StandIn;
