//! Ratings on the wire between workers while blocks are built: one stream
//! per part (a sender's rows for one block) carries the part's table of ids
//! (their bytes, cut at `id_ends`) once and u32 codes into it, so an id
//! repeated over many rows travels once; every field is appended across the
//! stream's messages and decoded once at the end, where the receiver checks
//! every field before it keeps a row.

use als_core::data::ingest::{ItemBoundPart, ItemBoundRow, RoutedPart, RoutedRow};
use als_proto::codec::{decode_ids, f32_bytes, id_table, pieces_vec, plan_chunks, u32_bytes, u64_bytes};
use als_proto::pb::IngestRowsChunk;
use als_proto::CHUNK_BYTES;
use prost::bytes::Bytes;

/// The arrays of one part, as the messages of its stream carry them.
struct Arrays {
    n_rows: usize,
    /// places (to user blocks), users, items, values, test (to user
    /// blocks), id_bytes, id_ends.
    fields: [Vec<u8>; 7],
}

/// The messages of one stream: the first carries the header, each field's
/// bytes continue from message to message (slices of one buffer each).
fn messages(job_id: &str, to_items: bool, block: u32, a: Arrays) -> Vec<IngestRowsChunk> {
    if a.n_rows == 0 {
        return Vec::new();
    }
    let lens: Vec<usize> = a.fields.iter().map(Vec::len).collect();
    let fields = a.fields.map(Bytes::from);
    plan_chunks(&lens, CHUNK_BYTES)
        .into_iter()
        .enumerate()
        .map(|(j, pieces)| {
            let mut m = IngestRowsChunk {
                job_id: job_id.to_owned(),
                to_items,
                block,
                n_rows: if j == 0 { a.n_rows as u32 } else { 0 },
                ..Default::default()
            };
            for (f, range) in pieces {
                let piece = fields[f].slice(range);
                match f {
                    0 => m.places = piece,
                    1 => m.users = piece,
                    2 => m.items = piece,
                    3 => m.values = piece,
                    4 => m.test = piece,
                    5 => m.id_bytes = piece,
                    _ => m.id_ends = piece,
                }
            }
            m
        })
        .collect()
}

/// A row's place and test flag, which rows to a user block carry.
type PlaceAndTest<'a, R> = &'a dyn Fn(&R) -> (u64, bool);

/// The arrays of a part's rows, each `(user, item, value)` and, to a user
/// block, its place and test flag.
fn part_arrays<R>(ids: &[String], rows: &[R], row: impl Fn(&R) -> (u32, u32, f32), to_users: Option<PlaceAndTest<'_, R>>) -> Arrays {
    let (id_bytes, id_ends) = id_table(ids);
    let column = |f: &dyn Fn((u32, u32, f32)) -> u32| u32_bytes(&rows.iter().map(|r| f(row(r))).collect::<Vec<_>>());
    let (places, test) = match to_users {
        Some(t) => (
            u64_bytes(&rows.iter().map(|r| t(r).0).collect::<Vec<_>>()),
            rows.iter().map(|r| t(r).1 as u8).collect(),
        ),
        None => (Vec::new(), Vec::new()),
    };
    Arrays {
        n_rows: rows.len(),
        fields: [
            places,
            column(&|r| r.0),
            column(&|r| r.1),
            f32_bytes(&rows.iter().map(|r| row(r).2).collect::<Vec<_>>()),
            test,
            id_bytes,
            id_ends,
        ],
    }
}

/// A share's rows for user block `block`, as the messages of one stream.
pub fn routed_chunks(job_id: &str, block: u32, part: &RoutedPart) -> Vec<IngestRowsChunk> {
    let to_users: PlaceAndTest<'_, RoutedRow> = &|r| (r.place, r.test);
    let arrays = part_arrays(&part.ids, &part.rows, |r| (r.user, r.item, r.value), Some(to_users));
    messages(job_id, false, block, arrays)
}

/// A user block's training rows for item block `block`, as the messages of one stream.
pub fn item_bound_chunks(job_id: &str, block: u32, part: &ItemBoundPart) -> Vec<IngestRowsChunk> {
    let arrays = part_arrays(&part.ids, &part.rows, |r| (r.user, r.item, r.value), None);
    messages(job_id, true, block, arrays)
}

/// The rows of one stream, every field checked: lengths, codes, values.
struct Decoded {
    places: Vec<u64>,
    users: Vec<u32>,
    items: Vec<u32>,
    values: Vec<f32>,
    test: Vec<u8>,
    ids: Vec<String>,
}

/// A field's pieces, one after the other.
fn joined(pieces: &[&Bytes]) -> Vec<u8> {
    let mut out = Vec::with_capacity(pieces.iter().map(|p| p.len()).sum());
    pieces.iter().for_each(|p| out.extend_from_slice(p));
    out
}

/// A stream's messages (the header in the first), each field decoded
/// straight from its pieces.
fn decode(chunks: &[IngestRowsChunk], max_id_len: usize) -> Result<Decoded, String> {
    let first = chunks.first().ok_or("a stream of no messages")?;
    let n = first.n_rows as usize;
    let field = |f: fn(&IngestRowsChunk) -> &Bytes| chunks.iter().map(f).collect::<Vec<&Bytes>>();
    let e = |e: als_proto::codec::CodecError| e.to_string();
    let d = Decoded {
        places: pieces_vec("places", &field(|c| &c.places)).map_err(e)?,
        users: pieces_vec("users", &field(|c| &c.users)).map_err(e)?,
        items: pieces_vec("items", &field(|c| &c.items)).map_err(e)?,
        values: pieces_vec("values", &field(|c| &c.values)).map_err(e)?,
        test: joined(&field(|c| &c.test)),
        ids: match chunks {
            [one] => decode_ids(&one.id_bytes, &one.id_ends, max_id_len)?,
            _ => decode_ids(&joined(&field(|c| &c.id_bytes)), &joined(&field(|c| &c.id_ends)), max_id_len)?,
        },
    };
    // To item blocks, rows carry neither places nor test flags.
    let to_users = if first.to_items { 0 } else { n };
    if [d.users.len(), d.items.len(), d.values.len()] != [n; 3] || [d.places.len(), d.test.len()] != [to_users; 2] {
        return Err(format!(
            "a stream of {n} rows has {} places, {} users, {} items, {} values and {} test flags",
            d.places.len(),
            d.users.len(),
            d.items.len(),
            d.values.len(),
            d.test.len()
        ));
    }
    let n_ids = d.ids.len() as u32;
    let users_are_codes = !first.to_items;
    if let Some(bad) = d
        .items
        .iter()
        .chain(d.users.iter().filter(|_| users_are_codes))
        .find(|&&x| x >= n_ids)
    {
        return Err(format!("id code {bad} is outside the stream's table of {n_ids}"));
    }
    if let Some(v) = d.values.iter().find(|v| als_core::limits::check_value(**v).is_err()) {
        return Err(format!("value {v} is not finite or outside ±{:e}", als_core::limits::MAX_ABS_VALUE));
    }
    if d.test.iter().any(|&t| t > 1) {
        return Err("a test flag is neither 0 nor 1".into());
    }
    Ok(d)
}

/// A stream of a share's rows for a user block.
pub fn decode_routed(chunks: &[IngestRowsChunk], max_id_len: usize) -> Result<RoutedPart, String> {
    let d = decode(chunks, max_id_len)?;
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

/// A stream of a user block's training rows for an item block.
pub fn decode_item_bound(chunks: &[IngestRowsChunk], max_id_len: usize) -> Result<ItemBoundPart, String> {
    let d = decode(chunks, max_id_len)?;
    let rows = (0..d.users.len())
        .map(|r| ItemBoundRow {
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
    fn a_part_crosses_as_one_stream_with_its_table_once_and_comes_back_equal() {
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
        assert!(chunks.len() > 1, "60,000 rows take more than one message");
        assert!(chunks.iter().all(|c| prost::Message::encoded_len(c) < (1 << 20) + 1024));
        // The table travels once for the whole stream.
        let table: usize = chunks.iter().map(|c| c.id_ends.len() / 4).sum();
        assert_eq!(table, 791);
        let back = decode_routed(&chunks, 64).unwrap();
        assert_eq!(spelled(std::slice::from_ref(&back)), spelled(std::slice::from_ref(&part)));

        let part = ItemBoundPart {
            ids: vec!["a".into(), "x".into()],
            rows: vec![ItemBoundRow {
                user: 17,
                item: 1,
                value: 2.0,
            }],
        };
        let mut c = item_bound_chunks("j", 1, &part);
        assert_eq!(decode_item_bound(&c, 64).unwrap(), part);
        // Rows to an item block carry no place.
        c[0].places = u64_bytes(&[9]).into();
        assert!(decode_item_bound(&c, 64).unwrap_err().contains("1 places"));
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
            let e = decode_routed(std::slice::from_ref(&c), 8).unwrap_err();
            assert!(e.contains(says), "{e}");
        };
        refused(&|c| c.n_rows = 2, "a stream of 2 rows");
        refused(&|c| c.items = u32_bytes(&[5]).into(), "outside the stream's table");
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
