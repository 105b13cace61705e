//! The `Ingest`, `IngestRows` and `LookupItems` calls: decode, check, run
//! the step off the runtime, send what it routes to peers with no lock held.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use als_core::data::{DuplicatePolicy, Share};
use als_proto::codec::{pieces_vec, u128_bytes, u32_bytes, u64_bytes};
use als_proto::pb::ingest_request::Step;
use als_proto::pb::{
    select_key_step, AdoptStep, IngestRequest, IngestResponse, IngestRowsChunk, InputSpec, LookupItemsRequest, LookupItemsResponse,
    SelectKeyStep,
};
use rustc_hash::FxHashMap;
use tokio::sync::Mutex;
use tonic::{Status, Streaming};

use super::adopt::StartFactors;
use super::{key_of, load_options, Ingest, KeyAnswer, KeyQuestion, KeysOf, Outgoing, Owners, ShareToRead};
use crate::job::BlockData;
use crate::job::Job;
use crate::paths::Reach;
use crate::peers::Peers;
use crate::service::status;
use als_core::side::Side;
use als_proto::codec::decode_ids;

pub type IngestSlot = Arc<Mutex<Option<Ingest>>>;

/// Bytes of ids asked of one item block per `LookupItems` call, far below
/// the message limit (the answer is 4 bytes an id).
const LOOKUP_BYTES: usize = 1 << 20;

/// What the worker's settings allow an ingest.
pub struct IngestLimits<'a> {
    pub budget: u64,
    /// Only inputs under this directory are read; `None`: none is.
    pub input_root: Option<&'a Path>,
    /// Another job's build idle this long no longer holds the worker.
    pub idle: Duration,
}

/// How many ended jobs a worker remembers.
const ENDED_KEPT: usize = 64;

/// The jobs ended here lately (the last [`ENDED_KEPT`]). A coordinator
/// ends a build when a worker is lost and builds again under a new id; a
/// share still being read for the ended one must not be kept when the read
/// finishes, or it would hold this worker and the new build be refused as
/// busy until it idled out.
#[derive(Default)]
pub struct EndedJobs(std::sync::Mutex<VecDeque<String>>);

impl EndedJobs {
    pub fn end(&self, job_id: &str) {
        let mut ended = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if !ended.iter().any(|j| j == job_id) {
            ended.push_back(job_id.to_owned());
            if ended.len() > ENDED_KEPT {
                ended.pop_front();
            }
        }
    }

    fn refuse_ended(&self, job_id: &str) -> Result<(), Status> {
        match self.0.lock().unwrap_or_else(|e| e.into_inner()).iter().any(|j| j == job_id) {
            true => Err(Status::failed_precondition(format!("job '{job_id}' has ended on this worker"))),
            false => Ok(()),
        }
    }
}

/// Keep a share just read as its job's build, unless the job ended while it
/// was read or another job's build, still active, took the slot meanwhile.
pub(super) fn keep_read(slot: &mut Option<Ingest>, read: Ingest, ended: &EndedJobs, idle: Duration) -> Result<(), Status> {
    ended.refuse_ended(&read.id)?;
    let held = slot.as_ref().map(|i| (i.id.as_str(), i.last_activity));
    crate::service::refuse_other(held, &read.id, idle, "is building the blocks of job")?;
    *slot = Some(read);
    Ok(())
}

/// The active ingest, if `job_id` names it.
fn active<'a>(slot: &'a mut Option<Ingest>, job_id: &str) -> Result<&'a mut Ingest, Status> {
    match slot {
        Some(i) if i.id != job_id => Err(Status::failed_precondition(format!(
            "call belongs to job '{job_id}', this worker builds the blocks of job '{}'",
            i.id
        ))),
        Some(i) => {
            i.last_activity = Instant::now();
            Ok(i)
        }
        None => Err(Status::failed_precondition(format!(
            "no blocks are being built (call for job '{job_id}')"
        ))),
    }
}

/// Run `f` on the active ingest off the runtime.
async fn with_ingest<T: Send + 'static>(
    slot: &IngestSlot,
    job_id: &str,
    f: impl FnOnce(&mut Ingest) -> Result<T, crate::job::JobError> + Send + 'static,
) -> Result<T, Status> {
    let (slot, job_id) = (slot.clone(), job_id.to_owned());
    tokio::task::spawn_blocking(move || {
        let mut g = slot.blocking_lock();
        f(active(&mut g, &job_id)?).map_err(status)
    })
    .await
    .map_err(|e| Status::internal(format!("a step of building the blocks failed: {e}")))?
}

/// `path` if it lies under `root` (both resolved), else why not: out of
/// this worker's reach where it has no root or the path is outside it (the
/// coordinator may then read the input itself).
fn under_root(path: &str, root: Option<&Path>) -> Result<PathBuf, Status> {
    crate::paths::under_root(path, root, Reach::Input).map_err(|s| match s.code() {
        tonic::Code::FailedPrecondition | tonic::Code::PermissionDenied => als_proto::fault::input_out_of_reach(s),
        _ => s,
    })
}

/// The input at `path` has the size the coordinator sees (`spec`), where it
/// says: else this worker would read its share of another input than its
/// peers', and the blocks would mix the two.
fn same_input(path: &Path, spec: &InputSpec) -> Result<(), Status> {
    let (Some(bytes), Some(files)) = (spec.bytes, spec.files) else {
        return Ok(());
    };
    let (here_bytes, here_files) = als_core::data::input_size(path).map_err(|e| Status::invalid_argument(e.to_string()))?;
    if (here_bytes, here_files) != (bytes, files as usize) {
        return Err(als_proto::fault::refusal(Status::failed_precondition(format!(
            "input {} is {here_bytes} bytes in {here_files} file(s) on this worker, {bytes} bytes in {files} for the coordinator: \
             every worker must see the same input at the same path",
            spec.path
        ))));
    }
    Ok(())
}

/// One step of an ingest.
pub async fn step(
    slot: &IngestSlot,
    ended: &EndedJobs,
    peers: &Arc<Peers>,
    limits: IngestLimits<'_>,
    req: IngestRequest,
) -> Result<IngestResponse, Status> {
    let step = req.step.ok_or_else(|| Status::invalid_argument("an ingest call names no step"))?;
    let timeout = Duration::from_millis(req.peer_timeout_ms.max(1000) as u64);
    let job_id = req.job_id;
    let mut resp = IngestResponse::default();
    match step {
        Step::ReadShare(s) => {
            ended.refuse_ended(&job_id)?;
            let input = s.input.as_ref().ok_or_else(|| Status::invalid_argument("missing input"))?;
            let path = under_root(&input.path, limits.input_root)?;
            same_input(&path, input)?;
            let opts = load_options(input).map_err(status)?;
            let blocks = s.blocks as usize;
            if !(1..=als_core::data::ids::ID_BUCKETS).contains(&blocks) || s.share >= s.shares {
                return Err(Status::invalid_argument(format!(
                    "{} blocks, share {} of {}",
                    s.blocks, s.share, s.shares
                )));
            }
            let owners = (
                Owners::from_pb(s.user_owners.as_ref(), blocks).map_err(status)?,
                Owners::from_pb(s.item_owners.as_ref(), blocks).map_err(status)?,
            );
            let test = match &s.test_input {
                Some(t) => {
                    let p = under_root(&t.path, limits.input_root)?;
                    same_input(&p, t)?;
                    Some((p, load_options(t).map_err(status)?))
                }
                None => None,
            };
            let input = ShareToRead {
                path,
                opts,
                test,
                share: Share {
                    index: s.share as usize,
                    count: s.shares as usize,
                },
            };
            let (id, budget) = (job_id.clone(), limits.budget);
            let ingest = tokio::task::spawn_blocking(move || Ingest::read_share(id, budget, &input, blocks, owners, s.you))
                .await
                .map_err(|e| Status::internal(format!("reading the share failed: {e}")))?
                .map_err(status)?;
            (resp.rows, resp.skipped_lines, resp.min_value, resp.max_value, resp.test_rows) = ingest.share_summary();
            keep_read(&mut *slot.lock().await, ingest, ended, limits.idle)?;
            tracing::info!(job = %job_id, share = s.share, shares = s.shares, rows = resp.rows, "share read");
        }
        Step::RouteShare(r) => {
            let out = with_ingest(slot, &job_id, move |i| {
                i.route_share((r.first_place, r.test_first_place), r.input_rows, r.split.as_ref())
            })
            .await?;
            resp.peer_bytes = send_all(peers, out, timeout).await?;
        }
        Step::SelectKey(k) => {
            let (of, q) = key_question(&k)?;
            match with_ingest(slot, &job_id, move |i| i.select_key(of, q)).await? {
                KeyAnswer::Range(n, range) => {
                    resp.rows = n;
                    if let Some((lo, hi)) = range {
                        resp.keys = u128_bytes(&[lo, hi]).into();
                    }
                }
                KeyAnswer::Histogram(counts) => resp.counts = u64_bytes(&counts).into(),
                KeyAnswer::Keys(keys) => resp.keys = u128_bytes(&keys).into(),
            }
        }
        Step::HoldOutUsers(h) => resp.user_blocks = with_ingest(slot, &job_id, move |i| i.hold_out_users(h.split.as_ref())).await?,
        Step::GatherUsers(g) => resp.user_blocks = with_ingest(slot, &job_id, move |i| i.gather_users(g.split.as_ref())).await?,
        Step::NumberUsers(n) => {
            resp.user_blocks = with_ingest(slot, &job_id, move |i| i.number_users(n.numeric, n.held_out_numeric)).await?
        }
        Step::RouteItems(r) => {
            let duplicates = duplicate_policy(r.duplicates)?;
            let out = with_ingest(slot, &job_id, move |i| i.route_items(&r.user_starts, duplicates)).await?;
            resp.peer_bytes = send_all(peers, out, timeout).await?;
        }
        Step::GatherItems(_) => resp.item_blocks = with_ingest(slot, &job_id, |i| i.gather_items()).await?,
        Step::NumberItems(n) => resp.item_blocks = with_ingest(slot, &job_id, move |i| i.number_items(n.numeric)).await?,
        Step::Adopt(_) => return Err(Status::internal("adopting blocks is the worker service's step")),
        Step::DropBuilt(_) => {
            let mut g = slot.lock().await;
            if g.as_ref().is_some_and(|i| i.id == job_id) {
                *g = None;
                tracing::info!(job = %job_id, "blocks built and not taken dropped");
            }
        }
        Step::LookUpItems(_) => {
            let t0 = Instant::now();
            let asks = with_ingest(slot, &job_id, |i| i.finish_asks()).await?;
            let mut answers: FxHashMap<String, Option<u32>> = FxHashMap::default();
            for (block, addr, ids) in asks {
                for ids in by_bytes(ids, LOOKUP_BYTES) {
                    let local = {
                        let mut g = slot.lock().await;
                        let i = active(&mut g, &job_id)?;
                        i.builds_item_block(block)
                            .then(|| i.look_up(block, &ids))
                            .transpose()
                            .map_err(status)?
                    };
                    let rows = match local {
                        Some(rows) => rows,
                        None => lookup_remote(peers, &addr, &job_id, block, &ids, timeout).await?,
                    };
                    answers.extend(ids.into_iter().zip(rows));
                }
            }
            with_ingest(slot, &job_id, move |i| i.looked_up(answers)).await?;
            tracing::debug!(job = %job_id, seconds = t0.elapsed().as_secs_f64(), "items looked up");
        }
        Step::Describe(d) => {
            let side = als_proto::spec::side_from_pb(d.side).map_err(|e| Status::invalid_argument(format!("describe: {e}")))?;
            let users = side == als_core::side::Side::Users;
            let got = with_ingest(slot, &job_id, move |i| {
                i.describe(users, d.block, d.min_pos, (d.references, !d.without_ids))
            })
            .await?;
            resp.id_bytes = got.id_bytes.into();
            resp.id_line_bytes = got.id_line_bytes;
            resp.id_ends = got.id_ends.into();
            resp.needed = u32_bytes(&got.needed).into();
            resp.eval_users = got.eval_users;
        }
        Step::Finish(f) => {
            (resp.user_blocks, resp.item_blocks) = with_ingest(slot, &job_id, move |i| i.finish(&f.item_starts)).await?;
            tracing::info!(job = %job_id, user_blocks = resp.user_blocks.len(), item_blocks = resp.item_blocks.len(), "blocks built");
        }
    }
    Ok(resp)
}

/// How repeated pairs are merged, from the wire.
fn duplicate_policy(d: u32) -> Result<DuplicatePolicy, Status> {
    match d {
        0 => Ok(DuplicatePolicy::Last),
        1 => Ok(DuplicatePolicy::First),
        2 => Ok(DuplicatePolicy::Sum),
        d => Err(Status::invalid_argument(format!("unknown duplicate policy {d}"))),
    }
}

/// A selection's keys and question from the wire.
fn key_question(k: &SelectKeyStep) -> Result<(KeysOf, KeyQuestion), Status> {
    let of = match select_key_step::Keys::try_from(k.keys).map_err(|_| Status::invalid_argument(format!("unknown keys {}", k.keys)))? {
        select_key_step::Keys::Temporal => KeysOf::Temporal {
            first_place: k.first_place,
            input_rows: k.input_rows,
        },
        select_key_step::Keys::UserHoldout => KeysOf::UserHoldout { user_seed: k.user_seed },
    };
    let prefix = || key_of(&k.prefix).map_err(status);
    let ask = select_key_step::Ask::try_from(k.ask).map_err(|_| Status::invalid_argument(format!("unknown question {}", k.ask)))?;
    let q = match ask {
        select_key_step::Ask::Range => KeyQuestion::Range,
        select_key_step::Ask::Histogram => KeyQuestion::Histogram {
            prefix: prefix()?,
            shift: k.shift,
        },
        select_key_step::Ask::Gather => KeyQuestion::Gather {
            prefix: prefix()?,
            shift: k.shift,
        },
    };
    Ok((of, q))
}

/// `ids` in runs of about `bytes` bytes each.
fn by_bytes(ids: Vec<String>, bytes: usize) -> Vec<Vec<String>> {
    let mut runs: Vec<Vec<String>> = Vec::new();
    let mut size = usize::MAX;
    for id in ids {
        if size >= bytes {
            runs.push(Vec::new());
            size = 0;
        }
        size += id.len() + 4;
        runs.last_mut().expect("pushed").push(id);
    }
    runs
}

/// Send every stream of rows to its peer, all at once; the bytes sent.
async fn send_all(peers: &Arc<Peers>, out: Outgoing, timeout: Duration) -> Result<u64, Status> {
    let sends = out
        .into_iter()
        .filter(|(_, chunks)| !chunks.is_empty())
        .map(|(addr, chunks)| async move { peers.ingest_rows(&addr, chunks, timeout).await });
    Ok(futures::future::try_join_all(sends).await?.into_iter().sum())
}

/// Ask the owner of item block `block` for the rows of `ids`.
async fn lookup_remote(
    peers: &Peers,
    addr: &str,
    job_id: &str,
    block: u32,
    ids: &[String],
    timeout: Duration,
) -> Result<Vec<Option<u32>>, Status> {
    let mut id_bytes = Vec::new();
    let mut id_ends = Vec::with_capacity(ids.len());
    for id in ids {
        id_bytes.extend_from_slice(id.as_bytes());
        id_ends.push(id_bytes.len() as u32);
    }
    let req = LookupItemsRequest {
        job_id: job_id.to_owned(),
        block,
        id_bytes: id_bytes.into(),
        id_ends: u32_bytes(&id_ends).into(),
    };
    let resp = peers.lookup_items(addr, req, timeout).await?;
    let rows: Vec<u32> = pieces_vec("rows", &[&resp.rows]).map_err(|e| Status::invalid_argument(format!("peer {addr}: {e}")))?;
    if rows.len() != ids.len() {
        return Err(Status::invalid_argument(format!(
            "peer {addr} answered {} rows for {} items",
            rows.len(),
            ids.len()
        )));
    }
    Ok(rows.into_iter().map(|r| (r != u32::MAX).then_some(r)).collect())
}

/// A peer's stream of rows for one block: held up to what the budget has
/// left, then checked and kept.
pub async fn receive_rows(slot: &IngestSlot, mut stream: Streaming<IngestRowsChunk>) -> Result<(), Status> {
    let Some(first) = stream.message().await? else { return Ok(()) };
    let room = {
        let mut g = slot.lock().await;
        let i = active(&mut g, &first.job_id)?;
        i.room()
    };
    let over = || {
        als_proto::fault::job_failed(
            format!("rows of more than {room} bytes exceed what this worker's budget has left"),
            None,
        )
    };
    let mut bytes = prost::Message::encoded_len(&first) as u64;
    if bytes > room {
        return Err(over());
    }
    let mut chunks = vec![first];
    while let Some(c) = stream.message().await? {
        let f = &chunks[0];
        if (c.job_id.as_str(), c.to_items, c.block) != (f.job_id.as_str(), f.to_items, f.block) {
            return Err(Status::invalid_argument("a stream of rows must not change its job or block"));
        }
        bytes += prost::Message::encoded_len(&c) as u64;
        if bytes > room {
            return Err(over());
        }
        chunks.push(c);
    }
    let job_id = chunks[0].job_id.clone();
    with_ingest(slot, &job_id, move |i| i.receive(&chunks)).await
}

/// A peer's look-up of items in one of this worker's item blocks.
pub async fn look_up(slot: &IngestSlot, req: LookupItemsRequest) -> Result<LookupItemsResponse, Status> {
    let mut g = slot.lock().await;
    let i = active(&mut g, &req.job_id)?;
    let ids = decode_ids(&req.id_bytes, &req.id_ends, i.max_id_len()).map_err(Status::invalid_argument)?;
    let rows = i.look_up(req.block, &ids).map_err(status)?;
    let rows: Vec<u32> = rows.into_iter().map(|r| r.unwrap_or(u32::MAX)).collect();
    Ok(LookupItemsResponse {
        rows: u32_bytes(&rows).into(),
    })
}

/// Step 9: the finished blocks of job `job_id` become the started job's.
pub async fn adopt(slot: &IngestSlot, job: &Arc<Mutex<Option<Job>>>, job_id: &str, a: &AdoptStep) -> Result<IngestResponse, Status> {
    let ingest = {
        let mut g = slot.lock().await;
        active(&mut g, job_id)?;
        g.take().expect("active")
    };
    let job = job.clone();
    let (job_id, a) = (job_id.to_owned(), *a);
    tokio::task::spawn_blocking(move || {
        let mut g = job.blocking_lock();
        let j = match g.as_mut() {
            Some(j) if j.id == job_id => j,
            _ => {
                return Err(Status::failed_precondition(format!(
                    "blocks of job '{job_id}' adopted before the job started"
                )))
            }
        };
        let start = StartFactors {
            seed: a.seed,
            init_std: a.init_std,
            k: j.params.factors,
            biased: j.params.biased(),
        };
        let blocks = ingest.into_blocks(start).map_err(status)?;
        let n = blocks.len();
        for (side, data) in blocks {
            j.add_block(side, data).map_err(status)?;
        }
        tracing::info!(job = %job_id, blocks = n, "blocks built here adopted");
        Ok(IngestResponse::default())
    })
    .await
    .map_err(|e| Status::internal(format!("adopting the blocks failed: {e}")))?
}

/// Block `block` of `side` that this worker built for `job_id`, taken out
/// of the ingest for the job (`AssignBlock` with `ratings_built`: the
/// coordinator sends the rows' factors, or has them drawn with `start`, or
/// read; with `start.k` 0, none are drawn); the ingest goes once every
/// block it built is taken.
pub async fn take_built(slot: &IngestSlot, job_id: &str, side: Side, block: u32, start: StartFactors) -> Result<BlockData, Status> {
    let mut g = slot.lock().await;
    let ingest = active(&mut g, job_id)?;
    let data = ingest.take_block(side, block, start).map_err(status)?;
    if ingest.all_taken() {
        *g = None;
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn look_ups_go_in_runs_that_keep_every_id_once_in_order() {
        let ids: Vec<String> = (0..1000).map(|i| format!("{i:0>300}")).collect();
        let runs = by_bytes(ids.clone(), 64 << 10);
        assert!(runs.len() > 1 && runs.iter().all(|r| r.iter().map(|i| i.len() + 4).sum::<usize>() < (64 << 10) + 304));
        assert_eq!(runs.concat(), ids);
        assert!(by_bytes(Vec::new(), 10).is_empty());
    }

    #[test]
    fn a_worker_refuses_an_input_of_another_size_than_the_coordinators() {
        use als_proto::fault::{fault_of, Fault};
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("r.csv");
        std::fs::write(&file, "1,2,3\n4,5,6\n").unwrap();
        let spec = |bytes: Option<u64>, files: Option<u32>| InputSpec {
            path: file.to_str().unwrap().into(),
            bytes,
            files,
            ..Default::default()
        };
        assert!(same_input(&file, &spec(Some(12), Some(1))).is_ok());
        // Not told (an older coordinator): nothing to compare.
        assert!(same_input(&file, &spec(None, None)).is_ok());
        for (bytes, files) in [(13, 1), (12, 2)] {
            let e = same_input(&file, &spec(Some(bytes), Some(files))).unwrap_err();
            assert!(e.message().contains("every worker must see the same input"), "{}", e.message());
            // A refusal that ends the run, not one the coordinator reads the input instead for.
            assert_eq!(fault_of(&e), Fault::Job { row: None });
        }
    }

    #[test]
    fn a_worker_reads_only_under_its_input_root() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("r.csv"), "1,2,3\n").unwrap();
        std::fs::write(dir.path().join("secret.csv"), "1,2,3\n").unwrap();
        let inside = data.join("r.csv");
        assert_eq!(
            under_root(inside.to_str().unwrap(), Some(&data)).unwrap(),
            inside.canonicalize().unwrap()
        );
        // Outside, also by `..` and by a symbolic link.
        let up = data.join("../secret.csv");
        assert_eq!(
            under_root(up.to_str().unwrap(), Some(&data)).unwrap_err().code(),
            tonic::Code::PermissionDenied
        );
        std::os::unix::fs::symlink(dir.path().join("secret.csv"), data.join("link.csv")).unwrap();
        let link = data.join("link.csv");
        assert_eq!(
            under_root(link.to_str().unwrap(), Some(&data)).unwrap_err().code(),
            tonic::Code::PermissionDenied
        );
        let e = under_root(inside.to_str().unwrap(), None).unwrap_err();
        assert!(e.message().contains("--input-root"), "{}", e.message());
        // Both are out of its reach (the coordinator may read the input instead);
        // a file missing under the root is not.
        use als_proto::fault::{fault_of, Fault};
        assert_eq!(fault_of(&e), Fault::InputOutOfReach);
        assert_eq!(
            fault_of(&under_root(up.to_str().unwrap(), Some(&data)).unwrap_err()),
            Fault::InputOutOfReach
        );
        let missing = data.join("missing.csv");
        assert_ne!(
            fault_of(&under_root(missing.to_str().unwrap(), Some(&data)).unwrap_err()),
            Fault::InputOutOfReach
        );
    }
}
