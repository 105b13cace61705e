//! One module per subcommand, each with its `Args` and its `run`. Commands
//! never import each other: what two of them share lives below them
//! ([`crate::args`], [`crate::training`], [`crate::model_dir`], ...).

pub mod fold_in;
pub mod generate;
pub mod recommend;
pub mod serve;
pub mod similar;
pub mod train;
pub mod tune;
