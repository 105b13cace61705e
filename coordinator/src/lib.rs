//! The coordinator library: command implementations shared by the binary and tests.
pub mod cli;
pub mod cluster;
pub mod fold_in_cmd;
pub mod generate_cmd;
pub mod history;
pub mod input;
pub mod model_build;
pub mod progress;
pub mod recommend_cmd;
pub mod report;
pub mod serve;
pub mod similar_cmd;
pub mod train_cmd;
pub mod tune_cmd;

#[cfg(test)]
mod tests;
