//! Who this process is in the job, read from the environment exactly as OpenCLIP's
//! `open_clip_train/distributed.py` does, so torchrun, slurm, MPI and PMI launchers all work
//! unchanged.

use crate::error::{Error, Result};
use std::time::Duration;

/// Local rank variables, first set wins (`world_info_from_env`).
pub const LOCAL_RANK_VARS: [&str; 4] = [
    "LOCAL_RANK",
    "MPI_LOCALRANKID",
    "SLURM_LOCALID",
    "OMPI_COMM_WORLD_LOCAL_RANK",
];
/// Global rank variables, first set wins.
pub const RANK_VARS: [&str; 4] = ["RANK", "PMI_RANK", "SLURM_PROCID", "OMPI_COMM_WORLD_RANK"];
/// World size variables, first set wins.
pub const WORLD_SIZE_VARS: [&str; 4] = [
    "WORLD_SIZE",
    "PMI_SIZE",
    "SLURM_NTASKS",
    "OMPI_COMM_WORLD_SIZE",
];

/// This process's place in the job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorldInfo {
    pub rank: usize,
    pub local_rank: usize,
    pub world_size: usize,
}

impl WorldInfo {
    /// A single process (no launcher).
    pub fn single() -> Self {
        WorldInfo {
            rank: 0,
            local_rank: 0,
            world_size: 1,
        }
    }

    /// Reads the process environment (see [`WorldInfo::from_lookup`]).
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// OpenCLIP's `world_info_from_env` over any variable lookup (tests pass a map instead of
    /// touching the process environment). Defaults: local rank 0, rank 0, world size 1. A set
    /// variable that is not a number is an error naming it (OpenCLIP would raise `ValueError`).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let first = |vars: &[&str], default: usize| -> Result<usize> {
            for var in vars {
                if let Some(value) = lookup(var) {
                    return parse_usize(var, &value);
                }
            }
            Ok(default)
        };
        let info = WorldInfo {
            local_rank: first(&LOCAL_RANK_VARS, 0)?,
            rank: first(&RANK_VARS, 0)?,
            world_size: first(&WORLD_SIZE_VARS, 1)?,
        };
        if info.world_size == 0 {
            return Err(Error::Config(
                "the world size from the environment is 0".into(),
            ));
        }
        if info.rank >= info.world_size {
            return Err(Error::Config(format!(
                "rank {} is not below the world size {} (check RANK / WORLD_SIZE or their slurm/MPI equivalents)",
                info.rank,
                info.world_size
            )));
        }
        Ok(info)
    }
}

fn parse_usize(var: &str, value: &str) -> Result<usize> {
    value.trim().parse().map_err(|e| {
        Error::Config(format!(
            "{var}={value:?} is not a non-negative integer: {e}"
        ))
    })
}

/// OpenCLIP's `is_using_distributed`: `WORLD_SIZE > 1` if WORLD_SIZE is set, else
/// `SLURM_NTASKS > 1` if that is set, else false. (PMI/OMPI alone mean horovod to OpenCLIP.)
pub fn is_using_distributed() -> Result<bool> {
    is_using_distributed_with(|name| std::env::var(name).ok())
}

/// [`is_using_distributed`] over any variable lookup.
pub fn is_using_distributed_with(lookup: impl Fn(&str) -> Option<String>) -> Result<bool> {
    for var in ["WORLD_SIZE", "SLURM_NTASKS"] {
        if let Some(value) = lookup(var) {
            return Ok(parse_usize(var, &value)? > 1);
        }
    }
    Ok(false)
}

/// `--dist-url`: `env://` (OpenCLIP's default) means "use MASTER_ADDR / MASTER_PORT" and gives
/// `None`; `tcp://host:port` gives the address of rank 0's store.
pub fn parse_dist_url(url: &str) -> Result<Option<(String, u16)>> {
    if url == "env://" {
        return Ok(None);
    }
    let bad = |why: String| Error::Config(format!("--dist-url {url:?}{why}"));
    let Some(rest) = url.strip_prefix("tcp://") else {
        return Err(bad(": only env:// and tcp://HOST:PORT are supported".into()));
    };
    let rest = rest.trim_end_matches('/');
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| bad(" has no port (tcp://HOST:PORT)".into()))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(bad(" has no host (tcp://HOST:PORT)".into()));
    }
    let port =
        parse_port(port).map_err(|e| bad(format!(": {port:?} is not a port number: {e}")))?;
    Ok(Some((host.to_string(), port)))
}

/// Rank 0's store address: from `--dist-url tcp://…` when given, else `MASTER_ADDR` and
/// `MASTER_PORT` (what torchrun sets; a slurm script exports them).
pub fn master_from_env(
    dist_url: Option<&str>,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<(String, u16)> {
    if let Some(addr) = dist_url.map(parse_dist_url).transpose()?.flatten() {
        return Ok(addr);
    }
    let var = |name: &str| {
        lookup(name).ok_or_else(|| {
            Error::Config(format!(
                "{name} is not set (needed with --dist-url env:// and more than one process)"
            ))
        })
    };
    let addr = var("MASTER_ADDR")?;
    let port = var("MASTER_PORT")?;
    let port = parse_port(port.trim())
        .map_err(|e| Error::Config(format!("MASTER_PORT={port:?} is not a port number: {e}")))?;
    Ok((addr, port))
}

/// A TCP port rank 0 can listen on: 0 (any free port) cannot be what the other ranks connect to.
fn parse_port(s: &str) -> std::result::Result<u16, String> {
    match s.parse::<u16>() {
        Ok(0) => Err("port 0 cannot be shared with the other ranks".into()),
        Ok(p) => Ok(p),
        Err(e) => Err(e.to_string()),
    }
}

/// The variable the trainer reads for every distributed timeout (seconds).
pub const TIMEOUT_VAR: &str = "CLIP_DIST_TIMEOUT";
/// Default for [`TIMEOUT_VAR`]: torch's default process-group timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

/// `CLIP_DIST_TIMEOUT` seconds (fractions allowed), default 1800.
pub fn timeout_from_env(lookup: impl Fn(&str) -> Option<String>) -> Result<Duration> {
    match lookup(TIMEOUT_VAR) {
        None => Ok(DEFAULT_TIMEOUT),
        Some(value) => {
            let secs: f64 = value
                .trim()
                .parse()
                .ok()
                .filter(|s: &f64| s.is_finite() && *s > 0.0)
                .ok_or_else(|| {
                    Error::Config(format!(
                        "{TIMEOUT_VAR}={value:?} is not a positive number of seconds"
                    ))
                })?;
            Ok(Duration::from_secs_f64(secs))
        }
    }
}

/// "30s", "1.5s": durations in messages.
pub(crate) fn fmt_secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{}s", s as u64)
    } else {
        format!("{s:.1}s")
    }
}
