//! Blocks built by workers that each read a share equal the whole-file
//! dataset's, for 1, 2 and 3 workers, every split the workers decide, and
//! both kinds of ids.

use std::time::Duration;

use als_core::data::ingest::cell_sums;
use als_core::data::split::{split_rows, split_users, UserHoldout};
use als_core::data::{load_ratings, Dataset, DuplicatePolicy, LoadOptions, SplitSpec};
use als_core::rng::SplitMix64;
use als_core::train::{DataShape, Layouts};

use super::{build, build_blocks, describe_blocks, BlocksBuilt, BlocksDescribed, DescribeAsk, HeldOutBuilt, IngestPlan};
use crate::cluster::client::{connect, ClientOptions};
use crate::cluster::ratings::{OnWorkers, RatingsAt};
use crate::cluster::LocalWorkers;

/// Repeated pairs, integer or other ids, items seen only in test rows,
/// timestamps with many ties.
fn ratings_text(rows: usize, integer_ids: bool, seed: u64) -> String {
    let mut s = SplitMix64::new(seed);
    let mut t = String::from("user,item,rating,timestamp\n");
    for _ in 0..rows {
        let u = s.next_u64() % 2000;
        let i = match s.next_u64().is_multiple_of(10) {
            true => 500 + s.next_u64() % 400,
            false => s.next_u64() % 60,
        };
        let user = match integer_ids || !u.is_multiple_of(3) {
            true => u.to_string(),
            false => format!("user-{u}"),
        };
        t.push_str(&format!("{user},{i},{}.5,{}\n", s.next_u64() % 5, 1_000_000 + s.next_u64() % 500));
    }
    t
}

async fn built_by_workers(path: &std::path::Path, workers: usize, plan: &IngestPlan) -> anyhow::Result<BlocksBuilt> {
    Ok(built_and_described(path, workers, plan, None).await?.0)
}

/// The ratings `min_pos` counts as relevant in the blocks' descriptions.
const MIN_POS: f32 = 2.5;

/// [`built_by_workers`], and with `min_pos` the blocks' descriptions.
async fn built_and_described(
    path: &std::path::Path,
    workers: usize,
    plan: &IngestPlan,
    min_pos: Option<f32>,
) -> anyhow::Result<(BlocksBuilt, Option<BlocksDescribed>)> {
    let local = LocalWorkers::start(workers, 1).await?;
    let opts = ClientOptions {
        token: Some(local.token.clone()),
        ..Default::default()
    };
    let mut handles = Vec::new();
    for a in &local.addrs {
        handles.push(connect(a, &opts).await?);
    }
    let plan = IngestPlan {
        path: path.to_path_buf(),
        ..plan.clone()
    };
    let alive = vec![true; handles.len()];
    let built = build_blocks(&handles, &alive, "ingest-test", &plan, &Default::default()).await?;
    let described = match min_pos {
        Some(m) => {
            // Asked for, the ids and the rows blocks reference come too;
            // otherwise they stay on the workers, and only the ids' bytes come.
            let ask = |asked: bool| DescribeAsk {
                min_pos: m,
                references: asked,
                ids: asked,
            };
            let with = describe_blocks(&handles, &alive, "ingest-test", &plan, &built, ask(true), &Default::default()).await?;
            let without = describe_blocks(&handles, &alive, "ingest-test", &plan, &built, ask(false), &Default::default()).await?;
            anyhow::ensure!(
                without.references.is_none() && with.references.is_some() && without.ids.is_none() && with.ids.is_some(),
                "references and ids asked for or not"
            );
            anyhow::ensure!(
                BlocksDescribed {
                    references: None,
                    ids: None,
                    ..with.clone()
                } == without
            );
            Some(with)
        }
        None => None,
    };
    if min_pos.is_some() && workers > 1 {
        // Built again as after a loss: by all but the first worker, each
        // block wherever a scattered assignment puts it.
        let blocks = built.user_starts.len() - 1;
        let survivors = &handles[1..];
        let scattered = |salt: usize| (0..blocks).map(|b| (b * 7 + salt) % survivors.len()).collect::<Vec<usize>>();
        let plan = IngestPlan { blocks, ..plan };
        let again = build(survivors, "ingest-test", &plan, &[scattered(1), scattered(2)], &Default::default()).await?;
        assert!(again.peer_bytes > 0 || survivors.len() == 1);
        anyhow::ensure!(
            BlocksBuilt {
                peer_bytes: built.peer_bytes,
                ..again
            } == built,
            "the blocks built again by {} workers differ from the first build",
            survivors.len()
        );
    }
    Ok((built, described))
}

/// A plan of every row of `path` into `blocks` (no split, no test file).
fn plan_of(path: &std::path::Path, load: &LoadOptions, split: &SplitSpec, blocks: usize) -> IngestPlan {
    IngestPlan {
        path: path.to_path_buf(),
        load: load.clone(),
        test_path: None,
        hold_out: None,
        split: split.clone(),
        duplicates: DuplicatePolicy::Last,
        blocks,
        step_timeout: Duration::from_secs(120),
        peer_timeout: Duration::from_secs(20),
    }
}

fn expected(ds: &Dataset, blocks: usize) -> (Vec<u64>, Vec<u64>) {
    let layouts = Layouts::for_dataset(ds, blocks);
    (layouts.users.starts_u64(), layouts.items.starts_u64())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_built_by_workers_reading_shares_are_the_whole_file_datasets() {
    let dir = tempfile::tempdir().unwrap();
    let load = LoadOptions {
        timestamp_col: Some(3),
        ..Default::default()
    };
    let blocks = 5;
    // (split, users held out, duplicates, a test file)
    let splits = [
        (SplitSpec::None, None, DuplicatePolicy::Last, false),
        (SplitSpec::Ratio { test_frac: 0.2, seed: 42 }, None, DuplicatePolicy::Sum, false),
        (SplitSpec::PerUser { test_frac: 0.25, seed: 7 }, None, DuplicatePolicy::First, false),
        (
            SplitSpec::KFold {
                folds: 4,
                fold: 1,
                seed: 3,
            },
            None,
            DuplicatePolicy::Last,
            false,
        ),
        (SplitSpec::Temporal { test_frac: 0.3 }, None, DuplicatePolicy::Sum, false),
        // No row held out: no key is selected.
        (SplitSpec::Temporal { test_frac: 0.0 }, None, DuplicatePolicy::Last, false),
        (SplitSpec::None, None, DuplicatePolicy::First, true),
        (
            SplitSpec::None,
            Some(UserHoldout::Ratio { frac: 0.2, seed: 5 }),
            DuplicatePolicy::Sum,
            false,
        ),
        // A middle fold: both of its bounds are selected.
        (
            SplitSpec::None,
            Some(UserHoldout::Folds {
                folds: 3,
                fold: 1,
                seed: 8,
            }),
            DuplicatePolicy::Last,
            false,
        ),
    ];
    for (case, integer_ids) in [true, false].into_iter().enumerate() {
        let path = dir.path().join(format!("r{case}.csv"));
        // The last rows (by place and by time) hold the extreme values: held
        // out, they are outside the training range where predictions are clipped.
        let text = ratings_text(9_000, integer_ids, 11 + case as u64) + "late,7,9.5,2000000\nlate,8,-3.5,2000001\n";
        std::fs::write(&path, text).unwrap();
        // Users and items the input lacks (cold), repeated pairs, fewer rows.
        let test_path = dir.path().join(format!("t{case}.csv"));
        std::fs::write(&test_path, ratings_text(2_500, integer_ids, 99 + case as u64)).unwrap();
        let raw = load_ratings(&path, &load).unwrap();
        let test_raw = load_ratings(&test_path, &load).unwrap();
        for (split, hold_out, duplicates, test_file) in &splits {
            let ds = match (test_file, hold_out) {
                (false, Some(h)) => Dataset::build_user_split(&raw, &split_users(&raw, *h).unwrap(), *duplicates).unwrap(),
                (false, None) => {
                    let (train, test) = split_rows(&raw, split).unwrap();
                    Dataset::build((&raw, &train), Some((&raw, &test)), *duplicates).unwrap()
                }
                (true, _) => {
                    let all: Vec<usize> = (0..raw.len()).collect();
                    let test: Vec<usize> = (0..test_raw.len()).collect();
                    Dataset::build((&raw, &all), Some((&test_raw, &test)), *duplicates).unwrap()
                }
            };
            let (user_starts, item_starts) = expected(&ds, blocks);
            let plan = IngestPlan {
                path: path.clone(),
                load: load.clone(),
                test_path: test_file.then(|| test_path.clone()),
                hold_out: *hold_out,
                split: split.clone(),
                duplicates: *duplicates,
                blocks,
                step_timeout: Duration::from_secs(60),
                peer_timeout: Duration::from_secs(10),
            };
            for workers in 1..=3 {
                let what =
                    format!("{split:?}, {hold_out:?}, {duplicates:?}, test file {test_file}, integer ids {integer_ids}, {workers} workers");
                let (b, described) = built_and_described(&path, workers, &plan, Some(MIN_POS))
                    .await
                    .unwrap_or_else(|e| panic!("{what}: {e:#}"));
                let test_file_rows = if *test_file { test_raw.len() } else { 0 };
                assert_eq!(b.input_rows, (raw.len() + test_file_rows) as u64, "{what}");
                let held = ds.test.len() + ds.held_out.as_ref().map_or(0, |h| h.fold_in.nnz() + h.test.len());
                let none_held =
                    matches!(split, SplitSpec::None | SplitSpec::Temporal { test_frac: 0.0 }) && hold_out.is_none() && !test_file;
                assert!(held > 100 || none_held, "{what}: rows are held out");
                let test_skipped = if *test_file { test_raw.skipped_lines } else { 0 };
                assert_eq!(b.skipped_lines, raw.skipped_lines + test_skipped, "{what}");
                assert_eq!((&b.user_starts, &b.item_starts), (&user_starts, &item_starts), "{what}");
                assert_eq!(b.ratings, ds.n_train() as u64, "{what}");
                assert_eq!(b.test_rows, ds.test.len() as u64, "{what}");
                assert_eq!(b.test_dropped_cold, ds.test_dropped_cold as u64, "{what}");
                assert_eq!(b.duplicates_merged, ds.duplicates_merged as u64, "{what}");
                let layouts = Layouts::for_dataset(&ds, blocks);
                assert_eq!(b.global_mean.to_bits(), ds.global_mean(&layouts.users).to_bits(), "{what}");
                assert_eq!(b.fingerprint_digest(), ds.fingerprint, "{what}");
                // The shape training runs on; held-out users are scored on their ranked rows.
                assert_eq!(b.shape(), DataShape::of(&ds, &layouts.users), "{what}");
                // The held-out users the user blocks hold are the dataset's, block by block.
                let held_out = ds.held_out.as_ref().map(|h| {
                    let starts = h.block_starts(layouts.users.n_blocks());
                    let (indptr, _) = als_core::data::group_by_key(&h.test.users, h.n_users());
                    HeldOutBuilt {
                        fold_in: h.fold_in.nnz() as u64,
                        dropped_cold: h.dropped_cold as u64,
                        users_per_block: starts.windows(2).map(|w| (w[1] - w[0]) as u64).collect(),
                        test_rows_per_block: starts.windows(2).map(|w| (indptr[w[1]] - indptr[w[0]]) as u64).collect(),
                    }
                });
                assert_eq!(b.held_out, held_out, "{what}");
                // Every cell in its dense place, by user and (checked by the driver) by item.
                assert_eq!(b.cells, cell_sums(&ds.by_user, 0, true), "{what}");
                assert_eq!(cell_sums(&ds.by_item, 0, false), cell_sums(&ds.by_user, 0, true));
                let (lo, hi) = als_core::data::value_range(raw.ratings.iter().copied());
                assert_eq!(b.value_range, (lo, hi), "{what}");
                assert_eq!(
                    b.peer_bytes > 0,
                    workers > 1,
                    "{what}: rows cross between workers only when there are several"
                );
                // What the workers tell of their blocks is what this process computes from the dataset.
                let d = described.expect("described");
                let ids = d.ids.as_ref().expect("asked for");
                assert!(ids.users == ds.user_ids && ids.items == ds.item_ids, "{what}: the ids");
                // Each block's id lines start where the dataset's ids put them.
                let line_starts = |ids: &[String], starts: &[usize]| -> Vec<u64> {
                    let ends = ids.iter().scan(0u64, |at, id| {
                        *at += id.len() as u64 + 1;
                        Some(*at)
                    });
                    let ends: Vec<u64> = std::iter::once(0).chain(ends).collect();
                    starts.iter().map(|&r| ends[r]).collect()
                };
                assert_eq!(
                    d.id_line_starts,
                    [
                        line_starts(&ds.user_ids, &layouts.users.starts),
                        line_starts(&ds.item_ids, &layouts.items.starts)
                    ],
                    "{what}: the id lines"
                );
                let here = RatingsAt::Here(&ds);
                let routing = here.routing(&layouts, workers);
                let [users, items] = d.references.as_ref().expect("asked for");
                let needed = |s: &crate::cluster::routing::SideRouting| s.references.as_ref().unwrap().needed.clone();
                assert!(*users == needed(&routing.users), "{what}: the items user blocks reference");
                assert!(*items == needed(&routing.items), "{what}: the users item blocks reference");
                assert_eq!(b.user_ratings.iter().sum::<u64>(), b.ratings, "{what}");
                let again = IngestPlan {
                    blocks: layouts.users.n_blocks(),
                    ..plan.clone()
                };
                let on = OnWorkers::new(b.clone(), d.clone(), again, Box::new(|| anyhow::bail!("not loaded in this test")));
                let there = RatingsAt::Workers(&on);
                assert_eq!(
                    there.user_nnz_starts(&layouts.users),
                    here.user_nnz_starts(&layouts.users),
                    "{what}"
                );
                assert_eq!(on.layouts().users.starts, layouts.users.starts, "{what}");
                assert_eq!(on.layouts().items.starts, layouts.items.starts, "{what}");
                if hold_out.is_none() {
                    assert_eq!(
                        there.test_rows_per_block(&layouts.users),
                        here.test_rows_per_block(&layouts.users),
                        "{what}"
                    );
                    let eval_users = here.eval_users_per_block(&layouts.users, MIN_POS);
                    assert!(eval_users.iter().sum::<u64>() > 0 || none_held, "{what}: users are scored");
                    assert_eq!(d.eval_users, eval_users, "{what}");
                } else {
                    // Each block scores its held-out users with a relevant ranked row.
                    let h = ds.held_out.as_ref().expect("users held out");
                    let mut relevant = vec![false; h.n_users()];
                    for (&u, &v) in h.test.users.iter().zip(&h.test.ratings) {
                        relevant[u as usize] |= v >= MIN_POS;
                    }
                    let starts = h.block_starts(layouts.users.n_blocks());
                    let want: Vec<u64> = starts
                        .windows(2)
                        .map(|w| relevant[w[0]..w[1]].iter().filter(|&&r| r).count() as u64)
                        .collect();
                    assert!(want.iter().sum::<u64>() > 0, "{what}: held-out users are scored");
                    assert_eq!(d.eval_users, want, "{what}");
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_line_is_named_by_the_worker_that_reads_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.csv");
    let mut text = ratings_text(3_000, true, 5);
    text.push_str("7,8,not-a-number\n");
    std::fs::write(&path, text).unwrap();
    let load = LoadOptions::default();
    let plan = plan_of(&path, &load, &SplitSpec::None, 4);
    let e = format!("{:#}", built_by_workers(&path, 3, &plan).await.unwrap_err());
    assert!(
        e.contains("could not read its share") && e.contains("bad.csv") && e.contains("3002"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_temporal_split_of_more_rows_than_a_gather_is_found_in_histogram_rounds() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("many.csv");
    let rows = als_core::data::select::GATHER_LIMIT as usize + 5_000;
    std::fs::write(&path, ratings_text(rows, true, 21)).unwrap();
    let load = LoadOptions {
        timestamp_col: Some(3),
        ..Default::default()
    };
    let raw = load_ratings(&path, &load).unwrap();
    let split = SplitSpec::Temporal { test_frac: 0.2 };
    let (train, test) = split_rows(&raw, &split).unwrap();
    let ds = Dataset::build((&raw, &train), Some((&raw, &test)), DuplicatePolicy::Last).unwrap();
    let plan = plan_of(&path, &load, &split, 4);
    for workers in [2, 3] {
        let b = built_by_workers(&path, workers, &plan).await.unwrap();
        assert_eq!(b.test_rows, ds.test.len() as u64, "{workers} workers");
        assert_eq!(b.fingerprint_digest(), ds.fingerprint, "{workers} workers");
    }
}

#[test]
fn only_an_unreachable_worker_or_peer_counts_as_lost() {
    use als_proto::fault::{job_failed, peer_unreachable};
    use tonic::Status;
    let lost = |s: Status| matches!(super::step_error("w", "read its share", &s), super::StepError::Lost(_));
    assert!(lost(Status::unavailable("connection refused")));
    assert!(lost(Status::unknown("transport error")));
    assert!(lost(peer_unreachable("peer w2: connection refused")));
    // Refusals fail the run with the worker's message.
    assert!(!lost(Status::permission_denied(
        "input /x is not under this worker's --input-root /data"
    )));
    assert!(!lost(job_failed("r.csv:3: bad rating", Some(3))));
    assert!(!lost(Status::invalid_argument("a shift of 200 bits")));
    assert!(!lost(Status::resource_exhausted("over budget")));
}

/// Fewer users or items than the blocks asked for: the workers build the
/// single-process layout's count (one block per row of the smaller side at
/// most), found from their own counts, with 1, 2 and 3 workers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_data_gets_the_layouts_block_count_from_the_workers_counts() {
    let dir = tempfile::tempdir().unwrap();
    let load = LoadOptions::default();
    // 4 users and 3 items, then 6 users and 40 items.
    let texts = [
        "1,a,4\n2,b,3\n3,c,5\n4,a,2\n1,b,1\n",
        &(0..200)
            .map(|r| format!("u{},i{},{}\n", r % 6, r % 40, 1 + r % 5))
            .collect::<String>(),
    ];
    for (case, text) in texts.iter().enumerate() {
        let path = dir.path().join(format!("small{case}.csv"));
        std::fs::write(&path, text).unwrap();
        let raw = load_ratings(&path, &load).unwrap();
        let all: Vec<usize> = (0..raw.len()).collect();
        let ds = Dataset::build((&raw, &all), None, DuplicatePolicy::Last).unwrap();
        for blocks in [2, 8, 64] {
            let (user_starts, item_starts) = expected(&ds, blocks);
            assert_eq!(user_starts.len() - 1, blocks.min(ds.n_users().min(ds.n_items())), "{case}");
            let plan = plan_of(&path, &load, &SplitSpec::None, blocks);
            for workers in 1..=3 {
                let b = built_by_workers(&path, workers, &plan).await.unwrap();
                assert_eq!(
                    (&b.user_starts, &b.item_starts),
                    (&user_starts, &item_starts),
                    "{case}, {blocks} blocks, {workers} workers"
                );
                assert_eq!(b.fingerprint_digest(), ds.fingerprint);
            }
        }
    }
}

/// A block's description is taken only as the block it describes: every
/// lie a worker could tell is refused, saying what is wrong.
#[test]
fn a_description_unlike_its_block_is_refused() {
    use als_core::data::ids::block_of_id;
    use als_proto::codec::{id_table, u32_bytes};
    use als_proto::pb::IngestResponse;

    let n_blocks = 3;
    let ids_of = |b: usize, n: usize| -> Vec<String> {
        (0..)
            .map(|i: u32| i.to_string())
            .filter(|id| block_of_id(id, n_blocks) == b)
            .take(n)
            .collect()
    };
    let answer = |ids: &[String], needed: &[u32], eval_users: u64| {
        let (id_bytes, id_ends) = id_table(ids);
        IngestResponse {
            id_bytes: id_bytes.into(),
            id_ends: id_ends.into(),
            id_line_bytes: als_core::model::id_lines::id_line_bytes(ids),
            needed: u32_bytes(needed).into(),
            eval_users,
            ..Default::default()
        }
    };
    let ids = ids_of(1, 4);
    let lines = als_core::model::id_lines::id_line_bytes(&ids);
    let ask = |references: bool, ids: bool| DescribeAsk {
        min_pos: 1.0,
        references,
        ids,
    };
    let check = |r: &IngestResponse, ask: DescribeAsk, max_id_len: usize| {
        super::checked_description(r, (1, n_blocks), (4, 0), (10, &ask), max_id_len)
    };
    let said = |ids: &[String], needed: Vec<u32>| super::Description {
        ids: ids.to_vec(),
        line_bytes: lines,
        needed,
    };
    let good = answer(&ids, &[0, 5, 9], 2);
    assert_eq!(check(&good, ask(true, true), 64), Ok(said(&ids, vec![0, 5, 9])));
    // Referenced rows not asked for are refused; none, when not asked, is the answer.
    let e = check(&good, ask(false, true), 64).unwrap_err();
    assert!(e.contains("3 referenced rows, none asked for"), "{e}");
    assert_eq!(check(&answer(&ids, &[], 2), ask(false, true), 64), Ok(said(&ids, vec![])));
    // Ids not asked for: the lines' bytes alone, which 4 ids of 1 to 64 bytes can take.
    let bare = |line_bytes: u64| IngestResponse {
        id_line_bytes: line_bytes,
        ..answer(&[], &[], 2)
    };
    assert_eq!(check(&bare(lines), ask(false, false), 64), Ok(said(&[], vec![])));
    let e = check(&good, ask(true, false), 64).unwrap_err();
    assert!(e.contains("4 ids, none asked for"), "{e}");
    for (line_bytes, max_id_len) in [(7, 64), (4 * 4 + 1, 3)] {
        let e = check(&bare(line_bytes), ask(false, false), max_id_len).unwrap_err();
        assert!(e.contains("as lines, which they cannot"), "{e}");
    }
    let cases: [(IngestResponse, &str); 8] = [
        (answer(&ids[..3], &[0], 0), "3 ids, the starts give it 4"),
        (answer(&ids_of(2, 4), &[0], 0), "belongs to block 2"),
        (answer(&ids, &[5, 5], 0), "not ascending"),
        (answer(&ids, &[3, 10], 0), "below 10"),
        (answer(&ids, &[1], 5), "5 users scored of 4"),
        (
            IngestResponse {
                needed: vec![1, 2, 3].into(),
                ..answer(&ids, &[], 0)
            },
            "needed",
        ),
        (
            IngestResponse {
                id_ends: u32_bytes(&[1, 1, 2, 3]).into(),
                ..answer(&ids, &[], 0)
            },
            "id 1 of the table",
        ),
        (
            IngestResponse {
                id_line_bytes: lines + 1,
                ..answer(&ids, &[], 0)
            },
            "as lines, which they cannot",
        ),
    ];
    for (r, says) in cases {
        let e = check(&r, ask(true, true), 64).unwrap_err();
        assert!(e.contains(says), "{says}: {e}");
    }
    // An id longer than the limit.
    let e = check(&good, ask(true, true), 0).unwrap_err();
    assert!(e.contains("limit"), "{e}");
}
