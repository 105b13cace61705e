//! A model's ids file written block by block (each cluster worker its
//! blocks' lines at their bytes, [`crate::row_places::IdLines`]), checked
//! as it is read back: every block's lines where they were placed, every
//! id of its block, the whole file in dense order, so each id once. The
//! reader keeps one line, not the ids.

use std::io::{self, BufRead, Write};

use crate::data::ids::{block_of_bucket, id_bucket};
use crate::row_places::IdLines;

/// Write `ids` as lines of an ids file: each id and its `\n`.
pub fn write_id_lines(w: &mut (impl Write + ?Sized), ids: &[String]) -> io::Result<()> {
    for id in ids {
        w.write_all(id.as_bytes())?;
        w.write_all(b"\n")?;
    }
    Ok(())
}

/// The bytes [`write_id_lines`] writes of `ids`.
pub fn id_line_bytes(ids: &[String]) -> u64 {
    ids.iter().map(|id| id.len() as u64 + 1).sum()
}

/// What is wrong with `lines` as the places of `n_rows` ids: starts that
/// do not rise from 0 to `n_rows`, or a block with fewer bytes than its
/// ids need (two a line at least).
pub(super) fn lines_problem(lines: &IdLines, n_rows: usize) -> Result<(), String> {
    let IdLines { rows, bytes } = lines;
    if rows.len() < 2 || rows.len() != bytes.len() {
        return Err(format!(
            "{} row starts and {} byte starts for the blocks' ids",
            rows.len(),
            bytes.len()
        ));
    }
    if rows[0] != 0 || bytes[0] != 0 || rows[rows.len() - 1] != n_rows as u64 {
        return Err(format!("the blocks' id lines do not start at 0 and end at row {n_rows}"));
    }
    for b in 0..rows.len() - 1 {
        let (r, n) = (rows[b + 1].checked_sub(rows[b]), bytes[b + 1].checked_sub(bytes[b]));
        match (r, n) {
            (Some(r), Some(n)) if n >= 2 * r => {}
            _ => return Err(format!("block {b}'s id lines are placed at bytes that do not hold its ids")),
        }
    }
    Ok(())
}

/// Read the ids file `r` to its end, checking it holds exactly the lines
/// `lines` places (checked by [`lines_problem`]): each block's ids at its
/// bytes, each a nonempty UTF-8 id without `\r`, of that block, and every
/// id after the one before it in dense order (by bucket, then numerically
/// where every id is an integer, else bytewise), so no id twice.
pub(super) fn check_id_lines(r: &mut impl BufRead, lines: &IdLines) -> Result<(), String> {
    let n_blocks = lines.rows.len() - 1;
    let (mut line, mut prev) = (Vec::new(), Vec::new());
    let mut prev_key: Option<(usize, Option<i128>)> = None;
    // Strictly ascending bytewise, and numerically, among ids of one bucket;
    // which order holds is known at the end (numeric only if all are integers).
    let (mut bytewise, mut numeric, mut all_integers) = (true, true, true);
    let mut row = 0u64;
    for b in 0..n_blocks {
        let mut bytes = 0u64;
        for _ in lines.rows[b]..lines.rows[b + 1] {
            row += 1;
            line.clear();
            let n = r.read_until(b'\n', &mut line).map_err(|e| e.to_string())?;
            bytes += n as u64;
            if line.pop() != Some(b'\n') {
                return Err(format!("line {row}: the file ends before block {b}'s ids do"));
            }
            let id = std::str::from_utf8(&line).map_err(|_| format!("line {row}: the id is not UTF-8"))?;
            if id.is_empty() || id.contains('\r') {
                return Err(format!("line {row}: an empty id, or one with a line break ({id:?})"));
            }
            let bucket = id_bucket(id);
            if block_of_bucket(bucket, n_blocks) != b {
                return Err(format!(
                    "line {row}: id {id:?} is of block {}, its line of block {b}",
                    block_of_bucket(bucket, n_blocks)
                ));
            }
            let number = id.parse::<i128>().ok();
            all_integers &= number.is_some();
            match prev_key {
                Some((pb, _)) if pb > bucket => return Err(format!("line {row}: id {id:?} is out of the ids' order")),
                Some((pb, pn)) if pb == bucket => {
                    bytewise &= prev < line;
                    numeric &= match (pn, number) {
                        (Some(p), Some(q)) => (p, &prev) < (q, &line),
                        _ => true,
                    };
                }
                _ => {}
            }
            prev_key = Some((bucket, number));
            std::mem::swap(&mut prev, &mut line);
        }
        let placed = lines.bytes[b + 1] - lines.bytes[b];
        if bytes != placed {
            return Err(format!("block {b}'s ids take {bytes} bytes, {placed} were placed for them"));
        }
    }
    if !r.fill_buf().map_err(|e| e.to_string())?.is_empty() {
        return Err(format!("more follows the {row} ids of the blocks"));
    }
    if !(if all_integers { numeric } else { bytewise }) {
        return Err(
            "the ids are not in dense order (by bucket, then numerically where every id is an integer, else bytewise), each once".into(),
        );
    }
    Ok(())
}

/// `ids` (in dense order) as an ids file, and the places the blocks of
/// `n_blocks` give their lines (tests).
#[cfg(test)]
pub(super) fn placed(ids: &[String], n_blocks: usize) -> (Vec<u8>, IdLines) {
    use crate::data::ids::block_of_id;
    let (mut rows, mut bytes) = (vec![0u64; n_blocks + 1], vec![0u64; n_blocks + 1]);
    for id in ids {
        let b = block_of_id(id, n_blocks);
        rows[b + 1] += 1;
        bytes[b + 1] += id_line_bytes(std::slice::from_ref(id));
    }
    for b in 0..n_blocks {
        rows[b + 1] += rows[b];
        bytes[b + 1] += bytes[b];
    }
    let mut text = Vec::new();
    write_id_lines(&mut text, ids).expect("a Vec takes every write");
    (text, IdLines { rows, bytes })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::ids::dense_order;

    fn check(text: &[u8], lines: &IdLines) -> Result<(), String> {
        check_id_lines(&mut &text[..], lines)
    }

    /// Integer ids and others, in dense order, pass; a swapped pair, a
    /// repeated id, a moved line, a short or long file, a bad id or bad
    /// starts are refused, saying where.
    #[test]
    fn an_ids_file_in_dense_order_at_its_places_passes_and_nothing_else() {
        let numbers: Vec<String> = (0..3000).map(|i| (i * 37).to_string()).collect();
        let names: Vec<String> = (0..3000).map(|i| format!("u{i}")).collect();
        for ids in [numbers, names] {
            let ids = dense_order(ids.iter().map(String::as_str).collect());
            for n_blocks in [1, 3] {
                let (text, lines) = placed(&ids, n_blocks);
                assert_eq!(lines_problem(&lines, ids.len()), Ok(()));
                assert_eq!(check(&text, &lines), Ok(()));
                // A pair of one bucket swapped.
                let at = (1..ids.len())
                    .find(|&i| id_bucket(&ids[i]) == id_bucket(&ids[i - 1]))
                    .expect("3000 ids share a bucket somewhere");
                let mut swapped = ids.clone();
                swapped.swap(at - 1, at);
                let e = check(&placed(&swapped, n_blocks).0, &lines).unwrap_err();
                assert!(e.contains("not in dense order"), "{e}");
                // One id twice, in place of its neighbour.
                let mut twice = ids.clone();
                twice[at] = twice[at - 1].clone();
                let e = check(&placed(&twice, n_blocks).0, &lines).unwrap_err();
                assert!(e.contains("not in dense order") || e.contains("bytes"), "{e}");
                // The file one line short, one line long, or zeroed (a block never written).
                let short = &text[..text.len() - ids[ids.len() - 1].len() - 1];
                assert!(check(short, &lines).unwrap_err().contains("ends before"));
                let long = [&text[..], b"x\n"].concat();
                assert!(check(&long, &lines).unwrap_err().contains("more follows"));
                let zeroed = vec![0u8; text.len()];
                assert!(check(&zeroed, &lines).is_err());
                // A line break inside an id.
                let mut cr = text.clone();
                cr[0] = b'\r';
                assert!(check(&cr, &lines).unwrap_err().contains("line 1:"));
            }
            // Block 0's last id placed as block 1's first: its line is of another block.
            let (text, mut lines) = placed(&ids, 3);
            let last = &ids[lines.rows[1] as usize - 1];
            lines.rows[1] -= 1;
            lines.bytes[1] -= last.len() as u64 + 1;
            let e = check(&text, &lines).unwrap_err();
            assert!(e.contains(&format!("id {last:?} is of block 0, its line of block 1")), "{e}");
        }
        let ok = IdLines {
            rows: vec![0, 2, 3],
            bytes: vec![0, 4, 6],
        };
        assert_eq!(lines_problem(&ok, 3), Ok(()));
        assert!(lines_problem(&ok, 4).is_err());
        assert!(lines_problem(
            &IdLines {
                rows: vec![0, 2, 3],
                bytes: vec![0, 3, 6]
            },
            3
        )
        .is_err());
        assert!(lines_problem(
            &IdLines {
                rows: vec![0, 3],
                bytes: vec![0, 9, 9]
            },
            3
        )
        .is_err());
        assert!(lines_problem(
            &IdLines {
                rows: vec![0, 2, 1],
                bytes: vec![0, 4, 6]
            },
            1
        )
        .is_err());
    }
}
