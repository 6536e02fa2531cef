# clip-train's wandb sink (embedded in the binary, run as `python -c`): rank 0 feeds it JSON
# lines on stdin and it makes OpenCLIP's calls with the official SDK, so the runs, files and
# pages are wandb's own.
#
#   {"init": {wandb.init kwargs}, "save": [paths]}  -> wandb.init, wandb.save; replies one line
#   {"log": {data}, "step": N or null}              -> wandb.log(data, step=N)
#   {"finish": exit_code}                           -> wandb.finish(exit_code), exit 0
#
# End of input without "finish" means the trainer died: the run is finished as failed (1).
import json
import os
import signal
import sys
import traceback

# Replies go to the real stdout; anything else printed there (wandb's own messages) goes to
# stderr, so the reply line cannot be mixed with them.
reply = os.fdopen(os.dup(1), "w")
os.dup2(2, 1)
# The trainer decides when the run ends (it sends "finish", or its death closes our stdin): a
# preemption signal or Ctrl-C meant for the trainer must not end the wandb run first.
for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):
    signal.signal(sig, signal.SIG_IGN)

import wandb  # noqa: E402  (after the redirection: importing may print)


def main():
    exit_code = 1
    for line in sys.stdin:
        msg = json.loads(line)
        if "init" in msg:
            try:
                run = wandb.init(**msg["init"])
                for path in msg.get("save", []):
                    wandb.save(path)
            except Exception as e:  # reported to the trainer, which stops the run
                reply.write(json.dumps({"error": f"{type(e).__name__}: {e}"}) + "\n")
                reply.flush()
                return 1
            # The run's folder (what `wandb sync` takes), above its files/.
            run_dir = os.path.dirname(run.dir)
            reply.write(json.dumps({"id": run.id, "dir": run_dir}) + "\n")
            reply.flush()
        elif "log" in msg:
            wandb.log(msg["log"], step=msg["step"])
        elif "finish" in msg:
            exit_code = msg["finish"]
            break
    wandb.finish(exit_code=exit_code)
    return 0


try:
    sys.exit(main())
except Exception:
    # A failed wandb.log: say why on stderr; the trainer sees this process gone and logs it.
    traceback.print_exc()
    sys.exit(1)
