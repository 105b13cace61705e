//! Where the cluster's coordinator finds what it needs of the ratings:
//! held here (it loaded the input), or only on the workers, which built
//! the blocks from the input and described them ([`BlocksDescribed`]).
//!
//! Held on the workers, the ratings are never read here during training: a
//! lost worker's blocks are built again by the survivors from the input
//! (`plan`), and each then takes its blocks with this coordinator's rows.
//! Only a model the workers could not write is saved from the input loaded
//! here ([`OnWorkers::dataset`]), checked to be the data the workers built.

use std::cell::OnceCell;

use als_core::blocks::BlockLayout;
use als_core::data::Dataset;

use super::ingest::{prefix, BlocksBuilt, BlocksDescribed, IngestPlan};
use super::routing::Routing;
use als_core::train::Layouts;

/// Loads the input as the workers read it, and checks it is the data they built.
pub type LoadRatings<'a> = Box<dyn Fn() -> anyhow::Result<Dataset> + 'a>;

/// The ratings as the workers hold them: what they told of their blocks,
/// and the input loaded here on first need.
pub struct OnWorkers<'a> {
    pub built: BlocksBuilt,
    pub described: BlocksDescribed,
    /// How the workers built the blocks: how survivors build them again.
    pub plan: IngestPlan,
    load: LoadRatings<'a>,
    loaded: OnceCell<Dataset>,
}

impl<'a> OnWorkers<'a> {
    pub fn new(built: BlocksBuilt, described: BlocksDescribed, plan: IngestPlan, load: LoadRatings<'a>) -> Self {
        OnWorkers {
            built,
            described,
            plan,
            load,
            loaded: OnceCell::new(),
        }
    }

    /// A build of the blocks again (by other workers) is the first one's:
    /// the same blocks, counts and sums to the bit.
    pub fn check_rebuilt(&self, again: &BlocksBuilt) -> anyhow::Result<()> {
        let first = &self.built;
        let same = BlocksBuilt {
            peer_bytes: first.peer_bytes,
            ..again.clone()
        } == *first
            && again.global_mean.to_bits() == first.global_mean.to_bits();
        anyhow::ensure!(
            same,
            "the survivors built other blocks from {} than the workers first did \
             ({} users, {} items, {} ratings, {} test rows; first {}, {}, {}, {}): the input changed during the run",
            self.plan.path.display(),
            again.n_users(),
            again.n_items(),
            again.ratings,
            again.test_rows,
            first.n_users(),
            first.n_items(),
            first.ratings,
            first.test_rows
        );
        Ok(())
    }

    /// The layouts of the blocks the workers built.
    pub fn layouts(&self) -> Layouts {
        let starts = |s: &[u64]| BlockLayout {
            starts: s.iter().map(|&x| x as usize).collect(),
        };
        Layouts {
            users: starts(&self.built.user_starts),
            items: starts(&self.built.item_starts),
        }
    }

    /// The ratings, loaded here the first time they are needed.
    pub fn dataset(&self) -> anyhow::Result<&Dataset> {
        if let Some(ds) = self.loaded.get() {
            return Ok(ds);
        }
        tracing::warn!("this coordinator needs the ratings the workers hold (a model they could not write): loading the input");
        let ds = (self.load)()?;
        Ok(self.loaded.get_or_init(|| ds))
    }

    /// Whether the input was loaded here.
    pub fn was_loaded(&self) -> bool {
        self.loaded.get().is_some()
    }
}

/// The ratings the cluster's coordinator reads from.
#[derive(Clone, Copy)]
pub enum RatingsAt<'r> {
    Here(&'r Dataset),
    Workers(&'r OnWorkers<'r>),
}

impl<'r> RatingsAt<'r> {
    /// The ratings, where this coordinator holds them.
    pub fn held(self) -> Option<&'r Dataset> {
        match self {
            RatingsAt::Here(ds) => Some(ds),
            RatingsAt::Workers(_) => None,
        }
    }

    /// Block owners and routes, with contiguous owners over `n_workers`;
    /// the rows blocks reference are here only where the ratings are, or
    /// where the workers were asked for them.
    pub fn routing(self, layouts: &Layouts, n_workers: usize) -> Routing {
        match self {
            RatingsAt::Here(ds) => Routing::build(&ds.by_user, &ds.by_item, layouts, n_workers),
            RatingsAt::Workers(w) => match &w.described.references {
                Some([users, items]) => Routing::from_references(users.clone(), items.clone(), layouts, n_workers),
                None => Routing::owners_only(layouts, n_workers),
            },
        }
    }

    /// Per user block, its test rows (its held-out users' ranked rows, where the workers hold them).
    pub fn test_rows_per_block(self, users: &BlockLayout) -> Vec<u64> {
        match self {
            RatingsAt::Here(ds) => {
                let mut n = vec![0u64; users.n_blocks()];
                for &u in &ds.test.users {
                    n[users.block_of(u as usize)] += 1;
                }
                n
            }
            // Held out, users are scored on their ranked rows, not on test rows.
            RatingsAt::Workers(w) => match &w.built.held_out {
                Some(h) => h.test_rows_per_block.clone(),
                None => w.built.user_test_rows.clone(),
            },
        }
    }

    /// Per user block, its users with a test row valued `min_pos` or more:
    /// the users a ranking evaluation of the block scores (the workers
    /// counted them for the run's `min_pos`).
    pub fn eval_users_per_block(self, users: &BlockLayout, min_pos: f32) -> Vec<u64> {
        match self {
            RatingsAt::Here(ds) => {
                let mut relevant = vec![false; ds.n_users()];
                for (&u, &v) in ds.test.users.iter().zip(&ds.test.ratings) {
                    relevant[u as usize] |= v >= min_pos;
                }
                let mut n = vec![0u64; users.n_blocks()];
                for (u, _) in relevant.iter().enumerate().filter(|(_, &r)| r) {
                    n[users.block_of(u)] += 1;
                }
                n
            }
            RatingsAt::Workers(w) => w.described.eval_users.clone(),
        }
    }

    /// Whether the workers' user blocks hold the held-out users (`--split users`).
    pub fn held_out_on_workers(self) -> bool {
        matches!(self, RatingsAt::Workers(w) if w.built.held_out.is_some())
    }

    /// Each user block's first rating among every user's (the seen
    /// matrix's row pointer at the block's first user), then the count.
    pub fn user_nnz_starts(self, users: &BlockLayout) -> Vec<u64> {
        match self {
            RatingsAt::Here(ds) => users.starts.iter().map(|&s| ds.by_user.indptr[s] as u64).collect(),
            RatingsAt::Workers(w) => prefix(w.built.user_ratings.iter().copied()),
        }
    }
}
