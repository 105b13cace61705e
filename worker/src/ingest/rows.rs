//! Ratings on the wire between workers while blocks are built: each chunk
//! carries a table of the ids it names (their bytes, cut at `id_ends`) and
//! u32 codes into it, so an id repeated over many rows travels once per
//! chunk, and the receiver checks every field before it keeps a row.

use als_core::data::ingest::{ItemBoundPart, ItemBoundRow, RoutedPart, RoutedRow};
use als_proto::codec::{f32_bytes, pieces_vec, u32_bytes, u64_bytes};
use als_proto::pb::IngestRowsChunk;

/// Bytes of rows a chunk holds before the next one starts, far below the
/// message limit (one row adds at most two ids of `max_id_len` bytes).
const CHUNK_TARGET: usize = 512 << 10;

/// The user of a row on the wire: a code into the part's table (to a user
/// block) or a dense row (to an item block).
#[derive(Clone, Copy)]
pub enum UserRef {
    Code(u32),
    Row(u32),
}

/// Builds the chunks of one stream of rows for one block, from a part's
/// rows and table: each chunk gets a table of only the ids it names.
pub struct ChunkWriter<'a> {
    job_id: String,
    to_items: bool,
    block: u32,
    table: &'a [String],
    /// Per code of `table`, its code in the current chunk (`u32::MAX`: none yet).
    remap: Vec<u32>,
    done: Vec<IngestRowsChunk>,
    cur: Cur,
}

#[derive(Default)]
struct Cur {
    places: Vec<u64>,
    users: Vec<u32>,
    items: Vec<u32>,
    values: Vec<f32>,
    test: Vec<u8>,
    id_bytes: Vec<u8>,
    id_ends: Vec<u32>,
    /// The codes of `table` this chunk names.
    used: Vec<u32>,
}

impl Cur {
    fn bytes(&self) -> usize {
        self.places.len() * 21 + self.id_bytes.len() + self.id_ends.len() * 4
    }
}

impl<'a> ChunkWriter<'a> {
    pub fn new(job_id: &str, to_items: bool, block: u32, table: &'a [String]) -> Self {
        ChunkWriter {
            job_id: job_id.to_owned(),
            to_items,
            block,
            table,
            remap: vec![u32::MAX; table.len()],
            done: Vec::new(),
            cur: Cur::default(),
        }
    }

    fn code(&mut self, c: u32) -> u32 {
        let slot = &mut self.remap[c as usize];
        if *slot == u32::MAX {
            *slot = self.cur.id_ends.len() as u32;
            self.cur.id_bytes.extend_from_slice(self.table[c as usize].as_bytes());
            self.cur.id_ends.push(self.cur.id_bytes.len() as u32);
            self.cur.used.push(c);
        }
        *slot
    }

    pub fn push(&mut self, place: u64, user: UserRef, item: u32, value: f32, test: bool) {
        let user = match user {
            UserRef::Code(c) => self.code(c),
            UserRef::Row(r) => r,
        };
        let item = self.code(item);
        let c = &mut self.cur;
        c.places.push(place);
        c.users.push(user);
        c.items.push(item);
        c.values.push(value);
        if !self.to_items {
            c.test.push(test as u8);
        }
        if c.bytes() >= CHUNK_TARGET {
            self.cut();
        }
    }

    fn cut(&mut self) {
        let c = std::mem::take(&mut self.cur);
        for &u in &c.used {
            self.remap[u as usize] = u32::MAX;
        }
        self.done.push(IngestRowsChunk {
            job_id: self.job_id.clone(),
            to_items: self.to_items,
            block: self.block,
            n_rows: c.places.len() as u32,
            places: u64_bytes(&c.places).into(),
            users: u32_bytes(&c.users).into(),
            items: u32_bytes(&c.items).into(),
            values: f32_bytes(&c.values).into(),
            test: c.test.into(),
            id_bytes: c.id_bytes.into(),
            id_ends: u32_bytes(&c.id_ends).into(),
        });
    }

    /// The chunks, none if no row was pushed.
    pub fn finish(mut self) -> Vec<IngestRowsChunk> {
        if !self.cur.places.is_empty() {
            self.cut();
        }
        self.done
    }
}

/// A share's rows for user block `block`, as messages.
pub fn routed_chunks(job_id: &str, block: u32, part: &RoutedPart) -> Vec<IngestRowsChunk> {
    let mut w = ChunkWriter::new(job_id, false, block, &part.ids);
    for r in &part.rows {
        w.push(r.place, UserRef::Code(r.user), r.item, r.value, r.test);
    }
    w.finish()
}

/// A user block's training rows for item block `block`, as messages.
pub fn item_bound_chunks(job_id: &str, block: u32, part: &ItemBoundPart) -> Vec<IngestRowsChunk> {
    let mut w = ChunkWriter::new(job_id, true, block, &part.ids);
    for r in &part.rows {
        w.push(r.place, UserRef::Row(r.user), r.item, r.value, false);
    }
    w.finish()
}

/// An id table: `id_bytes` cut at `id_ends`, each id valid UTF-8, not
/// empty and at most `max_id_len` bytes.
pub fn decode_ids(id_bytes: &[u8], id_ends: &[u8], max_id_len: usize) -> Result<Vec<String>, String> {
    let ends: Vec<u32> = pieces_vec("id_ends", &[id_ends]).map_err(|e| e.to_string())?;
    let mut ids = Vec::with_capacity(ends.len());
    let mut start = 0usize;
    for (n, &end) in ends.iter().enumerate() {
        let end = end as usize;
        if end <= start || end > id_bytes.len() {
            return Err(format!("id {n} of the table ends at {end}, outside {start}..={}", id_bytes.len()));
        }
        if end - start > max_id_len {
            return Err(format!(
                "id {n} of the table is {} bytes, over the {max_id_len}-byte limit",
                end - start
            ));
        }
        let id = std::str::from_utf8(&id_bytes[start..end]).map_err(|_| format!("id {n} of the table is not UTF-8"))?;
        ids.push(id.to_owned());
        start = end;
    }
    if start != id_bytes.len() {
        return Err(format!("the id table has {} bytes past its last id", id_bytes.len() - start));
    }
    Ok(ids)
}

/// The rows of one chunk, every field checked: lengths, codes, values.
struct Decoded {
    places: Vec<u64>,
    users: Vec<u32>,
    items: Vec<u32>,
    values: Vec<f32>,
    test: Vec<u8>,
    ids: Vec<String>,
}

fn decode(c: &IngestRowsChunk, max_id_len: usize) -> Result<Decoded, String> {
    let n = c.n_rows as usize;
    let e = |e: als_proto::codec::CodecError| e.to_string();
    let d = Decoded {
        places: pieces_vec("places", &[&c.places]).map_err(e)?,
        users: pieces_vec("users", &[&c.users]).map_err(e)?,
        items: pieces_vec("items", &[&c.items]).map_err(e)?,
        values: pieces_vec("values", &[&c.values]).map_err(e)?,
        test: c.test.to_vec(),
        ids: decode_ids(&c.id_bytes, &c.id_ends, max_id_len)?,
    };
    let test_len = if c.to_items { 0 } else { n };
    if [d.places.len(), d.users.len(), d.items.len(), d.values.len()] != [n; 4] || d.test.len() != test_len {
        return Err(format!(
            "a chunk of {n} rows has {} places, {} users, {} items, {} values and {} test flags",
            d.places.len(),
            d.users.len(),
            d.items.len(),
            d.values.len(),
            d.test.len()
        ));
    }
    let n_ids = d.ids.len() as u32;
    let users_are_codes = !c.to_items;
    if let Some(bad) = d
        .items
        .iter()
        .chain(d.users.iter().filter(|_| users_are_codes))
        .find(|&&x| x >= n_ids)
    {
        return Err(format!("id code {bad} is outside the chunk's table of {n_ids}"));
    }
    if let Some(v) = d.values.iter().find(|v| als_core::limits::check_value(**v).is_err()) {
        return Err(format!("value {v} is not finite or outside ±{:e}", als_core::limits::MAX_ABS_VALUE));
    }
    if d.test.iter().any(|&t| t > 1) {
        return Err("a test flag is neither 0 nor 1".into());
    }
    Ok(d)
}

/// A chunk of a share's rows for a user block.
pub fn decode_routed(c: &IngestRowsChunk, max_id_len: usize) -> Result<RoutedPart, String> {
    let d = decode(c, max_id_len)?;
    let rows = (0..d.places.len())
        .map(|r| RoutedRow {
            place: d.places[r],
            user: d.users[r],
            item: d.items[r],
            value: d.values[r],
            test: d.test[r] == 1,
        })
        .collect();
    Ok(RoutedPart { ids: d.ids, rows })
}

/// A chunk of a user block's training rows for an item block.
pub fn decode_item_bound(c: &IngestRowsChunk, max_id_len: usize) -> Result<ItemBoundPart, String> {
    let d = decode(c, max_id_len)?;
    let rows = (0..d.places.len())
        .map(|r| ItemBoundRow {
            place: d.places[r],
            user: d.users[r],
            item: d.items[r],
            value: d.values[r],
        })
        .collect();
    Ok(ItemBoundPart { ids: d.ids, rows })
}

/// Bytes a part of `rows` rows naming `ids` takes here, held (against the
/// job's memory budget).
pub fn held_bytes(ids: &[String], rows: usize) -> u64 {
    let table: usize = ids.iter().map(|i| i.len() + std::mem::size_of::<String>()).sum();
    (table + rows * std::mem::size_of::<RoutedRow>()) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rows of `parts` with their ids spelled out.
    fn spelled(parts: &[RoutedPart]) -> Vec<(u64, String, String, u32, bool)> {
        parts
            .iter()
            .flat_map(|p| {
                p.rows.iter().map(|r| {
                    let (u, i) = (p.ids[r.user as usize].clone(), p.ids[r.item as usize].clone());
                    (r.place, u, i, r.value.to_bits(), r.test)
                })
            })
            .collect()
    }

    #[test]
    fn rows_cross_in_chunks_with_one_table_each_and_come_back_equal() {
        let ids: Vec<String> = (0..700)
            .map(|u| format!("user-{u}"))
            .chain((0..91).map(|i| i.to_string()))
            .collect();
        let rows: Vec<RoutedRow> = (0..60_000u64)
            .map(|p| RoutedRow {
                place: p * 3,
                user: (p % 700) as u32,
                item: 700 + (p % 91) as u32,
                value: p as f32 * 0.5,
                test: p % 5 == 0,
            })
            .collect();
        let part = RoutedPart { ids, rows };
        let chunks = routed_chunks("j", 4, &part);
        assert!(chunks.len() > 1, "60,000 rows take more than one chunk");
        assert!(chunks.iter().all(|c| prost::Message::encoded_len(c) < 1 << 20));
        // Each chunk's table holds only the ids it names, each once.
        for c in &chunks {
            let p = decode_routed(c, 64).unwrap();
            let mut named: Vec<u32> = p.rows.iter().flat_map(|r| [r.user, r.item]).collect();
            named.sort_unstable();
            named.dedup();
            assert_eq!(named.len(), p.ids.len());
        }
        let back: Vec<RoutedPart> = chunks.iter().map(|c| decode_routed(c, 64).unwrap()).collect();
        assert_eq!(spelled(&back), spelled(std::slice::from_ref(&part)));

        let part = ItemBoundPart {
            ids: vec!["a".into(), "x".into()],
            rows: vec![ItemBoundRow {
                place: 9,
                user: 17,
                item: 1,
                value: 2.0,
            }],
        };
        let c = item_bound_chunks("j", 1, &part);
        let back = decode_item_bound(&c[0], 64).unwrap();
        assert_eq!(back.ids, ["x"]);
        assert_eq!(
            (back.rows[0].place, back.rows[0].user, back.rows[0].item, back.rows[0].value),
            (9, 17, 0, 2.0)
        );
    }

    #[test]
    fn a_malformed_chunk_is_refused_saying_what_is_wrong() {
        let part = RoutedPart {
            ids: vec!["u".into(), "i".into()],
            rows: vec![RoutedRow {
                place: 0,
                user: 0,
                item: 1,
                value: 1.0,
                test: false,
            }],
        };
        let good = routed_chunks("j", 0, &part).remove(0);
        let refused = |edit: &dyn Fn(&mut IngestRowsChunk), says: &str| {
            let mut c = good.clone();
            edit(&mut c);
            let e = decode_routed(&c, 8).unwrap_err();
            assert!(e.contains(says), "{e}");
        };
        refused(&|c| c.n_rows = 2, "a chunk of 2 rows");
        refused(&|c| c.items = u32_bytes(&[5]).into(), "outside the chunk's table");
        refused(&|c| c.values = f32_bytes(&[f32::NAN]).into(), "not finite");
        refused(&|c| c.test = vec![3].into(), "test flag");
        refused(&|c| c.id_ends = u32_bytes(&[1, 1]).into(), "ends at 1");
        refused(&|c| c.id_bytes = vec![0xff, b'i'].into(), "not UTF-8");
        refused(&|c| c.id_bytes = b"uuuuuuuuuuuuuuuu".to_vec().into(), "past its last id");
        let long = "u".repeat(9);
        refused(
            &|c| {
                c.id_bytes = format!("{long}i").into_bytes().into();
                c.id_ends = u32_bytes(&[9, 10]).into();
            },
            "over the 8-byte limit",
        );
    }
}
