//! The run directory `{logs}/{name}/` as OpenCLIP lays it out: the default name, `params.txt`,
//! and the log lines (`asctime | LEVEL | message`) that go to `out.log` and stderr.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context, Result};
use clip_dist::WorldInfo;
use serde_json::Value;

use crate::metrics::Progress;
use crate::params::Params;
use crate::pyfmt::repr_float;

/// `out.log` and stderr, in OpenCLIP's `asctime | LEVEL | message` format.
/// On ranks other than 0 (`rank` set) only warnings and errors are printed, with the rank.
pub struct Log {
    file: Option<std::fs::File>,
    progress: Progress,
    rank: Option<usize>,
}

impl Log {
    /// Rank 0's log: `out.log` (appended to, as a resumed run continues it) and stderr, with the
    /// progress bar on a terminal.
    pub fn to_file(path: &Path) -> Result<Log> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        Ok(Log {
            file: Some(file),
            progress: Progress::new(),
            rank: None,
        })
    }

    /// Another rank's log: warnings and errors on stderr, tagged with the rank.
    pub fn for_rank(rank: usize) -> Log {
        Log {
            file: None,
            progress: Progress::disabled(),
            rank: Some(rank),
        }
    }

    /// A second handle on the same log for a background thread (no progress bar).
    pub fn reopened(&self) -> Result<Log> {
        Ok(Log {
            file: self.file.as_ref().map(|f| f.try_clone()).transpose()?,
            progress: Progress::disabled(),
            rank: self.rank,
        })
    }

    pub fn progress(&mut self) -> &mut Progress {
        &mut self.progress
    }

    pub fn line(&mut self, level: Level, msg: &str) {
        if let Some(rank) = self.rank {
            if level != Level::Info {
                eprintln!("{} | rank {rank} | {} | {msg}", timestamp(), level.name());
            }
            return;
        }
        let line = format!("{} | {} | {msg}\n", timestamp(), level.name());
        self.progress.clear();
        eprint!("{line}");
        if let Some(f) = self.file.as_mut() {
            // One write per line: `out.log` is opened for appending, so lines from another
            // thread's handle (`reopened`) never interleave inside a line.
            let _ = f.write_all(line.as_bytes());
        }
    }
    pub fn info(&mut self, msg: &str) {
        self.line(Level::Info, msg)
    }
    pub fn warn(&mut self, msg: &str) {
        self.line(Level::Warning, msg)
    }
    pub fn error(&mut self, msg: &str) {
        self.line(Level::Error, msg)
    }
}

/// A log line's level, named as Python's logging names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Warning,
    Error,
}

impl Level {
    fn name(self) -> &'static str {
        match self {
            Level::Info => "INFO",
            Level::Warning => "WARNING",
            Level::Error => "ERROR",
        }
    }
}

/// Local wall-clock time as Python logging's `%Y-%m-%d,%H:%M:%S` (UTC here).
pub fn timestamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02},{:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// OpenCLIP's default run name: `{date}-model_{model}-lr_{lr}-b_{batch}-j_{workers}-p_{precision}`.
pub fn default_name(p: &Params) -> String {
    format!(
        "{}-model_{}-lr_{}-b_{}-j_{}-p_{}",
        timestamp()
            .replace('-', "_")
            .replace(',', "-")
            .replace(':', "_"),
        p.model.replace('/', "-"),
        repr_float(p.lr.unwrap_or(0.0)),
        p.batch_size,
        p.workers,
        p.precision
    )
}

/// The entries OpenCLIP derives into its `args` (paths, rank, world): in `params.txt` and in
/// wandb's run config.
pub fn derived_args(run_dir: &Path, world: &WorldInfo) -> Vec<(&'static str, Value)> {
    vec![
        (
            "checkpoint_path",
            run_dir.join("checkpoints").display().to_string().into(),
        ),
        ("distributed", (world.world_size > 1).into()),
        ("local_rank", world.local_rank.into()),
        (
            "log_path",
            run_dir.join("out.log").display().to_string().into(),
        ),
        ("rank", world.rank.into()),
        ("world_size", world.world_size.into()),
    ]
}

/// Writes `{run_dir}/params.txt`: the flags plus OpenCLIP's derived entries.
pub fn write_params_txt(run_dir: &Path, p: &Params, world: &WorldInfo) -> Result<()> {
    let text = params_txt(p, &derived_args(run_dir, world))?;
    let path = run_dir.join("params.txt");
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// OpenCLIP's `name: value` lines (Python's str of each value), sorted by name.
fn params_txt(p: &Params, extra: &[(&str, Value)]) -> Result<String> {
    fn py(v: &Value) -> String {
        match v {
            Value::Null => "None".into(),
            Value::Bool(b) => if *b { "True" } else { "False" }.into(),
            Value::Number(n) if n.is_f64() => repr_float(n.as_f64().unwrap_or(f64::NAN)),
            Value::Number(n) => n.to_string(),
            Value::String(s) => s.clone(),
            Value::Array(a) => {
                format!("[{}]", a.iter().map(py).collect::<Vec<_>>().join(", "))
            }
            Value::Object(o) => format!(
                "{{{}}}",
                o.iter()
                    .map(|(k, v)| format!("'{k}': {}", py(v)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
    let Value::Object(map) = serde_json::to_value(p)? else {
        bail!("params are not an object")
    };
    let mut lines: Vec<(String, String)> = map.iter().map(|(k, v)| (k.clone(), py(v))).collect();
    lines.extend(extra.iter().map(|(k, v)| (k.to_string(), py(v))));
    lines.sort();
    Ok(lines
        .into_iter()
        .map(|(k, v)| format!("{k}: {v}\n"))
        .collect())
}
