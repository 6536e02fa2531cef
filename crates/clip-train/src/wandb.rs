//! `--report-to wandb`: OpenCLIP's wandb calls — `wandb.init` (project, name and id = the run
//! name, notes, config = the flags), `wandb.save(params.txt)`, `wandb.log` at OpenCLIP's steps,
//! `wandb.finish` — made by the official SDK in a Python child of rank 0 (`wandb_sink.py`,
//! embedded), fed JSON lines on its stdin. Users get their usual wandb runs and pages; the SDK's
//! settings (`WANDB_MODE`, `WANDB_DIR`, the API key, …) reach it through the environment, and its
//! files go where OpenCLIP's go (`./wandb` under the working directory unless `WANDB_DIR`).

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};

use anyhow::{bail, Context, Result};
use clip_dist::WorldInfo;
use serde_json::{json, Map, Value};

use crate::params::Params;
use crate::plan::{Reporting, TrainPlan};
use crate::val::ValData;

const SINK: &str = include_str!("wandb_sink.py");

/// The interpreter's environment variable: a Python with the wandb package (else `python3`).
pub const PYTHON_ENV: &str = "CLIP_TRAIN_PYTHON";

/// What `wandb.init` gets, checked by [`WandbPlan::new`].
#[derive(Debug, Clone)]
pub struct WandbPlan {
    python: OsString,
    project: String,
    notes: String,
    /// `resume='auto'`: `--resume latest` continues the run of the same id.
    resume: bool,
}

impl WandbPlan {
    /// Picks the interpreter and makes sure it imports wandb, so a missing package is a usage
    /// error before anything is written rather than a failure after the run directory exists.
    pub fn new(p: &Params) -> Result<WandbPlan> {
        let python = std::env::var_os(PYTHON_ENV).unwrap_or_else(|| "python3".into());
        let shown = Path::new(&python).display().to_string();
        let out = Command::new(&python)
            .args(["-c", "import wandb"])
            .stdin(Stdio::null())
            .output()
            .with_context(|| {
                format!("--report-to wandb runs the wandb SDK in Python: cannot run {shown} (set {PYTHON_ENV} to a Python with wandb)")
            })?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let why = err.lines().last().unwrap_or("import failed").trim();
            bail!("--report-to wandb: {shown} cannot import wandb ({why}): pip install wandb, or set {PYTHON_ENV} to a Python that has it");
        }
        Ok(WandbPlan {
            python,
            project: p.wandb_project_name.clone(),
            notes: p.wandb_notes.clone(),
            resume: p.resume.as_deref() == Some("latest"),
        })
    }
}

/// The running wandb run (rank 0): the sink process and its input.
pub struct WandbRun {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl WandbRun {
    /// Starts the sink and waits for `wandb.init` (and `wandb.save(params_file)`) to finish:
    /// an init failure (no API key online, a bad project) stops the run here, as it stops
    /// OpenCLIP's. Returns the run and its directory.
    pub fn start(
        plan: &WandbPlan,
        name: &str,
        config: Value,
        params_file: &Path,
    ) -> Result<(WandbRun, String)> {
        let mut child = Command::new(&plan.python)
            .args(["-u", "-c", SINK])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            // Its own process group: Ctrl-C or a signal sent to the trainer's group does not end
            // the wandb run before the trainer finishes it.
            .process_group(0)
            .spawn()
            .context("cannot start the wandb process")?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let mut run = WandbRun { child, stdin };
        // OpenCLIP 3.3.0 compares `args.resume == "latest"` after replacing it with the
        // checkpoint's path, so it never passes 'auto'; this does what it means to.
        let init = json!({
            "init": {
                "project": plan.project,
                "name": name,
                "id": name,
                "notes": plan.notes,
                "tags": [],
                "resume": plan.resume.then_some("auto"),
                "config": config,
            },
            "save": [params_file],
        });
        run.send(&init).context("cannot start the wandb run")?;
        let mut line = String::new();
        if let Some(out) = stdout {
            BufReader::new(out).read_line(&mut line)?;
        }
        let reply: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        match (&reply["dir"], &reply["error"]) {
            (Value::String(dir), _) => Ok((run, dir.clone())),
            (_, Value::String(e)) => bail!("wandb.init failed: {e}"),
            _ => bail!("wandb.init failed: the wandb process ended (its messages are above)"),
        }
    }

    /// `wandb.log(data, step=step)`. An error means the process is gone (its traceback is on
    /// stderr); the caller reports it and stops logging to wandb.
    pub fn log(&mut self, data: Map<String, Value>, step: Option<i64>) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("the wandb process exited ({status})");
        }
        self.send(&json!({"log": data, "step": step}))
    }

    /// `wandb.finish(exit_code=…)`, waiting for the process (wandb writes or uploads what is
    /// left).
    pub fn finish(mut self, exit_code: i32) -> Result<()> {
        let sent = self.send(&json!({ "finish": exit_code }));
        self.stdin = None;
        let status = self.child.wait()?;
        sent?;
        if !status.success() {
            bail!("the wandb process exited ({status})");
        }
        Ok(())
    }

    fn send(&mut self, msg: &Value) -> Result<()> {
        let stdin = self.stdin.as_mut().context("wandb's input is closed")?;
        writeln!(stdin, "{msg}").context("the wandb process is gone")?;
        stdin.flush().context("the wandb process is gone")
    }
}

impl Drop for WandbRun {
    /// A run that ends without [`WandbRun::finish`] (an error) closes the sink's input: wandb
    /// finishes the run as failed. Waits so the run's files are complete when the trainer exits.
    fn drop(&mut self) {
        self.stdin = None;
        let _ = self.child.wait();
    }
}

/// OpenCLIP's `config=vars(args)`: the flags as `--print-params` dumps them (`params`: the run's
/// name filled in), the entries OpenCLIP derives (`params.txt`'s), which reporters are on, and
/// the data sizes (`train_sz`, `val_sz`).
pub fn run_config(
    params: &Params,
    run_dir: &Path,
    world: &WorldInfo,
    report: &Reporting,
    train: Option<&TrainPlan>,
    val: Option<&ValData>,
) -> Result<Value> {
    let Value::Object(mut map) = serde_json::to_value(params)? else {
        bail!("params are not an object");
    };
    for (k, v) in crate::rundir::derived_args(run_dir, world) {
        map.insert(k.into(), v);
    }
    map.insert("wandb".into(), report.wandb.is_some().into());
    map.insert("tensorboard".into(), report.tensorboard.into());
    if let Some(t) = train {
        map.insert("train_sz".into(), t.data.samples_per_epoch.into());
    }
    if let Some(v) = val {
        map.insert("val_sz".into(), v.num_samples.into());
    }
    Ok(Value::Object(map))
}
