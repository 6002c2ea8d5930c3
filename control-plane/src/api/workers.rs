//! WorkerService: fleet administration, for administrators only (the
//! table in `access` says so). `rpc` answers the calls, `changes` holds
//! the writes, `watch` the WatchWorkers stream.

mod changes;
mod rpc;
mod watch;

pub use rpc::WorkerApi;
