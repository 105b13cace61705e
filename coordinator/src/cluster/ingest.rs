//! The workers build the blocks from the input; the coordinator reads none
//! of it (issue 14). It drives the steps of
//! [`als_core::data::ingest`] on every worker at once (`Ingest` calls) and
//! reduces what they report, all of it O(workers + blocks): the shares' row
//! counts into each share's first place, the blocks' "all ids are integers"
//! bits into the numeric order, their id counts into the blocks' first
//! rows, their sums into the global mean and the data fingerprint. The
//! ratings go worker to worker (`IngestRows`, `LookupItems`).
//!
//! The copies of the ratings are checked against each other: the user
//! blocks' cell sums must equal the item blocks' (a row lost or altered
//! between them is caught here, not as a wrong model).

use std::path::{Path, PathBuf};
use std::time::Duration;

use als_core::data::ids::block_of_id;
use als_core::data::ingest::add_cell_sums;
use als_core::data::select::{Ask as SelectAsk, Selection};
use als_core::data::split::{HeldKeys, UserHoldout};
use als_core::data::{DataFingerprint, DuplicatePolicy, LoadOptions, SplitSpec};
use als_core::model::id_lines::id_line_bytes;
use als_core::row_places::IdLines;
use als_core::side::Side;
use als_core::train::DataShape;
use als_proto::codec::{bytes_u128, bytes_u32, bytes_u64, decode_ids, u128_bytes};
use als_proto::fault::{fault_of, Fault};
use als_proto::pb::ingest_request::Step;
use als_proto::pb::select_key_step::{Ask, Keys};
use als_proto::pb::split_rule::Kind;
use als_proto::pb::EndJobRequest;
use als_proto::pb::{
    BlockOwners, BlockReport, DescribeStep, DropBuiltStep, FinishStep, GatherItemsStep, GatherUsersStep, HoldOutUsersStep, IngestRequest,
    IngestResponse, InputSpec, LookUpItemsStep, NumberStep, ReadShareStep, RouteItemsStep, RouteShareStep, SelectKeyStep, SplitRule,
};
use als_proto::spec::side_to_pb;
use anyhow::{bail, Context};
use futures::StreamExt;

use super::executor::watchdog;
use super::routing::{contiguous_owners, live_positions, owners_among};
use super::{FaultOptions, WorkerHandle};

/// What to build, and how long a step and a peer call may take; kept for
/// the whole run, to build a lost worker's blocks again on the survivors.
#[derive(Debug, Clone)]
pub struct IngestPlan {
    /// The input as every worker reaches it.
    pub path: PathBuf,
    pub load: LoadOptions,
    /// A test file (`--test FILE`), read in shares as the input is.
    pub test_path: Option<PathBuf>,
    pub split: SplitSpec,
    /// `--split users` (with `split` none): the held-out users' rows are left
    /// out of training; each user block keeps its held-out users', to fold
    /// them in and score them at evaluations.
    pub hold_out: Option<UserHoldout>,
    pub duplicates: DuplicatePolicy,
    /// Blocks per side asked for; the layout has at most one per user and
    /// per item, as the single-process layout (the workers count them).
    pub blocks: usize,
    pub step_timeout: Duration,
    pub peer_timeout: Duration,
}

/// The data as the coordinator knows it once the workers hold the blocks.
#[derive(Debug, Clone, PartialEq)]
pub struct BlocksBuilt {
    pub input_rows: u64,
    pub skipped_lines: u64,
    /// The values' range over every row read.
    pub value_range: (f32, f32),
    /// The training rows' values' range, before repeats are merged.
    pub training_range: (f32, f32),
    /// Each block's first dense row, then the side's row count.
    pub user_starts: Vec<u64>,
    pub item_starts: Vec<u64>,
    /// Training ratings (repeats merged), test rows kept and dropped.
    pub ratings: u64,
    pub test_rows: u64,
    pub test_dropped_cold: u64,
    pub duplicates_merged: u64,
    pub global_mean: f64,
    pub fingerprint: DataFingerprint,
    /// Every training cell (dense user, dense item, value), summed as
    /// [`als_core::data::ingest::cell_sums`] sums them: the two copies agree on it.
    pub cells: [u64; 4],
    /// Bytes of rows the workers sent each other.
    pub peer_bytes: u64,
    /// Per user block, in block order: its training ratings and test rows.
    pub user_ratings: Vec<u64>,
    pub user_test_rows: Vec<u64>,
    /// With users held out (`--split users`): what the user blocks hold of them.
    pub held_out: Option<HeldOutBuilt>,
}

/// The held-out users the user blocks hold (`--split users`), counted as
/// [`als_core::data::HeldOutUsers`] counts them on a single process.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HeldOutBuilt {
    /// Their fold-in rows, repeats merged.
    pub fold_in: u64,
    /// Rows dropped (cold item, or no fold-in row left).
    pub dropped_cold: u64,
    /// Per user block, its held-out users and its ranked rows scored.
    pub users_per_block: Vec<u64>,
    pub test_rows_per_block: Vec<u64>,
}

impl HeldOutBuilt {
    pub fn users(&self) -> u64 {
        self.users_per_block.iter().sum()
    }

    /// Ranked rows scored.
    pub fn test_rows(&self) -> u64 {
        self.test_rows_per_block.iter().sum()
    }
}

impl BlocksBuilt {
    pub fn n_users(&self) -> usize {
        *self.user_starts.last().expect("blocks") as usize
    }

    pub fn n_items(&self) -> usize {
        *self.item_starts.last().expect("blocks") as usize
    }

    /// The shape training runs on: the test rows scored are the held-out
    /// users' ranked rows where users are held out, else the test rows kept.
    pub fn shape(&self) -> DataShape {
        DataShape {
            n_users: self.n_users(),
            n_items: self.n_items(),
            n_train: self.ratings as usize,
            n_scored_test: self.held_out.as_ref().map_or(self.test_rows, HeldOutBuilt::test_rows) as usize,
            holds_out_users: self.held_out.is_some(),
            global_mean: self.global_mean,
            rating_range: self.training_range,
        }
    }

    /// The data fingerprint's text, as [`als_core::data::Dataset::fingerprint`].
    pub fn fingerprint_digest(&self) -> String {
        self.fingerprint.digest(self.n_users(), self.n_items())
    }
}

/// The rule the workers apply; the temporal split's `first_test_key` is
/// found beforehand ([`first_test_key`]), and so are the held-out users'
/// keys, which go with a later step ([`users_rule`]).
fn split_rule(split: &SplitSpec, hold_out: Option<UserHoldout>, first_test_key: Option<u128>) -> anyhow::Result<SplitRule> {
    if let Some(h) = hold_out {
        anyhow::ensure!(*split == SplitSpec::None, "users held out and rows split at once");
        return Ok(users_rule(h, HeldKeys { from: None, to: None }));
    }
    let rule = |kind: Kind, test_frac: f64, seed: u64| SplitRule {
        kind: kind as i32,
        test_frac,
        seed,
        ..Default::default()
    };
    Ok(match *split {
        SplitSpec::None => rule(Kind::None, 0.0, 0),
        SplitSpec::Ratio { test_frac, seed } => rule(Kind::Ratio, test_frac, seed),
        SplitSpec::PerUser { test_frac, seed } => rule(Kind::PerUser, test_frac, seed),
        SplitSpec::KFold { folds, fold, seed } => SplitRule {
            kind: Kind::KFold as i32,
            seed,
            folds: folds.try_into().context("folds")?,
            fold: fold.try_into().context("fold")?,
            ..Default::default()
        },
        SplitSpec::Temporal { test_frac } => SplitRule {
            kind: Kind::Temporal as i32,
            test_frac,
            first_test_key: u128_bytes(first_test_key.as_slice()).into(),
            ..Default::default()
        },
    })
}

/// The users split's rule, the held-out users being those `held` holds.
fn users_rule(h: UserHoldout, held: HeldKeys) -> SplitRule {
    SplitRule {
        kind: Kind::Users as i32,
        seed: h.seed(),
        held_from_key: u128_bytes(held.from.as_slice()).into(),
        held_to_key: u128_bytes(held.to.as_slice()).into(),
        ..Default::default()
    }
}

/// The input at `path` as the workers are asked to read it, with its size
/// as this process sees it (each worker checks it sees the same).
fn input_spec(path: &Path, o: &LoadOptions) -> anyhow::Result<InputSpec> {
    let col = |c: usize, what: &str| u32::try_from(c).with_context(|| format!("{what} column {c}"));
    let (bytes, files) = als_core::data::input_size(path)?;
    Ok(InputSpec {
        bytes: Some(bytes),
        files: Some(u32::try_from(files).context("input files")?),
        path: path
            .to_str()
            .with_context(|| format!("input path {} is not UTF-8", path.display()))?
            .to_owned(),
        format: o.format.name().to_owned(),
        header: o.header,
        user_col: col(o.user_col, "user")?,
        item_col: col(o.item_col, "item")?,
        rating_col: o.rating_col.map(|c| col(c, "rating")).transpose()?,
        timestamp_col: o.timestamp_col.map(|c| col(c, "timestamp")).transpose()?,
        skip_invalid: o.skip_invalid,
        max_id_len: col(o.max_id_len, "max id length")?,
    })
}

/// Have `workers` build the blocks of `plan`'s input; the job's id names the
/// ingest on every worker. A worker lost meanwhile fails it with [`WorkerLost`].
///
/// Only the live workers (`alive`) build: block `b` on its home worker
/// (contiguous runs over every worker), or, where that one is lost, on a
/// survivor, as the job will place it ([`build_owners`]).
pub async fn build_blocks(
    workers: &[WorkerHandle],
    alive: &[bool],
    job_id: &str,
    plan: &IngestPlan,
    faults: &FaultOptions,
) -> anyhow::Result<BlocksBuilt> {
    let live: Vec<WorkerHandle> = live_handles(workers, alive);
    let workers = &live[..];
    let home = |blocks| -> anyhow::Result<[Vec<usize>; 2]> {
        let owners = live_positions(&build_owners(blocks, alive), alive)?;
        Ok([owners.clone(), owners])
    };
    let mut built = build(workers, job_id, plan, &home(plan.blocks)?, faults).await;
    if let Some(&FewerRowsThanBlocks(blocks)) = built.as_ref().err().and_then(|e| e.downcast_ref()) {
        // Small data: built again with one block per user or item at most,
        // which that count cannot make smaller (a second try at most). The
        // job goes on under its id, so the builds are dropped, not ended.
        drop_built(workers, job_id, plan.peer_timeout).await;
        tracing::debug!(blocks, asked = plan.blocks, "fewer users or items than blocks: building again");
        built = build(workers, job_id, &IngestPlan { blocks, ..plan.clone() }, &home(blocks)?, faults).await;
    }
    if built.is_err() {
        end_all(workers, job_id, plan.peer_timeout).await;
    }
    built
}

/// The side with fewer rows has fewer than the blocks asked for: the
/// layout's count is that many ([`als_core::train::Layouts::for_dataset`]).
#[derive(Debug, thiserror::Error)]
#[error("only {0} users or items: fewer than the blocks asked for")]
struct FewerRowsThanBlocks(usize);

/// Where the first build puts each block (of either side), as indices of
/// every worker: at home, or where the job moves a lost worker's blocks.
pub fn build_owners(blocks: usize, alive: &[bool]) -> Vec<usize> {
    owners_among(&contiguous_owners(blocks, alive.len()), alive)
}

fn live_handles(workers: &[WorkerHandle], alive: &[bool]) -> Vec<WorkerHandle> {
    workers.iter().zip(alive).filter(|(_, &a)| a).map(|(h, _)| h.clone()).collect()
}

/// Best effort: every worker forgets the blocks it built for the running
/// job `job_id` and did not take.
pub async fn drop_built(workers: &[WorkerHandle], job_id: &str, timeout: Duration) {
    let drops = workers.iter().map(|h| {
        let req = IngestRequest {
            job_id: job_id.to_owned(),
            peer_timeout_ms: 0,
            step: Some(Step::DropBuilt(DropBuiltStep {})),
        };
        let mut c = h.client.clone();
        async move {
            let _ = tokio::time::timeout(timeout, c.ingest(req)).await;
        }
    });
    futures::future::join_all(drops).await;
}

/// Have `workers` build the blocks of `plan`: each reads a share of the
/// input, and block `b` of a side is built by `workers[owners[side][b]]`.
/// The blocks are a function of the data and the block count
/// (`plan.blocks`) alone, whoever builds them. Also how a running job that
/// lost a worker has the survivors build them again (`plan.blocks` the
/// first build's count), each taking its own with its rows (`AssignBlock`
/// with `ratings_built`); on failure they drop what they built
/// ([`drop_built`]) and the job goes on.
pub async fn build(
    workers: &[WorkerHandle],
    job_id: &str,
    plan: &IngestPlan,
    owners: &[Vec<usize>; 2],
    faults: &FaultOptions,
) -> anyhow::Result<BlocksBuilt> {
    let n = workers.len();
    anyhow::ensure!(n > 0, "no workers");
    let blocks = plan.blocks;
    anyhow::ensure!(
        owners.iter().all(|o| o.len() == blocks && o.iter().all(|&w| w < n)),
        "every block needs an owner among the {n} workers"
    );
    let pb_owners = |side: usize| BlockOwners {
        workers: workers.iter().map(|w| w.addr.clone()).collect(),
        owners: owners[side].iter().map(|&w| w as u32).collect(),
    };
    let [user_owners, item_owners] = owners;
    let input = input_spec(&plan.path, &plan.load)?;
    let test_input = plan.test_path.as_deref().map(|p| input_spec(p, &plan.load)).transpose()?;
    let duplicates = match plan.duplicates {
        DuplicatePolicy::Last => 0,
        DuplicatePolicy::First => 1,
        DuplicatePolicy::Sum => 2,
    };
    let steps = Steps {
        workers,
        job_id,
        plan,
        faults,
    };

    // 1. Each worker reads its share; the shares' counts place their rows.
    let read = steps
        .run("read its share", |w| {
            Step::ReadShare(ReadShareStep {
                input: Some(input.clone()),
                share: w as u32,
                shares: n as u32,
                blocks: blocks as u32,
                user_owners: Some(pb_owners(0)),
                item_owners: Some(pb_owners(1)),
                you: w as u32,
                test_input: test_input.clone(),
            })
        })
        .await?;
    // The test file's rows are placed after the input's.
    let firsts = prefix(read.iter().map(|r| r.rows));
    let test_firsts = prefix(read.iter().map(|r| r.test_rows));
    let input_rows = firsts[n] + test_firsts[n];
    if firsts[n] == 0 {
        bail!("{}: no ratings", plan.path.display());
    }
    let first_test = match &plan.split {
        SplitSpec::Temporal { test_frac } => first_test_key(&steps, &firsts, input_rows, *test_frac).await?,
        _ => None,
    };
    let split = split_rule(&plan.split, plan.hold_out, first_test)?;
    // 2. Each share's rows go to their users' blocks.
    let routed = steps
        .run("route its share", |w| {
            Step::RouteShare(RouteShareStep {
                first_place: firsts[w],
                input_rows,
                split: Some(split.clone()),
                test_first_place: firsts[n] + test_firsts[w],
            })
        })
        .await?;
    // 3–4. The user blocks: gathered, split, numbered.
    let gathered = steps
        .run("gather its user blocks", |_| {
            Step::GatherUsers(GatherUsersStep {
                split: Some(split.clone()),
            })
        })
        .await?;
    let gathered = match plan.hold_out {
        Some(h) => {
            let held = held_keys(&steps, h).await?;
            steps
                .run("hold users out", |_| {
                    Step::HoldOutUsers(HoldOutUsersStep {
                        split: Some(users_rule(h, held)),
                    })
                })
                .await?
        }
        None => gathered,
    };
    let reports = by_block(&gathered, |r| &r.user_blocks, user_owners, "user")?;
    let numeric = reports.iter().all(|r| r.integers);
    // The held-out users are ordered as their own side, apart from the others.
    let held_out_numeric = plan.hold_out.is_some() && reports.iter().all(|r| r.held_out_integers);
    let numbered = steps
        .run("number its users", |_| Step::NumberUsers(NumberStep { numeric, held_out_numeric }))
        .await?;
    let user_starts = prefix(by_block(&numbered, |r| &r.user_blocks, user_owners, "user")?.iter().map(|r| r.ids));
    // 5–7. The training rows to their items' blocks: gathered, numbered.
    let routed_items = steps
        .run("route its training rows", |_| {
            Step::RouteItems(RouteItemsStep {
                user_starts: user_starts.clone(),
                duplicates,
            })
        })
        .await?;
    let gathered = steps
        .run("gather its item blocks", |_| Step::GatherItems(GatherItemsStep {}))
        .await?;
    let numeric = by_block(&gathered, |r| &r.item_blocks, item_owners, "item")?
        .iter()
        .all(|r| r.integers);
    let numbered = steps
        .run("number its items", |_| {
            Step::NumberItems(NumberStep {
                numeric,
                ..Default::default()
            })
        })
        .await?;
    let item_starts = prefix(by_block(&numbered, |r| &r.item_blocks, item_owners, "item")?.iter().map(|r| r.ids));
    let fewest = (*user_starts.last().expect("prefix"))
        .min(*item_starts.last().expect("prefix"))
        .max(1);
    if fewest < blocks as u64 {
        return Err(FewerRowsThanBlocks(fewest as usize).into());
    }
    // 7b. Every user block learns its items' rows before any worker lays out.
    steps.run("look its items up", |_| Step::LookUpItems(LookUpItemsStep {})).await?;
    // 8. Laid out, each block reports its sums.
    let finished = steps
        .run("lay out its blocks", |_| {
            Step::Finish(FinishStep {
                item_starts: item_starts.clone(),
            })
        })
        .await?;
    let users = by_block(&finished, |r| &r.user_blocks, user_owners, "user")?;
    let items = by_block(&finished, |r| &r.item_blocks, item_owners, "item")?;
    reduce(
        BlocksBuilt {
            input_rows,
            skipped_lines: read.iter().map(|r| r.skipped_lines).sum(),
            // Of the input's rows (the test file's are not training rows).
            value_range: read
                .iter()
                .filter(|r| r.rows > 0)
                .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), r| {
                    (lo.min(r.min_value), hi.max(r.max_value))
                }),
            training_range: (f32::INFINITY, f32::NEG_INFINITY),
            user_starts,
            item_starts,
            ratings: 0,
            test_rows: 0,
            test_dropped_cold: 0,
            duplicates_merged: 0,
            global_mean: 0.0,
            fingerprint: DataFingerprint::default(),
            cells: [0; 4],
            peer_bytes: routed.iter().chain(&routed_items).map(|r| r.peer_bytes).sum(),
            user_ratings: Vec::new(),
            user_test_rows: Vec::new(),
            held_out: plan.hold_out.map(|_| HeldOutBuilt::default()),
        },
        &users,
        &items,
    )
}

/// What the coordinator learns of the blocks the workers built, so that it
/// trains without reading the input: where each block's ids go in the
/// model's ids files, the ids themselves only where asked, and the users
/// each user block's ranking evaluation scores.
#[derive(Debug, Clone, PartialEq)]
pub struct BlocksDescribed {
    /// Where asked: a coordinator that keeps a copy of the rows draws the
    /// initial ones from them, and writes the model's ids itself.
    /// Otherwise the workers keep them, and write the ids files.
    pub ids: Option<DescribedIds>,
    /// Per side (users, items): each block's first byte in the side's ids
    /// file (`id\n` a row), then the file's length (blocks + 1).
    pub id_line_starts: [Vec<u64>; 2],
    /// Per side (users, items), per block: the other side's rows it
    /// references, ascending; only where asked for (a coordinator that
    /// pushes the fixed rows itself). Otherwise they stay with each block's
    /// worker, which sets up its routes from them, and this process holds
    /// nothing that grows with the ratings.
    pub references: Option<[Vec<Vec<u32>>; 2]>,
    /// Per user block: users with a test row valued `min_pos` or more.
    pub eval_users: Vec<u64>,
}

/// Every id of the blocks the workers built, in row order.
#[derive(Debug, Clone, PartialEq)]
pub struct DescribedIds {
    pub users: Vec<String>,
    pub items: Vec<String>,
}

impl BlocksDescribed {
    /// Where each block's ids go in the model's users' and items' ids
    /// files, with the rows of `built`.
    pub fn id_lines(&self, built: &BlocksBuilt) -> [IdLines; 2] {
        let [users, items] = self.id_line_starts.clone();
        [
            IdLines {
                rows: built.user_starts.clone(),
                bytes: users,
            },
            IdLines {
                rows: built.item_starts.clone(),
                bytes: items,
            },
        ]
    }
}

/// What `Describe` asks of every block.
#[derive(Debug, Clone, Copy)]
pub struct DescribeAsk {
    /// User blocks: count the users with a test row valued this or more.
    pub min_pos: f32,
    /// The rows each block references.
    pub references: bool,
    /// The ids themselves (else only their bytes as lines).
    pub ids: bool,
}

/// Ask each block's builder what `ask` says (`Describe`), after
/// [`build_blocks`] and before the blocks are adopted; every answer is
/// checked against `built`.
pub async fn describe_blocks(
    workers: &[WorkerHandle],
    alive: &[bool],
    job_id: &str,
    plan: &IngestPlan,
    built: &BlocksBuilt,
    ask: DescribeAsk,
    faults: &FaultOptions,
) -> anyhow::Result<BlocksDescribed> {
    let n_blocks = built.user_starts.len() - 1;
    let owners = live_positions(&build_owners(n_blocks, alive), alive)?;
    let live = live_handles(workers, alive);
    let workers = &live[..];
    let steps = Steps {
        workers,
        job_id,
        plan,
        faults,
    };
    let mut out = BlocksDescribed {
        ids: None,
        id_line_starts: [vec![0], vec![0]],
        eval_users: Vec::with_capacity(n_blocks),
        references: None,
    };
    let mut ids_of: [Vec<String>; 2] = Default::default();
    let mut referenced: [Vec<Vec<u32>>; 2] = Default::default();
    for (si, side) in [Side::Users, Side::Items].into_iter().enumerate() {
        let (starts, other) = match side {
            Side::Users => (&built.user_starts, built.n_items()),
            Side::Items => (&built.item_starts, built.n_users()),
        };
        // A call per block, as many at a time as there are workers, taken in
        // block order: an answer is at most a message (the ids, where asked),
        // so the coordinator holds a few.
        let calls = (0..n_blocks).map(|b| {
            let step = Step::Describe(DescribeStep {
                side: side_to_pb(side) as i32,
                block: b as u32,
                min_pos: ask.min_pos,
                references: ask.references,
                without_ids: !ask.ids,
            });
            let (steps, h) = (&steps, &workers[owners[b]]);
            async move {
                let what = format!("describe {} block {b}", side.name());
                steps.call(h, &what, step).await.map_err(StepError::into_anyhow)
            }
        });
        let mut answers = futures::stream::iter(calls).buffered(workers.len().max(1));
        for b in 0..n_blocks {
            let h = &workers[owners[b]];
            let r = answers.next().await.context("internal error: a block was not described")??;
            let rows = (starts[b + 1] - starts[b]) as usize;
            let held_out_users = match (side, &built.held_out) {
                (Side::Users, Some(h)) => h.users_per_block[b],
                _ => 0,
            };
            let d = checked_description(&r, (b, n_blocks), (rows, held_out_users), (other, &ask), plan.load.max_id_len)
                .map_err(|m| anyhow::anyhow!("worker {}: {} block {b}: {m}", h.addr, side.name()))?;
            if side == Side::Users {
                out.eval_users.push(r.eval_users);
            }
            let starts = &mut out.id_line_starts[si];
            starts.push(starts[b] + d.line_bytes);
            ids_of[si].extend(d.ids);
            referenced[si].push(d.needed);
        }
    }
    out.references = ask.references.then_some(referenced);
    let [users, items] = ids_of;
    out.ids = ask.ids.then_some(DescribedIds { users, items });
    Ok(out)
}

/// One block's description, checked.
#[derive(Debug, PartialEq)]
struct Description {
    /// Where asked, else none.
    ids: Vec<String>,
    /// The ids' bytes as lines.
    line_bytes: u64,
    /// Where asked, else none.
    needed: Vec<u32>,
}

/// Block `b` (of `n_blocks`, `rows` rows) as a worker described it: its
/// ids' bytes as lines, and what `ask` asks (`other`: the other side's row
/// count); or what is wrong with its answer: ids that are not an id table
/// of `rows` ids of this block no longer than `max_id_len` (or any, not
/// asked for), lines of other bytes than the ids' (or than `rows` such ids
/// can take), referenced rows not ascending below `other` (or any, not
/// asked for), more users scored than the block has.
fn checked_description(
    r: &IngestResponse,
    (b, n_blocks): (usize, usize),
    (rows, held_out_users): (usize, u64),
    (other, ask): (usize, &DescribeAsk),
    max_id_len: usize,
) -> Result<Description, String> {
    let ids = decode_ids(&r.id_bytes, &r.id_ends, max_id_len)?;
    match ask.ids {
        true if ids.len() != rows => return Err(format!("{} ids, the starts give it {rows}", ids.len())),
        false if !ids.is_empty() => return Err(format!("{} ids, none asked for", ids.len())),
        _ => {}
    }
    if let Some(id) = ids.iter().find(|id| block_of_id(id, n_blocks) != b) {
        return Err(format!("id {id:?} belongs to block {}", block_of_id(id, n_blocks)));
    }
    let line_bytes = r.id_line_bytes;
    let fits = match ask.ids {
        true => line_bytes == id_line_bytes(&ids),
        // Each line an id of 1 to max_id_len bytes and its '\n'.
        false => (2 * rows as u64..=rows as u64 * (max_id_len as u64 + 1)).contains(&line_bytes),
    };
    if !fits {
        return Err(format!("its {rows} ids take {line_bytes} bytes as lines, which they cannot"));
    }
    let needed: Vec<u32> = bytes_u32("needed", &r.needed).map_err(|e| e.to_string())?;
    let asked = ask.references;
    if !asked && !needed.is_empty() {
        return Err(format!("{} referenced rows, none asked for", needed.len()));
    }
    if needed.windows(2).any(|w| w[0] >= w[1]) || needed.last().is_some_and(|&g| g as usize >= other) {
        return Err(format!("the rows it references are not ascending rows below {other}"));
    }
    // Its held-out users are scored too (`--split users`).
    if r.eval_users > rows as u64 + held_out_users {
        return Err(format!("{} users scored of {rows} and {held_out_users} held out", r.eval_users));
    }
    Ok(Description { ids, line_bytes, needed })
}

/// Which keys a selection asks the workers about.
#[derive(Debug, Clone, Copy)]
enum KeysAsked<'a> {
    /// The shares' `(timestamp, place)` keys, before routing.
    Temporal { firsts: &'a [u64], input_rows: u64 },
    /// The user blocks' users' hold-out keys, once gathered.
    UserHoldout { user_seed: u64 },
}

/// The temporal split's first test key: the `(n − k)`-th smallest
/// `(timestamp, place)` of all rows, `k` being the test rows; `None` when no
/// row is held out.
async fn first_test_key(steps: &Steps<'_>, firsts: &[u64], input_rows: u64, test_frac: f64) -> anyhow::Result<Option<u128>> {
    let rows = firsts[firsts.len() - 1];
    let k = als_core::data::split::n_test(rows as usize, test_frac)? as u64;
    let of = KeysAsked::Temporal { firsts, input_rows };
    let (n, range) = key_range(steps, of).await?;
    anyhow::ensure!(n == rows, "the workers hold {n} keys, their shares {rows} rows");
    kth_key(steps, of, n, range, n - k).await
}

/// The held-out users' keys (`--split users`): the bounds of their
/// positions in the hold-out order of all users.
async fn held_keys(steps: &Steps<'_>, h: UserHoldout) -> anyhow::Result<HeldKeys> {
    let of = KeysAsked::UserHoldout { user_seed: h.user_seed() };
    let (n, range) = key_range(steps, of).await?;
    let at = h.positions(n as usize)?;
    Ok(HeldKeys {
        from: match at.start {
            0 => None,
            lo => kth_key(steps, of, n, range, lo as u64).await?,
        },
        to: kth_key(steps, of, n, range, at.end as u64).await?,
    })
}

/// One round of questions to every worker about its keys.
async fn ask_keys(
    steps: &Steps<'_>,
    of: KeysAsked<'_>,
    what: &str,
    ask: Ask,
    prefix: u128,
    shift: u32,
) -> anyhow::Result<Vec<IngestResponse>> {
    steps
        .run(what, |w| {
            let mut step = SelectKeyStep {
                ask: ask as i32,
                prefix: u128_bytes(&[prefix]).into(),
                shift,
                ..Default::default()
            };
            match of {
                KeysAsked::Temporal { firsts, input_rows } => {
                    step.keys = Keys::Temporal as i32;
                    (step.first_place, step.input_rows) = (firsts[w], input_rows);
                }
                KeysAsked::UserHoldout { user_seed } => {
                    step.keys = Keys::UserHoldout as i32;
                    step.user_seed = user_seed;
                }
            }
            Step::SelectKey(step)
        })
        .await
}

/// How many keys the workers hold, and their range.
async fn key_range(steps: &Steps<'_>, of: KeysAsked<'_>) -> anyhow::Result<(u64, Option<(u128, u128)>)> {
    let ranges = ask_keys(steps, of, "range its keys", Ask::Range, 0, 0).await?;
    let mut range: Option<(u128, u128)> = None;
    let mut n = 0u64;
    for (w, r) in ranges.iter().enumerate() {
        let keys = bytes_u128("keys", &r.keys).with_context(|| format!("worker {w}'s range of keys"))?;
        match (r.rows, keys.as_slice()) {
            (0, []) => {}
            (rows, &[lo, hi]) if rows > 0 && lo <= hi => {
                range = Some(range.map_or((lo, hi), |(a, b)| (a.min(lo), b.max(hi))));
            }
            _ => bail!("worker {w} answered {} keys with {} bounds", r.rows, keys.len()),
        }
        n = n.checked_add(r.rows).context("the workers' key counts overflow")?;
    }
    Ok((n, range))
}

/// The `k`-th smallest of the workers' `n` keys in `range` (0-based),
/// `None` if there are not more than `k`, found in rounds ([`Selection`]):
/// no worker sends its keys, and every answer is checked.
async fn kth_key(steps: &Steps<'_>, of: KeysAsked<'_>, n: u64, range: Option<(u128, u128)>, k: u64) -> anyhow::Result<Option<u128>> {
    let Some(mut sel) = Selection::new(k, n, range) else {
        return Ok(None);
    };
    loop {
        match sel.ask() {
            SelectAsk::Histogram { prefix, shift } => {
                let mut counts = vec![0u64; 1 << 16];
                let answers = ask_keys(steps, of, "count its keys under a prefix", Ask::Histogram, prefix, shift).await?;
                for (w, r) in answers.iter().enumerate() {
                    let c = bytes_u64("counts", &r.counts).with_context(|| format!("worker {w}'s histogram"))?;
                    anyhow::ensure!(c.len() == counts.len(), "worker {w} answered a histogram of {} buckets", c.len());
                    for (a, b) in counts.iter_mut().zip(c) {
                        *a = a.checked_add(b).context("a histogram's counts overflow")?;
                    }
                }
                sel.narrow(&counts).map_err(|e| anyhow::anyhow!("the workers answered {e}"))?;
            }
            SelectAsk::Gather { prefix, shift } => {
                let mut keys = Vec::new();
                let answers = ask_keys(steps, of, "send its keys under a prefix", Ask::Gather, prefix, shift).await?;
                for (w, r) in answers.iter().enumerate() {
                    keys.extend(bytes_u128("keys", &r.keys).with_context(|| format!("worker {w}'s keys"))?);
                }
                return sel.pick(keys).map(Some).map_err(|e| anyhow::anyhow!("the workers answered {e}"));
            }
        }
    }
}

/// The user blocks' sums in block order, checked against the item blocks'.
fn reduce(mut built: BlocksBuilt, users: &[&BlockReport], items: &[&BlockReport]) -> anyhow::Result<BlocksBuilt> {
    let lanes = |r: &BlockReport, v: &[u64], what: &str| -> anyhow::Result<[u64; 4]> {
        v.try_into()
            .map_err(|_| anyhow::anyhow!("block {} reported {} {what} lanes, not 4", r.block, v.len()))
    };
    let (mut user_cells, mut item_cells) = ([0u64; 4], [0u64; 4]);
    let mut value_sum = 0.0f64;
    for r in users {
        built.user_ratings.push(r.ratings);
        built.user_test_rows.push(r.test_rows);
        built.ratings += r.ratings;
        built.test_rows += r.test_rows;
        built.test_dropped_cold += r.test_dropped_cold;
        built.duplicates_merged += r.duplicates_merged;
        // Block by block, in block order: the in-process path's sum.
        value_sum += r.value_sum;
        built.training_range = (
            built.training_range.0.min(r.training_min),
            built.training_range.1.max(r.training_max),
        );
        built.fingerprint.merge(&DataFingerprint {
            lanes: lanes(r, &r.fingerprint, "fingerprint")?,
            ratings: r.ratings,
        });
        user_cells = add_cell_sums(user_cells, lanes(r, &r.cells, "cell")?);
        if let Some(h) = &mut built.held_out {
            h.fold_in += r.fold_in_rows;
            h.dropped_cold += r.held_out_dropped_cold;
            h.users_per_block.push(r.held_out_users);
            h.test_rows_per_block.push(r.held_out_test_rows);
        }
    }
    let mut item_ratings = 0;
    for r in items {
        item_ratings += r.ratings;
        item_cells = add_cell_sums(item_cells, lanes(r, &r.cells, "cell")?);
    }
    if item_ratings != built.ratings || item_cells != user_cells {
        bail!(
            "the workers' copies of the ratings disagree: {} by user, {item_ratings} by item, or the same count with other cells",
            built.ratings
        );
    }
    built.global_mean = value_sum / built.ratings.max(1) as f64;
    built.cells = user_cells;
    Ok(built)
}

/// Each block's report, from its owner, in block order.
fn by_block<'a>(
    resps: &'a [IngestResponse],
    side: impl Fn(&'a IngestResponse) -> &'a Vec<BlockReport>,
    owners: &[usize],
    what: &str,
) -> anyhow::Result<Vec<&'a BlockReport>> {
    let mut out: Vec<Option<&BlockReport>> = vec![None; owners.len()];
    for (w, resp) in resps.iter().enumerate() {
        for r in side(resp) {
            let b = r.block as usize;
            if owners.get(b) != Some(&w) || out[b].is_some() {
                bail!("worker {w} reported {what} block {} it does not build", r.block);
            }
            out[b] = Some(r);
        }
    }
    out.into_iter()
        .enumerate()
        .map(|(b, r)| r.with_context(|| format!("no worker reported {what} block {b}")))
        .collect()
}

/// 0, then the running sums of `counts`: each part's first place, then the total.
pub(crate) fn prefix(counts: impl Iterator<Item = u64>) -> Vec<u64> {
    let mut starts = vec![0];
    for c in counts {
        starts.push(starts.last().expect("not empty") + c);
    }
    starts
}

/// One step on every worker at once.
struct Steps<'a> {
    workers: &'a [WorkerHandle],
    job_id: &'a str,
    plan: &'a IngestPlan,
    faults: &'a FaultOptions,
}

impl Steps<'_> {
    async fn run(&self, what: &str, step: impl Fn(usize) -> Step) -> anyhow::Result<Vec<IngestResponse>> {
        let calls = self.workers.iter().enumerate().map(|(w, h)| self.call(h, what, step(w)));
        // The first failure ends the step: the others may be waiting on a lost worker.
        let t0 = std::time::Instant::now();
        let done = futures::future::try_join_all(calls).await.map_err(StepError::into_anyhow);
        tracing::debug!(step = what, seconds = t0.elapsed().as_secs_f64(), "building the blocks");
        done
    }

    /// One step on worker `h`, bounded by the step's time and the worker's health.
    async fn call(&self, h: &WorkerHandle, what: &str, step: Step) -> Result<IngestResponse, StepError> {
        let req = IngestRequest {
            job_id: self.job_id.to_owned(),
            peer_timeout_ms: self.plan.peer_timeout.as_millis().min(u32::MAX as u128) as u32,
            step: Some(step),
        };
        let mut client = h.client.clone();
        let call = async {
            tokio::select! {
                r = client.ingest(req) => Some(r),
                _ = watchdog(h, self.faults) => None,
            }
        };
        match tokio::time::timeout(self.plan.step_timeout, call).await {
            Ok(None) => Err(StepError::Lost(format!(
                "worker {} stopped answering health checks while it had to {what}",
                h.addr
            ))),
            Ok(Some(r)) => r.map(|r| r.into_inner()).map_err(|s| step_error(&h.addr, what, &s)),
            Err(_) => Err(StepError::Lost(format!(
                "worker {} did not {what} within {:?}",
                h.addr, self.plan.step_timeout
            ))),
        }
    }
}

/// A worker's answer to a step: lost only when it, or a peer it sends to,
/// could not be reached; out of reach when it may not read the input (no
/// --input-root, or the input outside it: the caller decides whether that
/// ends the run). Any other refusal (a budget exceeded, a bad line) fails
/// the run: shipping the blocks instead would hide a misconfigured cluster.
fn step_error(addr: &str, what: &str, s: &tonic::Status) -> StepError {
    use tonic::Code;
    let m = format!("worker {addr} could not {what}: {}", s.message());
    let unreachable = matches!(
        s.code(),
        Code::Unavailable | Code::Unknown | Code::Cancelled | Code::DeadlineExceeded
    );
    match fault_of(s) {
        Fault::Peer => StepError::Lost(m),
        Fault::Lost if unreachable => StepError::Lost(m),
        Fault::InputOutOfReach => StepError::InputOutOfReach(m),
        _ => StepError::Other(m),
    }
}

/// Best effort, after a failure: every worker forgets the blocks it was building.
async fn end_all(workers: &[WorkerHandle], job_id: &str, timeout: Duration) {
    let ends = workers.iter().map(|h| {
        let req = EndJobRequest { job_id: job_id.to_owned() };
        let mut c = h.client.clone();
        async move {
            let _ = tokio::time::timeout(timeout, c.end_job(req)).await;
        }
    });
    futures::future::join_all(ends).await;
}

/// Why a step failed on a worker: lost (it or a peer it sends to is gone),
/// or anything else (a bad input, a setting, a protocol breach).
enum StepError {
    Lost(String),
    /// The worker may not read the input (no --input-root, or the input is outside it).
    InputOutOfReach(String),
    Other(String),
}

impl StepError {
    fn into_anyhow(self) -> anyhow::Error {
        match self {
            StepError::Lost(m) => WorkerLost(m).into(),
            StepError::InputOutOfReach(m) => InputOutOfReach(m).into(),
            StepError::Other(m) => anyhow::anyhow!(m),
        }
    }
}

/// Building the blocks failed because a worker was lost or unreachable:
/// the coordinator, which holds the data, can ship them instead.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct WorkerLost(pub String);

/// A worker refused to read the input: it was started without an
/// --input-root, or the input is not under it. Where the workers read the
/// input only if they can, the coordinator loads it and ships the blocks.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InputOutOfReach(pub String);

#[cfg(test)]
mod tests;
