-- The owner's gate (issue #22): until its owner opens a subscription to
-- everyone, its web front answers only a browser that holds the owner's
-- token. `gate` is that token, sealed like the subscription's secrets;
-- empty when the subscription is open to everyone. Subscriptions made
-- before the gate existed stay open as they were.
ALTER TABLE subscriptions ADD COLUMN gate TEXT NOT NULL DEFAULT '';
