//! SubscriptionService: customers run catalog services; administrators see
//! and control every subscription. `rpc` answers the calls; the streams are
//! apart (`watch`, `logs`), and so are a customer's own domains (`domains`).

mod domains;
mod rpc;
mod watch;

pub use rpc::{CallerLimits, SubscriptionApi};
