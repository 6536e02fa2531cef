#!/usr/bin/env python3
"""OpenCLIP's own trainer (`python -m open_clip_train.main ARGS`) with the project's tiny test
model registered, for side-by-side runs (scripts/bench-train.sh, scripts/gpu-check.sh).

CLIP_TRAIN_TIME_STEPS=W:N times OpenCLIP's steps as clip-train times its own
(crates/clip-train/src/timing.rs): the wall clock from the end of step W to the end of step W+N,
each end after a device sync — here the moments the training loop asks for batch W+1 and for
batch W+N+1 (with `--accum-freq 1`; give it W+N+1 steps, so that the last step's log, which
reads the loss, falls after the window, as clip-train's does); `data_seconds`:
the time inside the window spent waiting for batches; the peaks: the CUDA caching allocator's
(`torch.cuda.max_memory_allocated` / `max_memory_reserved`), null on the CPU, and the peak RSS.
One line `Timed steps: {json}` goes to OpenCLIP's log (out.log) when the window closes."""
import json
import logging
import os
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import openclip_tiny  # noqa: E402,F401  (the tiny test models)

import torch  # noqa: E402
import open_clip_train.main as openclip_main  # noqa: E402


class TimedLoader:
    """A training dataloader whose iteration opens and closes the timed window."""

    def __init__(self, loader, after, steps):
        self.loader, self.after, self.steps = loader, after, steps

    def __getattr__(self, name):
        return getattr(self.loader, name)

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        sync = torch.cuda.synchronize if torch.cuda.is_initialized() else (lambda: None)
        it, asked, started, data = iter(self.loader), 0, None, 0.0
        while True:
            asked += 1
            if asked == self.after + 1:
                sync()
                started, data = time.perf_counter(), 0.0
            elif asked == self.after + self.steps + 1 and started is not None:
                sync()
                self._report(time.perf_counter() - started, data)
                started = None
            t = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                return
            if started is not None:
                data += time.perf_counter() - t
            yield batch

    def _report(self, seconds, data):
        mib = 1024 * 1024
        cuda = torch.cuda.is_initialized()
        line = {
            "after": self.after, "steps": self.steps, "seconds": seconds,
            "steps_per_s": self.steps / seconds, "data_seconds": data,
            "peak_allocated_mib": torch.cuda.max_memory_allocated() / mib if cuda else None,
            "peak_reserved_mib": torch.cuda.max_memory_reserved() / mib if cuda else None,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }
        logging.info("Timed steps: %s", json.dumps(line, separators=(",", ":")))


window = os.environ.get("CLIP_TRAIN_TIME_STEPS")
if window:
    after, steps = (int(x) for x in window.split(":"))
    train_one_epoch = openclip_main.train_one_epoch

    def timed_epoch(model, data, *args, **kwargs):
        plain = data["train"].dataloader
        data["train"].dataloader = TimedLoader(plain, after, steps)
        try:
            return train_one_epoch(model, data, *args, **kwargs)
        finally:
            data["train"].dataloader = plain

    openclip_main.train_one_epoch = timed_epoch

openclip_main.main(sys.argv[1:])
