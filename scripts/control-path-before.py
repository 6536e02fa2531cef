# Turns a checkout of commit 1af4a92 (see scripts/bench-control-path.sh) back into 7342318's control path, for the "before"
# table of docs/scaling.md: byte collectives and agreements through the store (SET + W-1 GETs per
# rank), a flight entry published on every numbered call, a heartbeat per step, the watchdog reading
# every rank's status, evaluation tensors / divergence verdict / zero-shot counts as bytes through
# the store. The ring TCP backend stays (7342318's full mesh cannot open 256 ranks in one process).
import sys, re
root = sys.argv[1]
def edit(path, pairs):
    p = f"{root}/{path}"; s = open(p).read()
    for a, b in pairs:
        assert s.count(a) == 1, (path, a[:80])
        s = s.replace(a, b)
    open(p, "w").write(s)

old_bytes = '''    fn broadcast_bytes(&self, bytes: &[u8], root: usize) -> Result<Vec<u8>> {
        self.check_root(root)?;
        let Some(store) = self.store() else {
            return Ok(bytes.to_vec());
        };
        let n = self.byte_calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let prefix = format!("bytes/{n}");
        let what = format!("broadcast_bytes from rank {root}");
        self.recorded(what, true, || {
            if self.rank == root {
                store.set(&format!("{prefix}/{}", self.rank), bytes)?;
                return Ok(bytes.to_vec());
            }
            store.take(&format!("{prefix}/{root}"), self.world - 1)
        })
    }

    fn all_gather_bytes(&self, bytes: &[u8]) -> Result<Vec<Vec<u8>>> {
        let Some(store) = self.store() else {
            return Ok(vec![bytes.to_vec()]);
        };
        let n = self.byte_calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let prefix = format!("bytes/{n}");
        self.recorded("all_gather_bytes".into(), true, || {
            store.set(&format!("{prefix}/{}", self.rank), bytes)?;
            (0..self.world)
                .map(|p| match p == self.rank {
                    true => Ok(bytes.to_vec()),
                    false => store.take(&format!("{prefix}/{p}"), self.world - 1),
                })
                .collect()
        })
    }

    fn gather_bytes(&self, bytes: &[u8]) -> Result<Vec<Vec<u8>>> {
        self.all_gather_bytes(bytes)
    }

    fn any_of(&self, flags: &[bool]) -> Result<Vec<bool>> {
        let mine: Vec<u8> = flags.iter().map(|&f| u8::from(f)).collect();
        let mut out = flags.to_vec();
        for theirs in self.all_gather_bytes(&mine)? {
            for (o, t) in out.iter_mut().zip(theirs) {
                *o |= t != 0;
            }
        }
        Ok(out)
    }
}
'''
p = f"{root}/crates/clip-dist/src/group.rs"; s = open(p).read()
a = s.index("    fn broadcast_bytes(&self, bytes: &[u8], root: usize) -> Result<Vec<u8>> {")
b = s.index("/// The job's culprit once a link broke")
s = s[:a] + old_bytes + "\n" + s[b:]
s = s.replace("    recorder: Arc<Recorder>,\n}", "    recorder: Arc<Recorder>,\n    byte_calls: std::sync::atomic::AtomicU64,\n}", 1)
s = s.replace("            tree,\n            recorder,\n        }", "            tree,\n            recorder,\n            byte_calls: Default::default(),\n        }", 1)
open(p, "w").write(s)

edit("crates/clip-dist/src/lib.rs", [(
'''        let now = self.started.elapsed().as_millis() as u64;
        let last = self.last_beat.load(Ordering::Relaxed);
        if last != 0 && now < last + self.beat_every.as_millis() as u64 {
            return Ok(());
        }
        self.last_beat.store(now.max(1), Ordering::Relaxed);
        store.heartbeat(step)''', "        store.heartbeat(step)")])

edit("crates/clip-dist/src/watchdog.rs", [(
'''        match self.monitor.verdict(self.timeout) {
            Ok(Some(problem)) => {
                let hung = matches!(problem, Error::PeerHung { .. });
                self.end(&problem.to_string(), hung);
            }
            Ok(None) => {}''', '''        match self.monitor.status() {
            Ok(status) => {
                if let Some(problem) = crate::store::verdict(&status, self.timeout) {
                    let hung = matches!(problem, Error::PeerHung { .. });
                    self.end(&problem.to_string(), hung);
                }
            }''')])

# The divergence verdict, evaluation tensors and zero-shot counts as bytes through the store.
edit("crates/clip-train/src/ddp.rs", [(
'''    let device = parts.first().map_or(Device::Cpu, |t| t.device());
    let rows: Vec<i64> = parts.iter().map(|t| t.size()[0]).collect();''', '''    let device = parts.first().map_or(Device::Cpu, |t| t.device());
    if device == Device::Cpu {
        // An empty tensor travels as one zero row (torch-sys cannot write zero bytes).
        let named: Vec<(String, Tensor)> = parts.iter().enumerate().map(|(i, t)| {
            let mut shape = t.size();
            let rows = shape[0];
            shape[0] = 1;
            let t = if rows == 0 { t.new_zeros(shape.as_slice(), (t.kind(), t.device())) } else { t.shallow_clone() };
            (format!("{i}_{rows}"), t)
        }).collect();
        let mut bytes = Vec::new();
        Tensor::save_multi_to_stream(&named, &mut bytes)?;
        return comm.all_gather_bytes(&bytes)?.into_iter().map(|b| {
            let mut named: Vec<(usize, i64, Tensor)> = Tensor::load_multi_from_stream(std::io::Cursor::new(b))?.into_iter().map(|(k, t)| {
                let (i, rows) = k.split_once('_').unwrap();
                (i.parse().unwrap(), rows.parse().unwrap(), t)
            }).collect();
            named.sort_by_key(|(i, _, _)| *i);
            Ok(named.into_iter().map(|(_, rows, t)| t.narrow(0, 0, rows)).collect())
        }).collect();
    }
    let rows: Vec<i64> = parts.iter().map(|t| t.size()[0]).collect();''')])
edit("crates/clip-train/src/divergence.rs", [(
'''        let all = match comm.world_size() {
            1 => mine,
            _ => comm.all_gather(&mine)?,
        };
        let all: Vec<f64> = Vec::try_from(&all.to_device(Device::Cpu))?;''', '''        let mine: Vec<f64> = Vec::try_from(&mine.to_device(Device::Cpu))?;
        let bytes: Vec<u8> = mine.iter().flat_map(|v| v.to_le_bytes()).collect();
        let all: Vec<f64> = comm.all_gather_bytes(&bytes)?.concat().chunks(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect();''')])
edit("crates/clip-train/src/zeroshot.rs", [(
'''    let all = match comm.world_size() {
        1 => Tensor::from_slice(&mine),
        _ => comm.all_gather(&Tensor::from_slice(&mine).to(device))?,
    };
    let all: Vec<i64> = Vec::try_from(&all.to(Device::Cpu))?;''', '''    let _ = device;
    let bytes: Vec<u8> = mine.iter().flat_map(|v| v.to_le_bytes()).collect();
    let all: Vec<i64> = comm.all_gather_bytes(&bytes)?.concat().chunks(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect();''')])
print("before: patched", root)
