//! Argument groups shared by the commands (clap `flatten`), each declared
//! once, and their translation into core settings. Defaults come from core,
//! where each is declared; errors name flags.

pub mod cluster;
pub mod layout;
pub mod model;
pub mod output;
pub(crate) mod parse;
pub mod saved_model;
pub mod split;
pub mod train;

pub use cluster::ClusterArgs;
pub use layout::{check_columns, LayoutArgs};
pub use model::{Cadence, MetricArgs, ModelArgs, ModelPoint, SolverArg};
pub use output::{ListArgs, ProgressArgs};
pub use saved_model::ModelDirArg;
pub use train::TrainArgs;
