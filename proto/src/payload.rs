//! The bulk fields of every streamed message, declared once.
//!
//! A streamed message (`BlockChunk`, `FactorChunk`, ...) carries a header on
//! its first chunk and packed little-endian arrays spread over all chunks.
//! [`bulk_fields!`] lists each message's arrays with their element types in
//! wire order, and generates from that one list:
//! - `…Fields<'a>`: the arrays to send, by name, as [`Field`]s (borrowed,
//!   never packed into a copy first), with `to_chunks`;
//! - `…Limits`: the most bytes the receiver accepts per array, by name;
//! - `…Payload`: the decoded arrays, by name, and `…Pieces`: the same
//!   undecoded, for decoding in place;
//! - the [`Bulk`] impl that [`Assembler`] uses to gather a stream under
//!   its limits and decode it.
//!
//! Adding a field means adding it to the `.proto` file and to one list here.

use crate::codec::{chunk_fields, chunks_encoded_len, pieces_vec, Bytes, CodecError, Field};
use crate::pb::{BlockChunk, EvalChunk, FactorChunk, PeerChunk, RouteChunk, SolvedChunk};

/// A message whose bulk arrays are gathered across a stream.
pub trait Bulk: Sized {
    /// The decoded arrays.
    type Payload;
    /// Byte limits per array.
    type Limits: Copy;
    /// The arrays as received, undecoded (slices of the receive buffers).
    type Pieces;
    /// Array names, in wire order (for error messages).
    const NAMES: &'static [&'static str];
    /// The message's array `i` (wire order).
    fn bulk(&self, i: usize) -> &Bytes;
    fn limits(l: &Self::Limits) -> Vec<u64>;
    /// Decode the gathered pieces of each array (wire order).
    fn decode(pieces: Vec<Vec<Bytes>>) -> Result<Self::Payload, CodecError>;
    /// Name the gathered pieces of each array (wire order).
    fn name_pieces(pieces: Vec<Vec<Bytes>>) -> Self::Pieces;
}

macro_rules! bulk_fields {
    ($msg:ident => $fields:ident, $limits:ident, $payload:ident, $pieces:ident { $($field:ident : $t:ty),+ $(,)? }) => {
        #[doc = concat!("The arrays of a `", stringify!($msg), "` stream to send.")]
        pub struct $fields<'a> {
            $(pub $field: Field<'a>,)+
        }

        impl $fields<'_> {
            /// The stream's messages: `header(j)` builds message `j` (its
            /// header fields go on `j == 0`), the arrays are split across
            /// them at most `max` bytes per message.
            pub fn to_chunks(&self, max: usize, header: impl FnMut(usize) -> $msg) -> Vec<$msg> {
                let fields = [$(self.$field.clone()),+];
                chunk_fields(&fields, max, header, |m: &mut $msg, i| {
                    [$(&mut m.$field),+].into_iter().nth(i).expect("one slot per array")
                })
            }

            /// The encoded bytes of [`Self::to_chunks`]'s messages, without
            /// writing them: what a hand-over that skips the encoding reports.
            pub fn encoded_len(&self, max: usize, header: impl FnMut(usize) -> $msg) -> u64 {
                let lens = [$(self.$field.len()),+];
                chunks_encoded_len(&lens, max, header, |m: &mut $msg, i| {
                    [$(&mut m.$field),+].into_iter().nth(i).expect("one slot per array")
                })
            }
        }

        #[doc = concat!("Bytes the receiver of a `", stringify!($msg), "` stream accepts per array.")]
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct $limits {
            $(pub $field: u64,)+
        }

        impl $limits {
            pub fn total(&self) -> u64 {
                0 $(+ self.$field)+
            }
        }

        #[doc = concat!("The decoded arrays of a `", stringify!($msg), "` stream.")]
        #[derive(Debug, Clone, Default, PartialEq)]
        pub struct $payload {
            $(pub $field: Vec<$t>,)+
        }

        #[doc = concat!("The arrays of a `", stringify!($msg), "` stream as received, for decoding in place.")]
        #[derive(Debug, Clone, Default)]
        pub struct $pieces {
            $(pub $field: Vec<Bytes>,)+
        }

        impl Bulk for $msg {
            type Payload = $payload;
            type Limits = $limits;
            type Pieces = $pieces;
            const NAMES: &'static [&'static str] = &[$(stringify!($field)),+];

            fn bulk(&self, i: usize) -> &Bytes {
                [$(&self.$field),+].into_iter().nth(i).expect("one slot per array")
            }

            fn limits(l: &$limits) -> Vec<u64> {
                vec![$(l.$field),+]
            }

            fn decode(pieces: Vec<Vec<Bytes>>) -> Result<$payload, CodecError> {
                let mut arrays = pieces.into_iter();
                Ok($payload {
                    $($field: pieces_vec::<$t>(stringify!($field), &arrays.next().unwrap_or_default())?,)+
                })
            }

            fn name_pieces(pieces: Vec<Vec<Bytes>>) -> $pieces {
                let mut arrays = pieces.into_iter();
                $pieces {
                    $($field: arrays.next().unwrap_or_default(),)+
                }
            }
        }
    };
}

bulk_fields!(BlockChunk => BlockFields, BlockLimits, BlockPayload, BlockPieces {
    indptr: u32,
    columns: u32,
    values: f32,
    needed: u32,
    factors: f32,
    bias: f32,
    test_indptr: u32,
    test_columns: u32,
    test_values: f32,
});

bulk_fields!(FactorChunk => FactorFields, FactorLimits, FactorPayload, FactorPieces {
    gram: f64,
    factors: f32,
    bias: f32,
});

bulk_fields!(SolvedChunk => SolvedFields, SolvedLimits, SolvedPayload, SolvedPieces {
    gram: f64,
    factors: f32,
    bias: f32,
});

bulk_fields!(RouteChunk => RouteFields, RouteLimits, RoutePayload, RoutePieces {
    rows: u32,
});

bulk_fields!(PeerChunk => PeerFields, PeerLimits, PeerPayload, PeerPieces {
    rows: u32,
    factors: f32,
    bias: f32,
});

bulk_fields!(EvalChunk => EvalFields, EvalLimits, EvalPayload, EvalPieces {
    item_rows: u32,
    user_factors: f32,
    user_bias: f32,
    item_factors: f32,
    item_bias: f32,
});

/// An array that grew past its limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field {field} exceeds its declared size of {limit} bytes")]
pub struct OverLimit {
    pub field: &'static str,
    pub limit: u64,
}

/// Gathers the arrays of one stream of `M`, refusing any beyond its limit
/// before it is held. The pieces stay slices of the receive buffers; they
/// are decoded once, at the end.
pub struct Assembler<M: Bulk> {
    limits: Vec<u64>,
    held: Vec<u64>,
    pieces: Vec<Vec<Bytes>>,
    _message: std::marker::PhantomData<fn(M)>,
}

impl<M: Bulk> Assembler<M> {
    pub fn new(limits: &M::Limits) -> Self {
        Self::with_limits(M::limits(limits))
    }

    /// Unlimited: for streams whose sender is trusted to size them (the
    /// coordinator reading its own workers' answers checks the decoded sizes).
    pub fn unlimited() -> Self {
        Self::with_limits(vec![u64::MAX; M::NAMES.len()])
    }

    fn with_limits(limits: Vec<u64>) -> Self {
        Assembler {
            held: vec![0; limits.len()],
            pieces: vec![Vec::new(); limits.len()],
            limits,
            _message: std::marker::PhantomData,
        }
    }

    /// Append the arrays of one message.
    pub fn add(&mut self, m: &M) -> Result<(), OverLimit> {
        for i in 0..self.limits.len() {
            let data = m.bulk(i);
            if data.is_empty() {
                continue;
            }
            let held = self.held[i].saturating_add(data.len() as u64);
            if held > self.limits[i] {
                return Err(OverLimit {
                    field: M::NAMES[i],
                    limit: self.limits[i],
                });
            }
            self.held[i] = held;
            self.pieces[i].push(data.clone());
        }
        Ok(())
    }

    /// The decoded arrays.
    pub fn finish(self) -> Result<M::Payload, CodecError> {
        M::decode(self.pieces)
    }

    /// The arrays undecoded, by name: for decoding straight into their
    /// destination ([`crate::codec::pieces_into`]).
    pub fn into_pieces(self) -> M::Pieces {
        M::name_pieces(self.pieces)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::f32_bytes;

    #[test]
    fn a_block_round_trips_through_chunks_of_any_size() {
        let factors: Vec<f32> = (0..40).map(|i| i as f32 * 0.5).collect();
        let indptr = [0u32, 2, 5];
        let (columns, values) = ([0u32, 3, 1, 2, 3], [1.0f32, 2.0, 3.0, 4.0, 5.0]);
        let needed = [4u32, 7, 9, 11];
        for max in [3, 8, 64, 1 << 20] {
            let fields = BlockFields {
                indptr: Field::U32(&indptr),
                columns: Field::U32(&columns),
                values: Field::F32(&values),
                needed: Field::U32(&needed),
                factors: Field::F32(&factors),
                bias: Field::F32(&[]),
                test_indptr: Field::U32(&[]),
                test_columns: Field::U32(&[]),
                test_values: Field::F32(&[]),
            };
            let header = |j| BlockChunk {
                block: 3,
                n_rows: if j == 0 { 2 } else { 0 },
                ..Default::default()
            };
            let msgs = fields.to_chunks(max, header);
            assert_eq!(fields.encoded_len(max, header), crate::encoded_bytes(&msgs), "max {max}");
            assert_eq!(msgs[0].n_rows, 2);
            assert!(msgs[1..].iter().all(|m| m.n_rows == 0 && m.block == 3));
            let limits = BlockLimits {
                indptr: 12,
                columns: 20,
                values: 20,
                needed: 16,
                factors: 160,
                ..Default::default()
            };
            let mut acc = Assembler::<BlockChunk>::new(&limits);
            for m in &msgs {
                acc.add(m).unwrap();
            }
            let p = acc.finish().unwrap();
            assert!(p.bias.is_empty() && !p.values.is_empty());
            assert_eq!(
                (p.indptr, p.columns, p.needed),
                (indptr.to_vec(), columns.to_vec(), needed.to_vec())
            );
            assert_eq!((p.values, p.factors), (values.to_vec(), factors.clone()));
            assert!(p.bias.is_empty() && p.test_values.is_empty());
        }
    }

    /// The length a hand-over reports is the encoded one, for any split
    /// and any size of field (a length's varint grows past 127 bytes).
    #[test]
    fn encoded_len_is_the_length_of_the_messages() {
        let k = 48;
        for n in [0usize, 1, 3, 700] {
            let rows: Vec<u32> = (0..n as u32).map(|r| 3 * r + 1).collect();
            let factors: Vec<f32> = (0..n * k).map(|i| i as f32).collect();
            let row = |i: usize| &factors[i * k..(i + 1) * k];
            let bias = vec![0.5f32; n];
            for max in [7, 1000, 1 << 20] {
                let fields = PeerFields {
                    rows: Field::U32(&rows),
                    factors: Field::Rows { n_rows: n, k, row: &row },
                    bias: Field::F32(&bias),
                };
                let header = |j| PeerChunk {
                    job_id: "job-0123456789abcdef".into(),
                    step: 1 << 40,
                    epoch: 3,
                    n_rows: if j == 0 { n as u32 } else { 0 },
                    ..Default::default()
                };
                let msgs = fields.to_chunks(max, header);
                assert_eq!(fields.encoded_len(max, header), crate::encoded_bytes(&msgs), "{n} rows, max {max}");
            }
        }
    }

    #[test]
    fn an_array_past_its_limit_is_refused_by_name() {
        let m = FactorChunk {
            factors: Bytes::from(f32_bytes(&[1.0, 2.0, 3.0])),
            ..Default::default()
        };
        let limits = FactorLimits {
            gram: 0,
            factors: 8,
            bias: 0,
        };
        let e = Assembler::<FactorChunk>::new(&limits).add(&m).unwrap_err();
        assert_eq!(e.to_string(), "field factors exceeds its declared size of 8 bytes");
        // A partial value is a decode error naming the array.
        let mut acc = Assembler::<FactorChunk>::unlimited();
        acc.add(&FactorChunk {
            bias: Bytes::from_static(&[1, 2, 3]),
            ..Default::default()
        })
        .unwrap();
        assert!(acc.finish().unwrap_err().to_string().starts_with("bias:"));
    }
}
