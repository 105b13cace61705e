//! Writing the latest rows of a job's blocks into files the coordinator
//! created (a checkpoint, a model's `.npy` files), each block at its rows'
//! place: the coordinator gets the files' checksums from the files, not the
//! rows over the network.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::path::PathBuf;

use als_core::row_places::write_le_at;
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

/// Write every block `job` holds at each of `places`, after checking each
/// write falls inside `..end` and inside the file as the coordinator sized
/// it; `nnz_starts` place each user block's ratings among all.
pub fn write_rows(job: &Job, places: &[Place], nnz_starts: &[u64]) -> Result<WriteRowsResponse, String> {
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
                    let at = place_of(place.at, b.row_start, width, values.len() as u64 * 4, place.end)?;
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
                        let at = place_of(place.at, b.row_start, 8, values.len() as u64 * 8, place.end)?;
                        write_le_at(file, at, &values).map_err(shown)?;
                    } else {
                        let at = place_of(place.at, start, 4, (next - start) * 4, place.end)?;
                        write_le_at(file, at, &b.items()).map_err(shown)?;
                    }
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

/// The offset of a block's bytes (`row_start` rows of `row_bytes` past
/// `base`, `bytes` long), refused where it would reach past `end`.
fn place_of(base: u64, row_start: u64, row_bytes: u64, bytes: u64, end: u64) -> Result<u64, String> {
    let at = row_start.checked_mul(row_bytes).and_then(|o| o.checked_add(base));
    match at.and_then(|a| a.checked_add(bytes)) {
        Some(stop) if stop <= end => Ok(at.expect("checked")),
        _ => Err(format!("rows from {row_start} would be written past byte {end} of the file")),
    }
}

#[cfg(test)]
mod tests {
    use super::place_of;

    #[test]
    fn a_write_past_the_end_is_refused() {
        assert_eq!(place_of(100, 3, 8, 16, 140), Ok(124));
        assert!(place_of(100, 3, 8, 17, 140).is_err());
        assert!(place_of(u64::MAX - 4, 1, 8, 4, u64::MAX).is_err());
    }
}
