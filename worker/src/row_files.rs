//! Writing the latest rows of a job's blocks into a file the coordinator
//! created (a checkpoint), each block at its rows' place: the coordinator
//! gets the file's checksum from the file, not the rows over the network.

use std::fs::OpenOptions;
use std::path::Path;

use als_core::checkpoint::write_f32_at;
use als_core::side::Side;
use als_proto::pb::{WriteRowsRequest, WriteRowsResponse};

use crate::job::Job;

/// Where one side's rows and biases start in the file.
struct SideAt {
    rows: u64,
    bias: u64,
}

/// Write every block `job` holds, both sides, into `path` (resolved under
/// the output root), after checking each write falls inside `..end` and
/// inside the file as the coordinator sized it.
pub fn write_rows(job: &Job, path: &Path, req: &WriteRowsRequest) -> Result<WriteRowsResponse, String> {
    let mut file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let len = file.metadata().map_err(|e| format!("{}: {e}", path.display()))?.len();
    if len < req.end {
        return Err(format!(
            "{} has {len} bytes, fewer than the {} its rows end at",
            path.display(),
            req.end
        ));
    }
    let k = job.params.factors as u64;
    let mut resp = WriteRowsResponse::default();
    for (side, at) in [
        (
            Side::Users,
            SideAt {
                rows: req.user_rows_at,
                bias: req.user_bias_at,
            },
        ),
        (
            Side::Items,
            SideAt {
                rows: req.item_rows_at,
                bias: req.item_bias_at,
            },
        ),
    ] {
        let written = match side {
            Side::Users => &mut resp.user_blocks,
            Side::Items => &mut resp.item_blocks,
        };
        for b in job.rows_of(side) {
            let rows_at = place(at.rows, b.row_start, k * 4, b.factors.len() as u64 * 4, req.end)?;
            write_f32_at(&mut file, rows_at, b.factors).map_err(|e| format!("{}: {e}", path.display()))?;
            if !b.bias.is_empty() {
                let bias_at = place(at.bias, b.row_start, 4, b.bias.len() as u64 * 4, req.end)?;
                write_f32_at(&mut file, bias_at, b.bias).map_err(|e| format!("{}: {e}", path.display()))?;
            }
            written.push(b.block);
        }
    }
    // On the file system the coordinator reads the file back from.
    file.sync_data().map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(resp)
}

/// The offset of a block's bytes (`row_start` rows of `row_bytes` past
/// `base`, `bytes` long), refused where it would reach past `end`.
fn place(base: u64, row_start: u64, row_bytes: u64, bytes: u64, end: u64) -> Result<u64, String> {
    let at = row_start.checked_mul(row_bytes).and_then(|o| o.checked_add(base));
    match at.and_then(|a| a.checked_add(bytes)) {
        Some(stop) if stop <= end => Ok(at.expect("checked")),
        _ => Err(format!("rows from {row_start} would be written past byte {end} of the file")),
    }
}

#[cfg(test)]
mod tests {
    use super::place;

    #[test]
    fn a_write_past_the_end_is_refused() {
        assert_eq!(place(100, 3, 8, 16, 140), Ok(124));
        assert!(place(100, 3, 8, 17, 140).is_err());
        assert!(place(u64::MAX - 4, 1, 8, 4, u64::MAX).is_err());
    }
}
