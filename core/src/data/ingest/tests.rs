//! Blocks built from shares equal [`Dataset::build`]'s, for any share
//! count, block count, split and duplicate policy.

use super::*;
use crate::data::split::{key_ranks, split_rows, split_users, RatioThreshold, UserHoldout};
use crate::data::{load_ratings, load_share, Dataset, LoadOptions, Share, SplitSpec};
use crate::rng::SplitMix64;
use crate::train::Layouts;

/// Ratings text: repeated pairs, ids that are integers or not, items seen
/// only rarely (some only in test rows), and enough users that some share a
/// hash bucket (so the order within a bucket is checked).
fn ratings_text(rows: usize, integer_ids: bool, seed: u64) -> String {
    let mut s = SplitMix64::new(seed);
    let mut t = String::from("user,item,rating\n");
    for _ in 0..rows {
        let u = s.next_u64() % 3000;
        let i = if s.next_u64().is_multiple_of(10) {
            500 + s.next_u64() % 400
        } else {
            s.next_u64() % 60
        };
        let user = if integer_ids || !u.is_multiple_of(3) {
            u.to_string()
        } else {
            format!("user-{u}")
        };
        t.push_str(&format!("{user},{i},{}.5\n", s.next_u64() % 5));
    }
    t
}

struct Built {
    user_ids: Vec<String>,
    item_ids: Vec<String>,
    user_starts: Vec<usize>,
    item_starts: Vec<usize>,
    by_user: Vec<Csr>,
    by_item: Vec<Csr>,
    test: Vec<(u32, u32, u32)>,
    test_dropped_cold: usize,
    duplicates_merged: usize,
    /// Each user block's held-out users (users held out).
    held_out: Vec<HeldOutUsers>,
}

fn prefix(counts: impl Iterator<Item = usize>) -> Vec<usize> {
    let mut starts = vec![0];
    for c in counts {
        starts.push(starts.last().unwrap() + c);
    }
    starts
}

/// The whole protocol, each share and block on its own.
fn from_shares(
    path: &std::path::Path,
    shares: usize,
    n_blocks: usize,
    (split, hold_out): (&SplitSpec, Option<UserHoldout>),
    duplicates: DuplicatePolicy,
) -> Built {
    let o = LoadOptions::default();
    let parts: Vec<RawRatings> = (0..shares)
        .map(|index| load_share(path, &o, Share { index, count: shares }).unwrap())
        .collect();
    let firsts = prefix(parts.iter().map(|p| p.len()));
    let n = *firsts.last().unwrap() as u64;
    // Each share routes its rows; place-decided splits are decided here.
    let mut to_user_blocks: Vec<Vec<RoutedPart>> = (0..n_blocks).map(|_| Vec::new()).collect();
    for (raw, &first) in parts.iter().zip(&firsts) {
        let first = first as u64;
        let places: Vec<u64> = (first..first + raw.len() as u64).collect();
        let is_test: Box<dyn Fn(u64) -> bool> = match *split {
            SplitSpec::None | SplitSpec::PerUser { .. } => Box::new(|_| false),
            SplitSpec::Ratio { test_frac, seed } => {
                let t = RatioThreshold::new(n, (n as f64 * test_frac).floor() as u64, seed);
                Box::new(move |p| t.is_test(p))
            }
            SplitSpec::KFold { folds, fold, seed } => {
                let ranks = key_ranks(n, seed, &places);
                Box::new(move |p| ranks[(p - first) as usize] % folds as u64 == fold as u64)
            }
            SplitSpec::Temporal { .. } => unreachable!("no timestamps here"),
        };
        for (b, rows) in route_share(raw, first, n_blocks, &*is_test).into_iter().enumerate() {
            to_user_blocks[b].push(rows);
        }
    }
    let mut users: Vec<UserBlock> = to_user_blocks.into_iter().map(UserBlock::new).collect();
    if let SplitSpec::PerUser { test_frac, seed } = *split {
        users.iter_mut().for_each(|b| b.split_per_user(test_frac, seed));
    }
    if let Some(h) = hold_out {
        // The held-out users' key bounds, as the selection over the blocks finds them.
        let mut keys: Vec<u128> = users.iter().flat_map(|b| b.holdout_keys(h.user_seed())).collect();
        keys.sort_unstable();
        let at = h.positions(keys.len()).unwrap();
        let held = HeldKeys {
            from: (at.start > 0).then(|| keys[at.start]),
            to: keys.get(at.end).copied(),
        };
        users.iter_mut().for_each(|b| {
            b.hold_out_users(h.user_seed(), &held, h.seed());
        });
    }
    let numeric = users.iter().all(UserBlock::users_are_integers);
    let held_out_numeric = users.iter().all(UserBlock::held_out_are_integers);
    users.iter_mut().for_each(|b| {
        b.number_users(numeric);
        b.number_held_out(held_out_numeric);
    });
    let user_starts = prefix(users.iter().map(|b| b.user_ids.len()));
    let mut to_item_blocks: Vec<Vec<ItemBoundPart>> = (0..n_blocks).map(|_| Vec::new()).collect();
    for (b, block) in users.iter_mut().enumerate() {
        for (ib, rows) in block.item_rows(user_starts[b] as u32, n_blocks, duplicates).into_iter().enumerate() {
            to_item_blocks[ib].push(rows);
        }
    }
    let mut items: Vec<ItemBlock> = to_item_blocks.into_iter().map(ItemBlock::new).collect();
    let numeric = items.iter().all(ItemBlock::items_are_integers);
    items.iter_mut().for_each(|b| b.number_items(numeric));
    let item_starts = prefix(items.iter().map(|b| b.item_ids.len()));
    let (n_users, n_items) = (*user_starts.last().unwrap(), *item_starts.last().unwrap());
    // Each user block asks the item blocks about the items its rows name.
    let ask = |item: &str| {
        let b = block_of_id(item, n_blocks);
        items[b].index_of(item).map(|i| item_starts[b] as u32 + i)
    };
    let finished: Vec<FinishedUserBlock> = users
        .iter()
        .enumerate()
        .map(|(b, block)| {
            let answers: FxHashMap<String, Option<u32>> = block.items_named().into_iter().map(|i| (i.to_owned(), ask(i))).collect();
            block
                .finish(user_starts[b] as u32, n_items, "t", &|i| answers.get(i).copied().flatten())
                .unwrap()
        })
        .collect();
    Built {
        user_ids: users.iter().flat_map(|b| b.user_ids.clone()).collect(),
        item_ids: items.iter().flat_map(|b| b.item_ids.clone()).collect(),
        user_starts,
        item_starts,
        by_user: finished.iter().map(|f| f.by_user.clone()).collect(),
        by_item: items.iter().map(|b| b.by_item(n_users).unwrap()).collect(),
        test: finished
            .iter()
            .flat_map(|f| f.test.iter().map(|&(u, i, v)| (u, i, v.to_bits())))
            .collect(),
        test_dropped_cold: finished.iter().map(|f| f.test_dropped_cold).sum(),
        duplicates_merged: finished.iter().map(|f| f.duplicates_merged).sum(),
        held_out: finished.iter().filter_map(|f| f.held_out.clone()).collect(),
    }
}

#[test]
fn blocks_built_from_shares_are_the_whole_file_dataset_block_by_block() {
    let dir = tempfile::tempdir().unwrap();
    let splits = [
        SplitSpec::None,
        SplitSpec::Ratio { test_frac: 0.2, seed: 42 },
        SplitSpec::PerUser { test_frac: 0.25, seed: 7 },
        SplitSpec::KFold {
            folds: 4,
            fold: 1,
            seed: 3,
        },
    ];
    for (case, integer_ids) in [true, false].into_iter().enumerate() {
        let path = dir.path().join(format!("r{case}.csv"));
        std::fs::write(&path, ratings_text(12_000, integer_ids, 9 + case as u64)).unwrap();
        let raw = load_ratings(&path, &LoadOptions::default()).unwrap();
        for split in &splits {
            for duplicates in [DuplicatePolicy::Last, DuplicatePolicy::Sum] {
                let (train, test) = split_rows(&raw, split).unwrap();
                let ds = Dataset::build((&raw, &train), Some((&raw, &test)), duplicates).unwrap();
                for (shares, n_blocks) in [(1, 1), (3, 5), (4, 12)] {
                    let what = format!("{split:?}, {duplicates:?}, integer ids {integer_ids}, {shares} shares, {n_blocks} blocks");
                    let b = from_shares(&path, shares, n_blocks, (split, None), duplicates);
                    let layouts = Layouts::for_dataset(&ds, n_blocks);
                    assert_eq!(b.user_ids, ds.user_ids, "{what}");
                    assert_eq!(b.item_ids, ds.item_ids, "{what}");
                    assert_eq!(b.user_starts, layouts.users.starts, "{what}");
                    assert_eq!(b.item_starts, layouts.items.starts, "{what}");
                    for blk in 0..n_blocks {
                        let r = layouts.users.range(blk);
                        assert_eq!(b.by_user[blk], ds.by_user.slice_rows(r.start, r.end), "{what}: user block {blk}");
                        let r = layouts.items.range(blk);
                        assert_eq!(b.by_item[blk], ds.by_item.slice_rows(r.start, r.end), "{what}: item block {blk}");
                    }
                    let mut theirs: Vec<(u32, u32, u32)> = (0..ds.test.len())
                        .map(|j| (ds.test.users[j], ds.test.items[j], ds.test.ratings[j].to_bits()))
                        .collect();
                    let mut ours = b.test.clone();
                    theirs.sort_unstable();
                    ours.sort_unstable();
                    assert_eq!(ours, theirs, "{what}: test rows");
                    assert_eq!(
                        (b.test_dropped_cold, b.duplicates_merged),
                        (ds.test_dropped_cold, ds.duplicates_merged),
                        "{what}"
                    );
                }
            }
        }
    }
}

#[test]
fn held_out_users_are_the_whole_file_ones_block_by_block() {
    let dir = tempfile::tempdir().unwrap();
    for (case, integer_ids) in [true, false].into_iter().enumerate() {
        let path = dir.path().join(format!("r{case}.csv"));
        std::fs::write(&path, ratings_text(12_000, integer_ids, 19 + case as u64)).unwrap();
        let raw = load_ratings(&path, &LoadOptions::default()).unwrap();
        let holdouts = [
            UserHoldout::Ratio { frac: 0.2, seed: 42 },
            UserHoldout::Folds {
                folds: 3,
                fold: 1,
                seed: 5,
            },
        ];
        for h in holdouts {
            for duplicates in [DuplicatePolicy::Last, DuplicatePolicy::Sum] {
                let ds = Dataset::build_user_split(&raw, &split_users(&raw, h).unwrap(), duplicates).unwrap();
                let whole = ds.held_out.as_ref().unwrap();
                assert!(whole.n_users() > 100 && whole.test.len() > 100 && whole.dropped_cold > 0);
                for (shares, n_blocks) in [(1, 1), (3, 5), (4, 12)] {
                    let what = format!("{h:?}, {duplicates:?}, integer ids {integer_ids}, {shares} shares, {n_blocks} blocks");
                    let b = from_shares(&path, shares, n_blocks, (&SplitSpec::None, Some(h)), duplicates);
                    assert_eq!(b.user_ids, ds.user_ids, "{what}");
                    let starts = whole.block_starts(n_blocks);
                    assert_eq!(b.held_out.len(), n_blocks, "{what}: every block holds its held-out users");
                    for (blk, got) in b.held_out.iter().enumerate() {
                        let users = starts[blk]..starts[blk + 1];
                        assert_eq!(got.user_ids, whole.user_ids[users.clone()], "{what}: block {blk}");
                        assert_eq!(got.fold_in, whole.fold_in.slice_rows(users.start, users.end), "{what}: block {blk}");
                        // The ranked rows, users as the block numbers them, in input order.
                        let theirs: Vec<(u32, u32, u32)> = (0..whole.test.len())
                            .filter(|&j| users.contains(&(whole.test.users[j] as usize)))
                            .map(|j| {
                                (
                                    whole.test.users[j] - users.start as u32,
                                    whole.test.items[j],
                                    whole.test.ratings[j].to_bits(),
                                )
                            })
                            .collect();
                        let ours: Vec<(u32, u32, u32)> = (0..got.test.len())
                            .map(|j| (got.test.users[j], got.test.items[j], got.test.ratings[j].to_bits()))
                            .collect();
                        assert_eq!(ours, theirs, "{what}: block {blk}");
                    }
                    let dropped: usize = b.held_out.iter().map(|h| h.dropped_cold).sum();
                    assert_eq!(dropped, whole.dropped_cold, "{what}");
                }
            }
        }
    }
}

#[test]
fn a_sum_of_repeats_out_of_range_is_refused_naming_the_pair() {
    let big = crate::limits::MAX_ABS_VALUE * 0.75;
    let raw = crate::data::parse_ratings(
        format!("u,i,{big}\nu,i,{big}\nv,i,1\n").as_bytes(),
        std::path::Path::new("t.csv"),
        &LoadOptions::default(),
    )
    .unwrap();
    let mut block = UserBlock::new(route_share(&raw, 0, 1, &|_| false));
    block.number_users(false);
    assert!(block.finish(0, 1, "t.csv", &|_| Some(0)).is_err(), "laid out before the merge");
    block.item_rows(0, 1, DuplicatePolicy::Sum);
    let e = block.finish(0, 1, "t.csv", &|_| Some(0)).unwrap_err().to_string();
    assert!(e.contains("t.csv: user u, item i") && e.contains("after merging"), "{e}");
    block.item_rows(0, 1, DuplicatePolicy::Last);
    assert!(block.finish(0, 1, "t.csv", &|_| Some(0)).is_ok());
}

#[test]
fn a_pair_sent_twice_to_an_item_block_is_refused() {
    let part = || ItemBoundPart {
        ids: vec!["i".into()],
        rows: vec![ItemBoundRow {
            user: 3,
            item: 0,
            value: 1.0,
        }],
    };
    let mut block = ItemBlock::new(vec![part(), part()]);
    block.number_items(true);
    let e = block.by_item(5).unwrap_err().to_string();
    assert!(e.contains("item i") && e.contains("twice"), "{e}");
    let mut block = ItemBlock::new(vec![part()]);
    block.number_items(true);
    assert_eq!(block.by_item(5).unwrap().nnz(), 1);
}
