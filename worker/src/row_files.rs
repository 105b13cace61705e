//! Writing the latest rows of a job's blocks into files the coordinator
//! created (a checkpoint, a model's `.npy` files), each block at its rows'
//! place: the coordinator gets the files' checksums from the files, not the
//! rows over the network. And reading a block's rows back from a sealed
//! checkpoint, for a replay that ships no rows.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::path::PathBuf;

use als_core::row_places::{offset_within, read_rows_at, write_le_at, RowsPlace};
use als_core::side::Side;
use als_proto::pb::{RowsPart, WriteRowsRequest, WriteRowsResponse};
use als_proto::spec::side_from_pb;

use crate::job::Job;

/// One place of a request, its path resolved under the output root.
pub struct Place {
    pub side: Side,
    pub part: RowsPart,
    pub path: PathBuf,
    pub at: u64,
    pub end: u64,
}

impl Place {
    /// Check a request's places: each part of each side at most once, the
    /// seen matrix's of the users only, with the blocks' starts among the
    /// ratings.
    pub fn check_all(req: &WriteRowsRequest) -> Result<(), String> {
        let mut seen = Vec::new();
        for p in &req.places {
            let side = side_from_pb(p.side)?;
            let part = RowsPart::try_from(p.part).map_err(|_| format!("invalid part {}", p.part))?;
            match part {
                RowsPart::Unspecified => return Err("a place of no part".into()),
                RowsPart::SeenIndptr | RowsPart::SeenIndices if side != Side::Users || req.user_nnz_starts.is_empty() => {
                    return Err("the seen matrix is the users', placed with their blocks' starts".into())
                }
                RowsPart::Ids if id_starts(req, side).is_empty() => {
                    return Err(format!("the {side:?} ids are placed without their blocks' starts"))
                }
                _ => {}
            }
            if seen.contains(&(side, part)) {
                return Err(format!("the {side:?} {part:?} are placed twice"));
            }
            seen.push((side, part));
        }
        Ok(())
    }
}

/// Per block of `side`, the byte its id lines start at, then their end.
fn id_starts(req: &WriteRowsRequest, side: Side) -> &[u64] {
    match side {
        Side::Users => &req.user_id_starts,
        Side::Items => &req.item_id_starts,
    }
}

/// Write every block `job` holds at each of `places`, after checking each
/// write falls inside `..end` and inside the file as the coordinator sized
/// it; `req`'s starts place each user block's ratings among all, and each
/// block's id lines.
pub fn write_rows(job: &Job, places: &[Place], req: &WriteRowsRequest) -> Result<WriteRowsResponse, String> {
    let nnz_starts = &req.user_nnz_starts[..];
    let k = job.params.factors as u64;
    let mut files: BTreeMap<&PathBuf, File> = BTreeMap::new();
    let mut written: [Vec<u32>; 2] = Default::default();
    for place in places {
        let path = &place.path;
        let shown = |e: std::io::Error| format!("{}: {e}", path.display());
        if !files.contains_key(path) {
            let f = OpenOptions::new().write(true).open(path).map_err(shown)?;
            files.insert(path, f);
        }
        let file = files.get_mut(path).expect("opened");
        let len = file.metadata().map_err(shown)?.len();
        if len < place.end {
            return Err(format!(
                "{} has {len} bytes, fewer than the {} its rows end at",
                path.display(),
                place.end
            ));
        }
        match place.part {
            RowsPart::Factors | RowsPart::Bias => {
                let bias = place.part == RowsPart::Bias;
                let width = if bias { 4 } else { k * 4 };
                for b in job.rows_of(place.side) {
                    let values = if bias { b.bias } else { b.factors };
                    if values.len() as u64 * 4 != b.n_rows as u64 * width {
                        return Err(format!("block {} has no {:?}", b.block, place.part));
                    }
                    let at = offset_within(place.at, b.row_start, width, values.len() as u64 * 4, place.end)?;
                    write_le_at(file, at, values).map_err(shown)?;
                    if !bias {
                        written[matches!(place.side, Side::Items) as usize].push(b.block);
                    }
                }
            }
            RowsPart::SeenIndptr | RowsPart::SeenIndices => {
                for b in job.seen_of_users() {
                    let i = b.block as usize;
                    let (start, next) = match (nnz_starts.get(i), nnz_starts.get(i + 1)) {
                        (Some(&s), Some(&n)) if n.checked_sub(s) == Some(b.nnz()) => (s, n),
                        _ => return Err(format!("user block {i} holds {} ratings, not the ones placed for it", b.nnz())),
                    };
                    if place.part == RowsPart::SeenIndptr {
                        let values = b.indptr_from(start);
                        let at = offset_within(place.at, b.row_start, 8, values.len() as u64 * 8, place.end)?;
                        write_le_at(file, at, &values).map_err(shown)?;
                    } else {
                        let at = offset_within(place.at, start, 4, (next - start) * 4, place.end)?;
                        write_le_at(file, at, &b.items()).map_err(shown)?;
                    }
                }
            }
            RowsPart::Ids => {
                let starts = id_starts(req, place.side);
                for (block, ids) in job.ids_of(place.side) {
                    let ids =
                        ids.ok_or_else(|| format!("{:?} block {block} was shipped here: this worker has no ids of it", place.side))?;
                    let mut lines = Vec::new();
                    als_core::model::id_lines::write_id_lines(&mut lines, ids).map_err(shown)?;
                    let i = block as usize;
                    let start = match (starts.get(i), starts.get(i + 1)) {
                        (Some(&s), Some(&n)) if n.checked_sub(s) == Some(lines.len() as u64) => s,
                        _ => {
                            return Err(format!(
                                "{:?} block {i}'s ids take {} bytes, not the ones placed for them",
                                place.side,
                                lines.len()
                            ))
                        }
                    };
                    let at = offset_within(place.at, start, 1, lines.len() as u64, place.end)?;
                    write_at(file, at, &lines).map_err(shown)?;
                }
            }
            RowsPart::Unspecified => return Err("a place of no part".into()),
        }
    }
    // On the file system the coordinator reads the files back from.
    for (path, f) in &files {
        f.sync_data().map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let [user_blocks, item_blocks] = written;
    Ok(WriteRowsResponse { user_blocks, item_blocks })
}

/// Write `bytes` at byte `offset` of `f`.
fn write_at(f: &mut File, offset: u64, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::{Seek, SeekFrom, Write};
    f.seek(SeekFrom::Start(offset))?;
    f.write_all(bytes)
}

/// Rows `row_start..+n_rows` of `side` (factors of width `k`, and biases
/// where `biased`) read from `places`, a sealed checkpoint's parts of that
/// side; each read is bounded by its part's end, and every value must be
/// finite, as rows a worker wrote always are.
pub fn read_block_rows(
    places: &[Place],
    side: Side,
    row_start: u64,
    n_rows: usize,
    k: usize,
    biased: bool,
) -> Result<(Vec<f32>, Vec<f32>), String> {
    let part = |part: RowsPart| places.iter().find(|p| p.side == side && p.part == part);
    let read = |place: Option<&Place>, width: usize| -> Result<Vec<f32>, String> {
        let p = place.ok_or_else(|| format!("no {side:?} part to read the block's rows from"))?;
        let place = RowsPlace {
            path: p.path.clone(),
            at: p.at,
            end: p.end,
        };
        read_rows_at(&place, row_start, n_rows, width).map_err(|e| format!("{e} ({side:?})"))
    };
    if places
        .iter()
        .any(|p| p.side != side || !matches!(p.part, RowsPart::Factors | RowsPart::Bias))
    {
        return Err("a block's rows are read from its side's factors and biases only".into());
    }
    let factors = read(part(RowsPart::Factors), k)?;
    let bias = match biased {
        true => read(part(RowsPart::Bias), 1)?,
        false => Vec::new(),
    };
    Ok((factors, bias))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A block's rows come back from where its side's parts lie, at its
    /// row start; a read past a part's end, a missing part, another side's
    /// part or a value that is not finite is refused.
    #[test]
    fn a_blocks_rows_are_read_at_their_place_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoint");
        // 16 bytes of header, 5 rows of k=2, then 5 biases.
        let mut f = File::create(&path).unwrap();
        let rows: Vec<f32> = (0..10).map(|v| v as f32).collect();
        let bias: Vec<f32> = (0..5).map(|v| -(v as f32)).collect();
        write_le_at(&mut f, 16, &rows).unwrap();
        write_le_at(&mut f, 56, &bias).unwrap();
        let place = |side, part, at, end| Place {
            side,
            part,
            path: path.clone(),
            at,
            end,
        };
        let parts = [
            place(Side::Items, RowsPart::Factors, 16, 56),
            place(Side::Items, RowsPart::Bias, 56, 76),
        ];
        let (f, b) = read_block_rows(&parts, Side::Items, 3, 2, 2, true).unwrap();
        assert_eq!((f, b), (vec![6.0, 7.0, 8.0, 9.0], vec![-3.0, -4.0]));
        let (f, b) = read_block_rows(&parts[..1], Side::Items, 1, 1, 2, false).unwrap();
        assert_eq!((f, b), (vec![2.0, 3.0], vec![]));
        let refused =
            |parts: &[Place], row_start, n_rows, biased| read_block_rows(parts, Side::Items, row_start, n_rows, 2, biased).unwrap_err();
        assert!(refused(&parts, 4, 2, false).contains("past byte 56"));
        assert!(refused(&parts[..1], 0, 1, true).contains("no Items part"));
        assert!(refused(&[place(Side::Users, RowsPart::Factors, 16, 56)], 0, 1, false).contains("factors and biases only"));
        write_le_at(&mut File::options().write(true).open(&path).unwrap(), 24, &[f32::NAN]).unwrap();
        assert!(refused(&parts, 0, 2, false).contains("not finite"));
    }

    /// A block of `n` rows from `row_start`, each rating the other side's row 0 once.
    fn block(block: u32, row_start: u64, n: usize, ids: Vec<String>) -> crate::job::BlockData {
        crate::job::BlockData {
            block,
            row_start,
            n_rows: n as u32,
            nnz: n as u64,
            n_needed: 1,
            indptr: (0..=n as u32).collect(),
            columns: vec![0; n],
            values: vec![1.0; n],
            needed: vec![0],
            factors: vec![0.5; n],
            bias: Vec::new(),
            n_test: 0,
            test_indptr: Vec::new(),
            test_columns: Vec::new(),
            test_values: Vec::new(),
            ids,
            held_out: None,
        }
    }

    /// A job of 4 users × 2 items in two user blocks (rows 0..3 built
    /// here with `ids`, rows 3..4 shipped with `shipped_ids`), k = 1.
    fn job_with_ids(ids: &[&str], shipped_ids: Vec<String>) -> Job {
        let mut job = Job::new("job".into(), crate::job::plain_params(1), 4, 2).unwrap();
        job.add_block(Side::Users, block(0, 0, 3, ids.iter().map(|s| s.to_string()).collect()))
            .unwrap();
        job.add_block(Side::Users, block(1, 3, 1, shipped_ids)).unwrap();
        job
    }

    /// Each block's ids go as lines at its start among the side's id
    /// lines; a block whose lines would take other bytes than placed, or
    /// one shipped here without its ids, is refused; so are ids that do
    /// not count the block's rows.
    #[test]
    fn a_blocks_ids_are_written_as_lines_at_their_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("user_ids.txt");
        // "a\nbb\nccc\n" then "dd\n": 9 + 3 bytes, after 5 bytes of something else.
        std::fs::write(&path, vec![b'-'; 17]).unwrap();
        let place = [Place {
            side: Side::Users,
            part: RowsPart::Ids,
            path: path.clone(),
            at: 5,
            end: 17,
        }];
        let req = |starts: Vec<u64>| WriteRowsRequest {
            job_id: "job".into(),
            user_id_starts: starts,
            ..Default::default()
        };
        let job = job_with_ids(&["a", "bb", "ccc"], vec!["dd".into()]);
        let written = write_rows(&job, &place, &req(vec![0, 9, 12])).unwrap();
        assert!(written.user_blocks.is_empty(), "ids are not the blocks' rows");
        assert_eq!(std::fs::read(&path).unwrap(), b"-----a\nbb\nccc\ndd\n");
        let e = write_rows(&job, &place, &req(vec![0, 8, 12])).unwrap_err();
        assert!(e.contains("block 0's ids take 9 bytes"), "{e}");
        let short = [Place {
            side: Side::Users,
            part: RowsPart::Ids,
            path: path.clone(),
            at: 5,
            end: 16,
        }];
        let e = write_rows(&job, &short, &req(vec![0, 9, 12])).unwrap_err();
        assert!(e.contains("past byte 16"), "{e}");
        let shipped = job_with_ids(&["a", "bb", "ccc"], Vec::new());
        let e = write_rows(&shipped, &place, &req(vec![0, 9, 12])).unwrap_err();
        assert!(e.contains("block 1 was shipped here"), "{e}");
        let mut job = job_with_ids(&["a", "bb", "ccc"], Vec::new());
        let e = job.add_block(Side::Items, block(0, 0, 2, vec!["x".into()])).unwrap_err();
        assert!(e.to_string().contains("1 ids for 2 rows"), "{e}");
    }

    #[test]
    fn a_write_past_the_end_is_refused() {
        assert_eq!(offset_within(100, 3, 8, 16, 140), Ok(124));
        assert!(offset_within(100, 3, 8, 17, 140).is_err());
        assert!(offset_within(u64::MAX - 4, 1, 8, 4, u64::MAX).is_err());
    }
}
