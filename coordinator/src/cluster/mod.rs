//! Training on gRPC workers.
//!
//! The coordinator keeps the data and the master copy of both factor
//! matrices. At the start of a job it ships every block of ratings once, by
//! user to the owner of the user block and by item to the owner of the item
//! block ("store twice, ship once"). Each half-iteration it pushes to every
//! worker exactly the fixed-side rows its blocks reference, collects the
//! solved rows and, for implicit feedback, the per-block Gramians, which it
//! sums in block order so any cluster shape reduces them to the same bits.

pub mod executor;
pub mod ingest;
pub mod local;
pub mod ratings;
pub mod routing;
pub mod session;

pub use als_net::client::{self, client_tls, ClientOptions, WorkerHandle};
pub use als_net::transport;
pub use executor::{ClusterExecutor, FaultOptions};
pub use local::LocalWorkers;
pub use session::ClusterSession;
