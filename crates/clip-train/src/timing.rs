//! `CLIP_TRAIN_TIME_STEPS=W:N`: N training steps timed by the wall clock after W untimed ones,
//! each end of the window waiting for the device first, so the window holds exactly the N
//! steps' work. `scripts/openclip-train.py` times OpenCLIP's steps the same way (its batch
//! W+1 taken … its batch W+N+1 asked for), so `scripts/gpu-check.sh` and
//! `scripts/bench-train.sh` compare like with like. When the window closes, one INFO line:
//!
//! `Timed steps: {"after":W,"steps":N,"seconds":…,"steps_per_s":…,"data_seconds":…,
//! "peak_allocated_mib":…,"peak_reserved_mib":…,"peak_rss_mib":…}`
//!
//! `data_seconds`: time spent inside the window waiting for batches (the loader's, as
//! OpenCLIP's `Data (t)`); the peaks: the CUDA caching allocator's since the process started
//! (`torch.cuda.max_memory_allocated` / `max_memory_reserved`), null on the CPU, and the
//! process's peak resident set.

use std::time::Instant;

use anyhow::{bail, Result};
use tch::Device;

/// W untimed steps, then N timed ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepWindow {
    pub after: i64,
    pub steps: i64,
}

impl StepWindow {
    /// `CLIP_TRAIN_TIME_STEPS`'s value `W:N` (W ≥ 1: the first step, which logs, is never
    /// timed; N ≥ 1); unset or empty: `None`.
    pub fn parse(v: Option<&str>) -> Result<Option<StepWindow>> {
        let Some(v) = v.filter(|v| !v.is_empty()) else {
            return Ok(None);
        };
        let parsed = v
            .split_once(':')
            .and_then(|(w, n)| Some((w.parse::<i64>().ok()?, n.parse::<i64>().ok()?)));
        match parsed {
            Some((after, steps)) if after >= 1 && steps >= 1 => {
                Ok(Some(StepWindow { after, steps }))
            }
            _ => bail!(
                "CLIP_TRAIN_TIME_STEPS={v}: expected W:N, W ≥ 1 untimed steps then N ≥ 1 timed"
            ),
        }
    }

    pub fn from_env() -> Result<Option<StepWindow>> {
        StepWindow::parse(std::env::var("CLIP_TRAIN_TIME_STEPS").ok().as_deref())
    }
}

/// The window's clock (see the module documentation).
pub struct StepTimer {
    window: StepWindow,
    device: Device,
    started: Option<Instant>,
    data_seconds: f64,
    done: bool,
}

impl StepTimer {
    pub fn new(window: StepWindow, device: Device) -> StepTimer {
        StepTimer {
            window,
            device,
            started: None,
            data_seconds: 0.0,
            done: false,
        }
    }

    /// Seconds spent waiting for batches: counted while the window is open.
    pub fn waited_for_data(&mut self, seconds: f64) {
        if self.started.is_some() {
            self.data_seconds += seconds;
        }
    }

    /// After the run's `steps_done`-th step: opens the window after step W, closes it after step
    /// W+N (both after waiting for the device) and returns the log line then.
    pub fn step_done(&mut self, steps_done: i64) -> Result<Option<String>> {
        let StepWindow { after, steps } = self.window;
        if self.done || (steps_done != after && steps_done != after + steps) {
            return Ok(None);
        }
        if let Device::Cuda(i) = self.device {
            tch::Cuda::synchronize(i as i64);
        }
        let Some(started) = self.started else {
            self.started = Some(Instant::now());
            return Ok(None);
        };
        let seconds = started.elapsed().as_secs_f64();
        self.done = true;
        let mib = |bytes: i64| bytes as f64 / (1024.0 * 1024.0);
        let peaks = match self.device {
            Device::Cuda(i) => Some(torch_ext::cuda_peak_memory(i)?),
            _ => None,
        };
        let line = serde_json::json!({
            "after": after,
            "steps": steps,
            "seconds": seconds,
            "steps_per_s": steps as f64 / seconds,
            "data_seconds": self.data_seconds,
            "peak_allocated_mib": peaks.map(|(a, _)| mib(a)),
            "peak_reserved_mib": peaks.map(|(_, r)| mib(r)),
            "peak_rss_mib": peak_rss_mib(),
        });
        Ok(Some(format!("Timed steps: {line}")))
    }
}

/// The process's peak resident set (VmHWM), in MiB.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_is_parsed_and_bad_values_refused_by_name() {
        assert_eq!(StepWindow::parse(None).unwrap(), None);
        assert_eq!(StepWindow::parse(Some("")).unwrap(), None);
        assert_eq!(
            StepWindow::parse(Some("5:20")).unwrap(),
            Some(StepWindow {
                after: 5,
                steps: 20
            })
        );
        for bad in ["5", "5:0", "0:3", "a:b"] {
            let e = StepWindow::parse(Some(bad)).unwrap_err().to_string();
            assert!(
                e.starts_with(&format!("CLIP_TRAIN_TIME_STEPS={bad}:")),
                "{e}"
            );
        }
    }

    /// Opens after step W, closes after step W+N with one line, then stays silent; batches
    /// waited for outside the window do not count.
    #[test]
    fn the_timer_reports_once_after_the_window() {
        let mut t = StepTimer::new(StepWindow { after: 1, steps: 2 }, Device::Cpu);
        t.waited_for_data(100.0);
        assert_eq!(t.step_done(1).unwrap(), None);
        t.waited_for_data(0.25);
        assert_eq!(t.step_done(2).unwrap(), None);
        let line = t.step_done(3).unwrap().unwrap();
        let json: serde_json::Value =
            serde_json::from_str(line.strip_prefix("Timed steps: ").unwrap()).unwrap();
        assert_eq!(
            (json["after"].as_i64(), json["steps"].as_i64()),
            (Some(1), Some(2))
        );
        assert_eq!(json["data_seconds"].as_f64(), Some(0.25));
        assert!(json["seconds"].as_f64().unwrap() > 0.0);
        assert!(json["peak_allocated_mib"].is_null());
        assert!(json["peak_rss_mib"].as_f64().unwrap() > 0.0);
        assert_eq!(t.step_done(3).unwrap(), None);
    }
}
