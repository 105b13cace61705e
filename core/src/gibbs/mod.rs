//! Bayesian probabilistic matrix factorization (Salakhutdinov & Mnih 2008):
//! the same model r̂ = μ + bᵤ + bᵢ + qᵢᵀpᵤ, learned by Gibbs sampling
//! instead of by minimizing the regularized loss.
//!
//! Each half-iteration draws the side's prior (mean and precision) from its
//! Normal-Wishart posterior given the side's rows ([`hyper`]), then draws
//! every row from its Gaussian conditional ([`crate::solve::sample_rows`]):
//! the ALS row with the prior in place of λ·I, plus noise. The model is the
//! average of the draws after a burn-in ([`PosteriorMean`]). Averaging over
//! the posterior is what lets it beat the best regularized fit on sparse
//! ratings, and nothing needs λ: the prior's precision is learned.

pub mod hyper;
mod mean;

pub use hyper::{sample_row_prior, NormalWishart, RowMoments, BETA0};
pub use mean::PosteriorMean;
