//! Who trains and how to reach them: `--workers`, `--local`, `--in-process`,
//! the cluster token, TLS towards the workers and the failure timeout.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use clap::Args;

use super::parse;
use crate::training::{ExecutorChoice, WhoReads};

/// Seconds a worker may leave a health check unanswered, by default.
const DEFAULT_WORKER_TIMEOUT_SECS: f64 = 5.0;

#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Execution")]
pub struct ClusterArgs {
    /// Train on these workers (HOST:PORT, comma separated).
    #[arg(long, value_name = "ADDRS", value_delimiter = ',', num_args = 1.., conflicts_with_all = ["local", "in_process"])]
    pub workers: Option<Vec<String>>,
    /// Start N workers in this process on loopback.
    #[arg(long, value_name = "N", conflicts_with = "in_process")]
    pub local: Option<usize>,
    /// Train in this process without workers or gRPC.
    #[arg(long)]
    pub in_process: bool,
    /// File holding the cluster token (else the ALS_TOKEN environment variable).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// PEM CA that signs the workers' certificates: talk to --workers over TLS.
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// PEM certificate of this coordinator, for workers that require mutual TLS (with --tls-key).
    #[arg(long, value_name = "FILE", requires_all = ["tls_key", "tls_ca"])]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Name the workers' certificates are checked against (default: the host of each address).
    #[arg(long, value_name = "NAME", requires = "tls_ca")]
    pub tls_domain: Option<String>,
    /// The workers must read --data (and --test FILE) themselves, each a
    /// share of it, and build their blocks from it: no rating goes through
    /// the coordinator. The path must name the same file (or directory of
    /// part files) on every worker, under each one's --input-root. The
    /// coordinator reads none of it (a lost worker's blocks are built again
    /// by the others), except to fold held-out users in (--split users) or
    /// to save a model the workers could not write (no --output-root).
    /// Without this flag the workers read --data wherever they can (not
    /// with --split users), and where a worker cannot reach the file the
    /// coordinator loads it and ships the blocks, saying so.
    #[arg(long, conflicts_with = "input_here")]
    pub input_on_workers: bool,
    /// The coordinator loads --data itself and ships each worker its blocks.
    #[arg(long)]
    pub input_here: bool,
    /// Seconds a worker may leave a health check unanswered before its blocks move to the others.
    #[arg(long, default_value_t = DEFAULT_WORKER_TIMEOUT_SECS, value_name = "S", value_parser = parse::seconds)]
    pub worker_timeout: f64,
}

impl ClusterArgs {
    /// Who reads the input, as the flags say.
    pub fn who_reads(&self) -> WhoReads {
        match (self.input_on_workers, self.input_here) {
            (true, _) => WhoReads::Workers,
            (false, true) => WhoReads::Coordinator,
            (false, false) => WhoReads::Auto,
        }
    }

    /// Whether the flags name a cluster (`--workers` or `--local`).
    pub fn cluster_given(&self) -> bool {
        self.workers.is_some() || self.local.is_some()
    }

    /// The executor the flags ask for; `default` when they name none.
    pub fn executor_choice(&self, default: ExecutorChoice) -> anyhow::Result<ExecutorChoice> {
        let given = [self.in_process, self.workers.is_some(), self.local.is_some()]
            .iter()
            .filter(|&&b| b)
            .count();
        if given > 1 {
            bail!("--in-process, --workers and --local exclude each other; give at most one");
        }
        if self.in_process {
            return Ok(ExecutorChoice::InProcess);
        }
        if let Some(ws) = &self.workers {
            return Ok(ExecutorChoice::Workers(worker_addrs(ws)?));
        }
        match self.local {
            Some(0) => bail!("--local needs at least 1 worker"),
            Some(n) => Ok(ExecutorChoice::Local(n)),
            None => Ok(default),
        }
    }

    /// The cluster token: --token-file, else ALS_TOKEN (None when neither is set).
    pub fn token(&self) -> anyhow::Result<Option<String>> {
        Ok(als_proto::token::resolve_token_from_env(self.token_file.as_deref())?)
    }

    /// TLS towards the workers, when --tls-ca is given.
    pub fn tls(&self) -> anyhow::Result<Option<tonic::transport::ClientTlsConfig>> {
        let Some(ca) = &self.tls_ca else {
            return Ok(None);
        };
        let identity = self.tls_cert.as_deref().zip(self.tls_key.as_deref());
        Ok(Some(crate::cluster::client_tls(ca, identity, self.tls_domain.as_deref())?))
    }

    pub fn worker_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.worker_timeout)
    }
}

/// `--workers` entries: trimmed, each HOST:PORT, none empty or repeated.
fn worker_addrs(ws: &[String]) -> anyhow::Result<Vec<String>> {
    let addrs: Vec<String> = ws.iter().map(|w| w.trim().to_string()).collect();
    if addrs.is_empty() || addrs.iter().any(String::is_empty) {
        bail!("--workers needs a comma-separated list of HOST:PORT addresses without empty entries");
    }
    for a in &addrs {
        match a.rsplit_once(':') {
            Some((_, port)) if port.parse::<u16>().is_ok() => {}
            _ => bail!("--workers: '{a}' is not HOST:PORT"),
        }
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(d) = addrs.iter().find(|a| !seen.insert(a.as_str())) {
        bail!("--workers lists {d} twice");
    }
    Ok(addrs)
}
