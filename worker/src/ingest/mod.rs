//! Building a job's blocks from the input, the coordinator reading none of
//! it (issue 14). The worker side of the steps of
//! [`als_core::data::ingest`], one call each, the coordinator driving them
//! in order and reducing what each worker reports:
//!
//! 1. read share i of n of the input ([`Ingest::read_share`]), and of a
//!    test file; for the temporal split, answer questions about the
//!    share's keys ([`Ingest::select_key`]);
//! 2. send each row to the owner of its user's block, split decided from
//!    its place ([`Ingest::route_share`]);
//! 3. gather each owned user block, decide the per-user split (or, asked
//!    about the users' keys, hold whole users out);
//! 4. number its users;
//! 5. merge each user's repeated pairs and send its training rows to the
//!    owners of their items' blocks;
//! 6. gather each owned item block; 7. number its items;
//! 7b. ask the item blocks' owners for the rows of the items the user
//!    blocks name ([`Ingest::finish_asks`], `LookupItems`), on every worker
//!    before any lays out, so no look-up waits on a peer's lay-out;
//! 8. lay out the blocks;
//! 9. once the job has started, make them its blocks ([`adopt`]).
//!
//! Rows between workers travel as streams of interned ids ([`rows`]). A step
//! that sends to peers is cut in two around the sends, so no lock is held
//! while a peer's call waits on this worker.

pub mod adopt;
pub mod rows;
pub(crate) mod service;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use als_core::data::ingest::{cell_sums, route_share, FinishedUserBlock, ItemBlock, ItemBoundPart, RoutedPart, UserBlock};
use als_core::data::select::{KeyPart, KeysPart, TemporalKeys, GATHER_LIMIT};
use als_core::data::split::{holdout_user_seed, key_ranks, HeldKeys, RatioThreshold};
use als_core::data::{Csr, DataFingerprint, DuplicatePolicy, Format, LoadOptions, RawRatings, Share};
use als_proto::pb::split_rule::Kind;
use als_proto::pb::{BlockOwners, BlockReport, IngestRowsChunk, InputSpec, SplitRule};
use rayon::prelude::*;
use rustc_hash::FxHashMap;

use crate::job::JobError;
use rows::{held_bytes, item_bound_chunks, routed_chunks};

/// Where each block of a side is built: owner indices into the workers' addresses.
#[derive(Debug, Clone)]
pub struct Owners {
    pub workers: Vec<String>,
    pub owners: Vec<u32>,
}

impl Owners {
    fn from_pb(o: Option<&BlockOwners>, blocks: usize) -> Result<Owners, JobError> {
        let o = o.ok_or_else(|| invalid("missing block owners"))?;
        if o.owners.len() != blocks {
            return Err(invalid(format!("{} block owners for {blocks} blocks", o.owners.len())));
        }
        if let Some(w) = o.owners.iter().find(|&&w| w as usize >= o.workers.len()) {
            return Err(invalid(format!("block owner {w} is not one of the {} workers", o.workers.len())));
        }
        Ok(Owners {
            workers: o.workers.clone(),
            owners: o.owners.clone(),
        })
    }

    fn owned_by(&self, w: u32) -> impl Iterator<Item = u32> + '_ {
        (0..self.owners.len() as u32).filter(move |&b| self.owners[b as usize] == w)
    }
}

fn invalid(m: impl Into<String>) -> JobError {
    JobError::Invalid(m.into())
}

/// The longest id a coordinator may have workers accept (a row of two
/// such ids still fits a message many times over).
const MAX_ID_BYTES: usize = 1 << 16;

/// The loader's options from the wire.
pub fn load_options(s: &InputSpec) -> Result<LoadOptions, JobError> {
    let format: Format = s.format.parse().map_err(invalid)?;
    let max_id_len = s.max_id_len as usize;
    if max_id_len == 0 || max_id_len > MAX_ID_BYTES {
        return Err(invalid(format!("max_id_len {max_id_len} is outside 1..={MAX_ID_BYTES}")));
    }
    Ok(LoadOptions {
        format,
        header: s.header,
        user_col: s.user_col as usize,
        item_col: s.item_col as usize,
        rating_col: s.rating_col.map(|c| c as usize),
        timestamp_col: s.timestamp_col.map(|c| c as usize),
        skip_invalid: s.skip_invalid,
        max_id_len,
    })
}

/// What the steps so far have done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    ShareRead,
    ShareRouted,
    UsersGathered,
    UsersNumbered,
    ItemsRouted,
    ItemsGathered,
    ItemsNumbered,
    ItemsLookedUp,
    Finished,
}

/// A split decided by the place of a row, by its key against the first
/// test key, or by the user's block.
#[derive(Debug, Clone, Copy)]
enum Rule {
    None,
    Ratio {
        test_frac: f64,
        seed: u64,
    },
    PerUser {
        test_frac: f64,
        seed: u64,
    },
    KFold {
        folds: u32,
        fold: u32,
        seed: u64,
    },
    /// `None`: no row is held out.
    Temporal {
        first_test_key: Option<u128>,
    },
    /// Whole users, by their hold-out keys under the split seed.
    Users {
        held: HeldKeys,
        seed: u64,
    },
}

fn rule_of(r: Option<&SplitRule>) -> Result<Rule, JobError> {
    let Some(r) = r else { return Ok(Rule::None) };
    let frac = || match r.test_frac {
        f if (0.0..1.0).contains(&f) => Ok(f),
        f => Err(invalid(format!("test fraction {f} is outside [0, 1)"))),
    };
    Ok(
        match Kind::try_from(r.kind).map_err(|_| invalid(format!("unknown split kind {}", r.kind)))? {
            Kind::None => Rule::None,
            Kind::Ratio => Rule::Ratio {
                test_frac: frac()?,
                seed: r.seed,
            },
            Kind::PerUser => Rule::PerUser {
                test_frac: frac()?,
                seed: r.seed,
            },
            Kind::KFold if r.folds >= 2 && r.fold < r.folds => Rule::KFold {
                folds: r.folds,
                fold: r.fold,
                seed: r.seed,
            },
            Kind::KFold => return Err(invalid(format!("fold {} of {} folds", r.fold, r.folds))),
            Kind::Temporal => Rule::Temporal {
                first_test_key: optional_key(&r.first_test_key)?,
            },
            Kind::Users => Rule::Users {
                held: HeldKeys {
                    from: optional_key(&r.held_from_key)?,
                    to: optional_key(&r.held_to_key)?,
                },
                seed: r.seed,
            },
        },
    )
}

/// A u128 key from its 16 bytes, little endian.
pub(crate) fn key_of(b: &[u8]) -> Result<u128, JobError> {
    let b: [u8; 16] = b.try_into().map_err(|_| invalid(format!("a key of {} bytes, not 16", b.len())))?;
    Ok(u128::from_le_bytes(b))
}

/// A key, or none for no bytes.
fn optional_key(b: &[u8]) -> Result<Option<u128>, JobError> {
    match b.is_empty() {
        true => Ok(None),
        false => key_of(b).map(Some),
    }
}

/// What this worker reads at step 1.
pub struct ShareToRead {
    pub path: PathBuf,
    pub opts: LoadOptions,
    /// A test file read in shares alongside (`--test FILE`): every row held out.
    pub test: Option<(PathBuf, LoadOptions)>,
    pub share: Share,
}

/// Which keys a selection asks about.
#[derive(Debug, Clone, Copy)]
pub enum KeysOf {
    /// The share's `(timestamp, place)` keys, its first row at
    /// `first_place` of `input_rows` (before step 2).
    Temporal { first_place: u64, input_rows: u64 },
    /// The hold-out keys of the users of this worker's user blocks (after step 3).
    UserHoldout { user_seed: u64 },
}

/// A question of a selection (the temporal split's, the users split's) about some keys.
#[derive(Debug, Clone, Copy)]
pub enum KeyQuestion {
    Range,
    Histogram { prefix: u128, shift: u32 },
    Gather { prefix: u128, shift: u32 },
}

/// Its answer: the keys' count with their range, a histogram, or keys.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyAnswer {
    Range(u64, Option<(u128, u128)>),
    Histogram(Vec<u64>),
    Keys(Vec<u128>),
}

/// Non-empty parts by block: those of blocks built here kept, the others
/// encoded (one per core) as streams to their blocks' owners.
fn keep_or_send<P: Send>(
    parts: Vec<(u32, P)>,
    at: &Owners,
    you: u32,
    rows: impl Fn(&P) -> usize,
    encode: impl Fn(u32, &P) -> Vec<IngestRowsChunk> + Sync,
) -> (Vec<(u32, P)>, Outgoing) {
    let (own, sent): (Vec<_>, Vec<_>) = parts
        .into_iter()
        .filter(|(_, p)| rows(p) > 0)
        .partition(|(b, _)| at.owners[*b as usize] == you);
    let out = sent
        .into_par_iter()
        .map(|(b, p)| (at.workers[at.owners[b as usize] as usize].clone(), encode(b, &p)))
        .collect();
    (own, out)
}

/// Whether `n` rows from place `first` fit an input of `input_rows`.
fn fits_input(first: u64, n: usize, input_rows: u64) -> bool {
    first.checked_add(n as u64).is_some_and(|end| end <= input_rows)
}

/// A share's timestamps, which the temporal split needs.
fn timestamps_of<'a>(raw: &'a RawRatings, source: &str) -> Result<&'a [i64], JobError> {
    raw.timestamps.as_deref().ok_or_else(|| {
        invalid(format!(
            "the temporal split needs timestamps, and {source} has none (a timestamp column on every row)"
        ))
    })
}

/// A selection's answer from `keys`, bounded: a gather returns at most
/// [`GATHER_LIMIT`] keys, since a selection gathers only once few are left.
fn answer(keys: &dyn KeyPart, q: KeyQuestion) -> Result<KeyAnswer, JobError> {
    Ok(match q {
        KeyQuestion::Range => KeyAnswer::Range(keys.count(), keys.range()),
        KeyQuestion::Histogram { prefix, shift } => {
            if !(16..=128).contains(&shift) {
                return Err(invalid(format!("a histogram below a shift of {shift} bits")));
            }
            KeyAnswer::Histogram(keys.histogram(prefix, shift))
        }
        KeyQuestion::Gather { prefix, shift } => {
            if shift > 128 {
                return Err(invalid(format!("a shift of {shift} bits")));
            }
            // Counted first: a question cannot make this worker gather its share.
            let n = keys.count_under(prefix, shift);
            if n > GATHER_LIMIT {
                return Err(invalid(format!(
                    "{n} keys under the prefix, more than the {GATHER_LIMIT} a gather may return"
                )));
            }
            KeyAnswer::Keys(keys.keys_under(prefix, shift))
        }
    })
}

/// Rows one step sends to peers: per (worker address, block), its chunks.
pub type Outgoing = Vec<(String, Vec<IngestRowsChunk>)>;

/// One job's blocks being built on this worker.
pub struct Ingest {
    pub id: String,
    pub last_activity: Instant,
    pub stage: Stage,
    budget: u64,
    /// Bytes of rows held, against `budget`.
    held: u64,
    source: String,
    max_id_len: usize,
    blocks: usize,
    users_at: Owners,
    items_at: Owners,
    you: u32,
    share: Option<RawRatings>,
    /// The test file's share (with `--test FILE`).
    test_share: Option<RawRatings>,
    input_rows: u64,
    user_parts: BTreeMap<u32, Vec<RoutedPart>>,
    item_parts: BTreeMap<u32, Vec<ItemBoundPart>>,
    users: BTreeMap<u32, UserBlock>,
    items: BTreeMap<u32, ItemBlock>,
    user_starts: Vec<u64>,
    item_starts: Vec<u64>,
    /// The item indices the user blocks asked for (item id → its row in its
    /// block; `None`: no training rating), after [`Stage::ItemsLookedUp`].
    answers: FxHashMap<String, Option<u32>>,
    /// The blocks laid out (after [`Stage::Finished`]).
    pub finished_users: BTreeMap<u32, FinishedUserBlock>,
    pub finished_items: BTreeMap<u32, Csr>,
}

impl Ingest {
    /// Step 1: read this worker's share of the input (and of the test file).
    pub fn read_share(
        id: String,
        budget: u64,
        input: &ShareToRead,
        blocks: usize,
        (users_at, items_at): (Owners, Owners),
        you: u32,
    ) -> Result<Ingest, JobError> {
        if you as usize >= users_at.workers.len() || users_at.workers != items_at.workers {
            return Err(invalid("this worker is not one of the block owners' workers"));
        }
        let share = input.share;
        let mut held = 0;
        let mut read = |path: &std::path::Path, opts: &LoadOptions| -> Result<RawRatings, JobError> {
            let raw = als_core::data::load_share(path, opts, share).map_err(|e| invalid(e.to_string()))?;
            held += held_bytes(&raw.user_tokens, raw.len()) + held_bytes(&raw.item_tokens, 0);
            if held > budget {
                return Err(JobError::OverBudget(format!(
                    "share {} of {} of {} takes about {held} bytes, over this worker's budget of {budget}",
                    share.index,
                    share.count,
                    path.display()
                )));
            }
            Ok(raw)
        };
        let raw = read(&input.path, &input.opts)?;
        let test_share = input.test.as_ref().map(|(p, o)| read(p, o)).transpose()?;
        let (path, opts) = (&input.path, &input.opts);
        let owned = |o: &Owners| o.owned_by(you).collect::<Vec<_>>();
        Ok(Ingest {
            id,
            last_activity: Instant::now(),
            stage: Stage::ShareRead,
            budget,
            held,
            source: path.display().to_string(),
            max_id_len: opts.max_id_len,
            blocks,
            user_parts: owned(&users_at).into_iter().map(|b| (b, Vec::new())).collect(),
            item_parts: owned(&items_at).into_iter().map(|b| (b, Vec::new())).collect(),
            users_at,
            items_at,
            you,
            share: Some(raw),
            test_share,
            input_rows: 0,
            users: BTreeMap::new(),
            items: BTreeMap::new(),
            user_starts: Vec::new(),
            item_starts: Vec::new(),
            answers: FxHashMap::default(),
            finished_users: BTreeMap::new(),
            finished_items: BTreeMap::new(),
        })
    }

    /// The share's rows, lines skipped (the test file's too) and values'
    /// range, then the test file share's rows.
    pub fn share_summary(&self) -> (u64, u64, f32, f32, u64) {
        let raw = self.share.as_ref().expect("read");
        let (lo, hi) = als_core::data::value_range(raw.ratings.iter().copied());
        let (test_rows, test_skipped) = self.test_share.as_ref().map_or((0, 0), |t| (t.len() as u64, t.skipped_lines));
        (raw.len() as u64, raw.skipped_lines + test_skipped, lo, hi, test_rows)
    }

    /// A question of a selection about this worker's keys: the temporal
    /// split's between steps 1 and 2, the users split's between 3 and 4.
    pub fn select_key(&mut self, of: KeysOf, q: KeyQuestion) -> Result<KeyAnswer, JobError> {
        match of {
            KeysOf::Temporal { first_place, input_rows } => {
                self.expect(Stage::ShareRead, "selecting the first test key")?;
                let raw = self.share.as_ref().expect("read");
                if !fits_input(first_place, raw.len(), input_rows) {
                    return Err(invalid(format!(
                        "a share of {} rows from place {first_place} does not fit an input of {input_rows}",
                        raw.len()
                    )));
                }
                let keys = TemporalKeys {
                    timestamps: timestamps_of(raw, &self.source)?,
                    first_row: first_place,
                };
                answer(&keys, q)
            }
            KeysOf::UserHoldout { user_seed } => {
                self.expect(Stage::UsersGathered, "selecting the held-out users")?;
                let keys: Vec<u128> = self.users.values().flat_map(|u| u.holdout_keys(user_seed)).collect();
                answer(&KeysPart(&keys), q)
            }
        }
    }

    /// Between steps 3 and 4 (`--split users`): set the held-out users'
    /// rows apart (they are folded in and scored at evaluations), and say
    /// again whether each block's users are integers, and whether its
    /// held-out users are.
    pub fn hold_out_users(&mut self, split: Option<&SplitRule>) -> Result<Vec<BlockReport>, JobError> {
        self.expect(Stage::UsersGathered, "holding users out")?;
        let Rule::Users { held, seed } = rule_of(split)? else {
            return Err(invalid("holding users out needs the users split's rule"));
        };
        let user_seed = holdout_user_seed(seed);
        let mut apart = 0;
        for u in self.users.values_mut() {
            apart += u.hold_out_users(user_seed, &held, seed);
        }
        tracing::debug!(job = %self.id, rows = apart, "held-out users' rows set apart");
        Ok(self
            .users
            .iter()
            .map(|(&b, u)| {
                report(b, |r| {
                    r.integers = u.users_are_integers();
                    r.held_out_integers = u.held_out_are_integers();
                })
            })
            .collect())
    }

    /// Bytes the budget has left.
    pub fn room(&self) -> u64 {
        self.budget.saturating_sub(self.held)
    }

    pub fn max_id_len(&self) -> usize {
        self.max_id_len
    }

    fn expect(&self, want: Stage, step: &str) -> Result<(), JobError> {
        match self.stage == want {
            true => Ok(()),
            false => Err(JobError::NotReady(format!("{step} after {:?}, not {want:?}", self.stage))),
        }
    }

    /// Hold `bytes` more, or refuse.
    fn hold(&mut self, bytes: u64) -> Result<(), JobError> {
        if self.held + bytes > self.budget {
            return Err(JobError::OverBudget(format!(
                "rows of {} bytes on top of {} held exceed this worker's budget of {}",
                bytes, self.held, self.budget
            )));
        }
        self.held += bytes;
        Ok(())
    }

    /// Step 2: the share's rows by user block; this worker's own are kept,
    /// the rest returned to be sent.
    pub fn route_share(
        &mut self,
        (first_place, test_first_place): (u64, u64),
        input_rows: u64,
        split: Option<&SplitRule>,
    ) -> Result<Outgoing, JobError> {
        self.expect(Stage::ShareRead, "routing the share")?;
        let raw = self.share.take().expect("read");
        let test_raw = self.test_share.take();
        let test_n = test_raw.as_ref().map_or(0, |t| t.len());
        if !fits_input(first_place, raw.len(), input_rows) || !fits_input(test_first_place, test_n, input_rows) {
            return Err(invalid(format!(
                "a share of {} rows from place {first_place} (and {test_n} test rows from {test_first_place}) does not fit an input of {input_rows}",
                raw.len()
            )));
        }
        let n = raw.len() as u64;
        self.input_rows = input_rows;
        let is_test: Box<dyn Fn(u64) -> bool> = match rule_of(split)? {
            Rule::None | Rule::PerUser { .. } | Rule::Users { .. } => Box::new(|_| false),
            Rule::Ratio { test_frac, seed } => {
                let t = RatioThreshold::new(input_rows, (input_rows as f64 * test_frac).floor() as u64, seed);
                Box::new(move |p| t.is_test(p))
            }
            Rule::KFold { folds, fold, seed } => {
                let places: Vec<u64> = (first_place..first_place + n).collect();
                let ranks = key_ranks(input_rows, seed, &places);
                Box::new(move |p| ranks[(p - first_place) as usize] % folds as u64 == fold as u64)
            }
            Rule::Temporal { first_test_key: None } => Box::new(|_| false),
            Rule::Temporal {
                first_test_key: Some(first),
            } => {
                let keys = TemporalKeys {
                    timestamps: timestamps_of(&raw, &self.source)?,
                    first_row: first_place,
                };
                Box::new(move |p| keys.key((p - first_place) as usize) >= first)
            }
        };
        let mut by_block: Vec<(u32, RoutedPart)> = route_share(&raw, first_place, self.blocks, &*is_test)
            .into_iter()
            .enumerate()
            .map(|(b, p)| (b as u32, p))
            .collect();
        drop(is_test);
        drop(raw);
        if let Some(t) = test_raw {
            // A test file's rows follow the input's, every one held out.
            let parts = route_share(&t, test_first_place, self.blocks, &|_| true);
            by_block.extend(parts.into_iter().enumerate().map(|(b, p)| (b as u32, p)));
        }
        let id = &self.id;
        let (own, out) = keep_or_send(by_block, &self.users_at, self.you, |p| p.rows.len(), |b, p| routed_chunks(id, b, p));
        for (b, part) in own {
            self.user_parts.get_mut(&b).expect("owned").push(part);
        }
        // What stays was counted as the share; what left is no longer held.
        self.held = self.held_parts();
        self.stage = Stage::ShareRouted;
        Ok(out)
    }

    fn held_parts(&self) -> u64 {
        let users: u64 = self.user_parts.values().flatten().map(|p| held_bytes(&p.ids, p.rows.len())).sum();
        let items: u64 = self.item_parts.values().flatten().map(|p| held_bytes(&p.ids, p.rows.len())).sum();
        users + items
    }

    /// A peer's rows for one of this worker's blocks (any time between the
    /// steps that send them and the step that gathers them).
    pub fn receive(&mut self, chunks: &[IngestRowsChunk]) -> Result<(), JobError> {
        let Some(first) = chunks.first() else { return Ok(()) };
        let (to_items, block) = (first.to_items, first.block);
        let window = match to_items {
            false => Stage::ShareRead..=Stage::ShareRouted,
            true => Stage::UsersNumbered..=Stage::ItemsRouted,
        };
        if !window.contains(&self.stage) {
            return Err(JobError::NotReady(format!(
                "rows for {} blocks while {:?}",
                side_name(to_items),
                self.stage
            )));
        }
        let owned = match to_items {
            false => self.user_parts.contains_key(&block),
            true => self.item_parts.contains_key(&block),
        };
        if !owned {
            return Err(invalid(format!(
                "{} block {block} is not built on this worker",
                side_name(to_items)
            )));
        }
        if to_items {
            let part = rows::decode_item_bound(chunks, self.max_id_len).map_err(invalid)?;
            self.hold(held_bytes(&part.ids, part.rows.len()))?;
            self.item_parts.get_mut(&block).expect("owned").push(part);
        } else {
            let part = rows::decode_routed(chunks, self.max_id_len).map_err(invalid)?;
            self.hold(held_bytes(&part.ids, part.rows.len()))?;
            self.user_parts.get_mut(&block).expect("owned").push(part);
        }
        Ok(())
    }

    /// Step 3: every row has reached its user block.
    pub fn gather_users(&mut self, split: Option<&SplitRule>) -> Result<Vec<BlockReport>, JobError> {
        self.expect(Stage::ShareRouted, "gathering the user blocks")?;
        let rule = rule_of(split)?;
        let input_rows = self.input_rows;
        // Blocks are independent: one per core.
        let gathered: Vec<(u32, UserBlock)> = std::mem::take(&mut self.user_parts)
            .into_par_iter()
            .map(|(b, parts)| {
                let mut block = UserBlock::new(parts);
                check_places(block.places(), input_rows, b)?;
                if let Rule::PerUser { test_frac, seed } = rule {
                    block.split_per_user(test_frac, seed);
                }
                Ok((b, block))
            })
            .collect::<Result<_, JobError>>()?;
        self.users.extend(gathered);
        self.stage = Stage::UsersGathered;
        Ok(self
            .users
            .iter()
            .map(|(&b, u)| report(b, |r| r.integers = u.users_are_integers()))
            .collect())
    }

    /// Step 4, the held-out users numbered apart (`--split users`).
    pub fn number_users(&mut self, numeric: bool, held_out_numeric: bool) -> Result<Vec<BlockReport>, JobError> {
        self.expect(Stage::UsersGathered, "numbering the users")?;
        for u in self.users.values_mut() {
            u.number_users(numeric);
            u.number_held_out(held_out_numeric);
        }
        self.stage = Stage::UsersNumbered;
        Ok(self
            .users
            .iter()
            .map(|(&b, u)| report(b, |r| r.ids = u.user_ids.len() as u64))
            .collect())
    }

    /// Step 5: each user block's training rows by item block, users
    /// numbered from `user_starts`; this worker's own are kept.
    pub fn route_items(&mut self, user_starts: &[u64], duplicates: DuplicatePolicy) -> Result<Outgoing, JobError> {
        self.expect(Stage::UsersNumbered, "routing the training rows")?;
        check_starts(user_starts, self.blocks, "user")?;
        for (&b, u) in &self.users {
            let span = user_starts[b as usize + 1] - user_starts[b as usize];
            if span != u.user_ids.len() as u64 {
                return Err(invalid(format!(
                    "user block {b} has {} users, the starts give it {span}",
                    u.user_ids.len()
                )));
            }
        }
        self.user_starts = user_starts.to_vec();
        let n_blocks = self.blocks;
        // Blocks are independent: one per core, and so are the streams.
        let parts: Vec<(u32, ItemBoundPart)> = self
            .users
            .par_iter_mut()
            .map(|(&b, u)| {
                let parts = u.item_rows(user_starts[b as usize] as u32, n_blocks, duplicates);
                parts.into_iter().enumerate().map(|(ib, p)| (ib as u32, p)).collect::<Vec<_>>()
            })
            .flatten()
            .collect();
        let id = &self.id;
        let (own, out) = keep_or_send(
            parts,
            &self.items_at,
            self.you,
            |p| p.rows.len(),
            |b, p| item_bound_chunks(id, b, p),
        );
        for (ib, part) in own {
            self.hold(held_bytes(&part.ids, part.rows.len()))?;
            self.item_parts.get_mut(&ib).expect("owned").push(part);
        }
        self.stage = Stage::ItemsRouted;
        Ok(out)
    }

    /// Step 6: every training row has reached its item block.
    pub fn gather_items(&mut self) -> Result<Vec<BlockReport>, JobError> {
        self.expect(Stage::ItemsRouted, "gathering the item blocks")?;
        let n_users = *self.user_starts.last().expect("routed");
        let gathered: Vec<(u32, ItemBlock)> = std::mem::take(&mut self.item_parts)
            .into_par_iter()
            .map(|(b, parts)| {
                let block = ItemBlock::new(parts);
                let outside = block.users().find(|&u| u as u64 >= n_users);
                match outside {
                    Some(u) => Err(invalid(format!("item block {b}: user row {u} of {n_users}"))),
                    None => Ok((b, block)),
                }
            })
            .collect::<Result<_, JobError>>()?;
        self.items.extend(gathered);
        self.stage = Stage::ItemsGathered;
        Ok(self
            .items
            .iter()
            .map(|(&b, i)| report(b, |r| r.integers = i.items_are_integers()))
            .collect())
    }

    /// Step 7.
    pub fn number_items(&mut self, numeric: bool) -> Result<Vec<BlockReport>, JobError> {
        self.expect(Stage::ItemsGathered, "numbering the items")?;
        for i in self.items.values_mut() {
            i.number_items(numeric);
        }
        self.stage = Stage::ItemsNumbered;
        Ok(self
            .items
            .iter()
            .map(|(&b, i)| report(b, |r| r.ids = i.item_ids.len() as u64))
            .collect())
    }

    /// The rows of this worker's item block `block` for the ids asked
    /// (`None`: no training rating), or why not.
    pub fn look_up(&self, block: u32, ids: &[String]) -> Result<Vec<Option<u32>>, JobError> {
        if !(Stage::ItemsNumbered..=Stage::Finished).contains(&self.stage) {
            return Err(JobError::NotReady(format!("items looked up while {:?}", self.stage)));
        }
        let items = self
            .items
            .get(&block)
            .ok_or_else(|| invalid(format!("item block {block} is not built on this worker")))?;
        Ok(ids.iter().map(|i| items.index_of(i)).collect())
    }

    /// Step 7b, first half: the items each user block names, by item block:
    /// what to ask which worker.
    pub fn finish_asks(&self) -> Result<Vec<(u32, String, Vec<String>)>, JobError> {
        self.expect(Stage::ItemsNumbered, "looking the items up")?;
        let mut by_block: BTreeMap<u32, Vec<String>> = BTreeMap::new();
        let mut seen: FxHashMap<&str, ()> = FxHashMap::default();
        for u in self.users.values() {
            for item in u.items_named() {
                if seen.insert(item, ()).is_none() {
                    by_block
                        .entry(als_core::data::ids::block_of_id(item, self.blocks) as u32)
                        .or_default()
                        .push(item.to_owned());
                }
            }
        }
        Ok(by_block
            .into_iter()
            .map(|(b, ids)| (b, self.items_at.workers[self.items_at.owners[b as usize] as usize].clone(), ids))
            .collect())
    }

    /// Step 7b, second half: the answers to every ask.
    pub fn looked_up(&mut self, answers: FxHashMap<String, Option<u32>>) -> Result<(), JobError> {
        self.expect(Stage::ItemsNumbered, "looking the items up")?;
        self.answers = answers;
        self.stage = Stage::ItemsLookedUp;
        Ok(())
    }

    /// Whether this worker builds item block `block` (its look-ups are answered here).
    pub fn builds_item_block(&self, block: u32) -> bool {
        self.items_at.owners.get(block as usize) == Some(&self.you)
    }

    /// Step 8: lay out every block with the answers of step 7b (item id →
    /// its block-local row) and report each.
    pub fn finish(&mut self, item_starts: &[u64]) -> Result<(Vec<BlockReport>, Vec<BlockReport>), JobError> {
        self.expect(Stage::ItemsLookedUp, "laying out the blocks")?;
        let answers = std::mem::take(&mut self.answers);
        check_starts(item_starts, self.blocks, "item")?;
        for (&b, i) in &self.items {
            if item_starts[b as usize + 1] - item_starts[b as usize] != i.item_ids.len() as u64 {
                return Err(invalid(format!(
                    "item block {b}: the starts disagree with its {} items",
                    i.item_ids.len()
                )));
            }
        }
        let n_items = *item_starts.last().expect("checked") as usize;
        let n_blocks = self.blocks;
        let global = |item: &str| -> Option<u32> {
            let local = answers.get(item).copied().flatten()?;
            let b = als_core::data::ids::block_of_id(item, n_blocks);
            Some(item_starts[b] as u32 + local)
        };
        let t0 = Instant::now();
        // Blocks are independent: one per core, reports kept in block order.
        let (user_starts, source) = (&self.user_starts, &self.source);
        let users: Vec<(u32, FinishedUserBlock, BlockReport)> = self
            .users
            .par_iter()
            .map(|(&b, u)| {
                let first_user = user_starts[b as usize] as u32;
                let done = u.finish(first_user, n_items, source, &global).map_err(|e| invalid(e.to_string()))?;
                let names: Vec<(u32, &str)> = u.items_named().into_iter().filter_map(|i| Some((global(i)?, i))).collect();
                let mut fp = DataFingerprint::default();
                fp.add_user_block(&u.user_ids, &done.by_user, &names);
                let value_sum = done.by_user.values.iter().map(|&x| x as f64).sum::<f64>();
                let r = report(b, |r| {
                    r.ids = u.user_ids.len() as u64;
                    r.ratings = done.by_user.nnz() as u64;
                    r.test_rows = done.test.len() as u64;
                    r.test_dropped_cold = done.test_dropped_cold as u64;
                    r.duplicates_merged = done.duplicates_merged as u64;
                    r.value_sum = value_sum;
                    (r.training_min, r.training_max) = done.training_range;
                    r.fingerprint = fp.lanes.to_vec();
                    r.cells = cell_sums(&done.by_user, first_user, true).to_vec();
                    if let Some(h) = &done.held_out {
                        r.held_out_users = h.n_users() as u64;
                        r.fold_in_rows = h.fold_in.nnz() as u64;
                        r.held_out_test_rows = h.test.len() as u64;
                        r.held_out_dropped_cold = h.dropped_cold as u64;
                    }
                });
                Ok((b, done, r))
            })
            .collect::<Result<_, JobError>>()?;
        let t1 = Instant::now();
        let n_users = *self.user_starts.last().expect("routed") as usize;
        let items: Vec<(u32, Csr, BlockReport)> = self
            .items
            .par_iter()
            .map(|(&b, i)| {
                let by_item = i.by_item(n_users).map_err(|e| invalid(format!("item block {b}: {e}")))?;
                let r = report(b, |r| {
                    r.ids = i.item_ids.len() as u64;
                    r.ratings = by_item.nnz() as u64;
                    r.cells = cell_sums(&by_item, item_starts[b as usize] as u32, false).to_vec();
                });
                Ok((b, by_item, r))
            })
            .collect::<Result<_, JobError>>()?;
        let mut user_reports = Vec::with_capacity(users.len());
        for (b, done, r) in users {
            self.finished_users.insert(b, done);
            user_reports.push(r);
        }
        let mut item_reports = Vec::with_capacity(items.len());
        for (b, by_item, r) in items {
            self.finished_items.insert(b, by_item);
            item_reports.push(r);
        }
        tracing::debug!(
            job = %self.id,
            user_blocks = format_args!("{:.2}", (t1 - t0).as_secs_f64()),
            item_blocks = format_args!("{:.2}", t1.elapsed().as_secs_f64()),
            "blocks laid out (seconds)"
        );
        self.item_starts = item_starts.to_vec();
        self.stage = Stage::Finished;
        Ok((user_reports, item_reports))
    }
}

/// Bytes a block's description may take: under the coordinator's 16 MiB
/// message limit, with room for the message's framing.
pub const DESCRIBE_LIMIT: usize = 15 << 20;

/// One finished block as the coordinator learns it (`Describe`).
#[derive(Debug, Clone, PartialEq)]
pub struct BlockDescription {
    /// Where asked: the ids as an id table ([`als_proto::codec::id_table`]).
    pub id_bytes: Vec<u8>,
    pub id_ends: Vec<u8>,
    /// The ids' bytes as lines of an ids file (each id and its `\n`).
    pub id_line_bytes: u64,
    /// Where asked: the other side's rows the block references, ascending.
    /// Otherwise they stay here, and the routes count them (`Subscribe`).
    pub needed: Vec<u32>,
    /// User blocks: users with a test row valued `min_pos` or more (held-out users' too).
    pub eval_users: u64,
}

impl Ingest {
    /// Finished block `block` of the users' side (`users`) or the items':
    /// its ids' bytes as lines, with `ids` the ids themselves, with
    /// `references` the rows of the other side it references, and (user
    /// blocks) its users with a test row of `min_pos` or more.
    pub fn describe(
        &self,
        users: bool,
        block: u32,
        min_pos: f32,
        (references, ids_too): (bool, bool),
    ) -> Result<BlockDescription, JobError> {
        self.expect(Stage::Finished, "describing a block")?;
        let side = if users { "user" } else { "item" };
        let missing = || invalid(format!("this worker holds no {side} block {block}"));
        let (ids, csr, eval_users) = if users {
            let done = self.finished_users.get(&block).ok_or_else(missing)?;
            let ids = &self.users.get(&block).ok_or_else(missing)?.user_ids;
            // Its users' and its held-out users' (numbered apart) with a relevant test row.
            let mut scored = users_scored(done.test.iter().map(|t| (t.0, t.2)), min_pos);
            if let Some(h) = &done.held_out {
                scored += users_scored(h.test.users.iter().copied().zip(h.test.ratings.iter().copied()), min_pos);
            }
            (ids, &done.by_user, scored)
        } else {
            let by_item = self.finished_items.get(&block).ok_or_else(missing)?;
            (&self.items.get(&block).ok_or_else(missing)?.item_ids, by_item, 0)
        };
        let needed = if references { adopt::referenced_rows(csr) } else { Vec::new() };
        let id_line_bytes = als_core::model::id_lines::id_line_bytes(ids);
        let (id_bytes, id_ends) = if ids_too {
            als_proto::codec::id_table(ids)
        } else {
            Default::default()
        };
        let bytes = id_bytes.len() + id_ends.len() + 4 * needed.len();
        if bytes > DESCRIBE_LIMIT {
            return Err(invalid(format!(
                "{side} block {block} takes {bytes} bytes to describe (ids and the rows it references), \
                 over the {DESCRIBE_LIMIT}-byte limit of a message: train with more blocks (--blocks)"
            )));
        }
        Ok(BlockDescription {
            id_bytes,
            id_ends,
            id_line_bytes,
            needed,
            eval_users,
        })
    }
}

/// The distinct users of `test` rows (user, value) valued `min_pos` or more.
fn users_scored(test: impl Iterator<Item = (u32, f32)>, min_pos: f32) -> u64 {
    let mut users: Vec<u32> = test.filter(|t| t.1 >= min_pos).map(|t| t.0).collect();
    users.sort_unstable();
    users.dedup();
    users.len() as u64
}

fn side_name(to_items: bool) -> &'static str {
    if to_items {
        "item"
    } else {
        "user"
    }
}

fn report(block: u32, fill: impl FnOnce(&mut BlockReport)) -> BlockReport {
    let mut r = BlockReport {
        block,
        ..Default::default()
    };
    fill(&mut r);
    r
}

/// A block's rows are distinct places of the input, in order (senders
/// that disagree on the input, or send a row twice, are caught here).
fn check_places(places: impl Iterator<Item = u64>, input_rows: u64, block: u32) -> Result<(), JobError> {
    let mut last: Option<u64> = None;
    for p in places {
        if p >= input_rows || last.is_some_and(|l| l >= p) {
            return Err(invalid(format!(
                "block {block}: row place {p} is repeated or outside the input's {input_rows} rows"
            )));
        }
        last = Some(p);
    }
    Ok(())
}

/// Starts of `blocks` blocks: `blocks + 1` non-decreasing, from 0, within u32 rows.
fn check_starts(starts: &[u64], blocks: usize, side: &str) -> Result<(), JobError> {
    let ok = starts.len() == blocks + 1 && starts[0] == 0 && starts.windows(2).all(|w| w[0] <= w[1]) && starts[blocks] <= u32::MAX as u64;
    match ok {
        true => Ok(()),
        false => Err(invalid(format!(
            "{side} block starts {starts:?} are not {} ascending rows from 0",
            blocks + 1
        ))),
    }
}

#[cfg(test)]
mod tests;
