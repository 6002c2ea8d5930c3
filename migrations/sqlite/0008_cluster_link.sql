-- The cluster link (issue #13). A worker whose stream is up is ACTIVE only
-- when its Kubernetes node is Ready too: node_ready is that fact (TRUE
-- while no cluster is linked), node_reason says why not. kubernetes_node is
-- the node name an agent running inside the cluster (DaemonSet) reported.
ALTER TABLE workers ADD COLUMN node_ready BOOLEAN NOT NULL DEFAULT TRUE;
ALTER TABLE workers ADD COLUMN node_reason TEXT NOT NULL DEFAULT '';
ALTER TABLE workers ADD COLUMN kubernetes_node TEXT NOT NULL DEFAULT '';
