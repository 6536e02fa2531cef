//! Reads torch.save's zip format in Rust. libtorch's own unpickler (the TorchScript one, which
//! tch uses) turns every `collections.OrderedDict` into None — and state dicts are
//! OrderedDicts — so OpenCLIP's `epoch_N.pt` cannot go through it. This is a small unpickler
//! for the opcodes torch.save emits (protocols 2–5), with `persistent_load` resolving storages
//! to the archive's `data/<key>` records and `_rebuild_tensor_v2` / `_rebuild_parameter`
//! building tensors. Unknown classes become opaque values rather than errors, so a checkpoint
//! with extra Python objects (an argparse Namespace, numpy scalars) still yields its tensors.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use tch::{Device, Kind, Tensor};

/// A Python value as far as this project needs one.
#[derive(Debug)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    List(Vec<Value>),
    Tuple(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    Tensor(Tensor),
    /// `module.name`, as pushed by GLOBAL.
    Global(String),
    /// A storage from `persistent_load`: its kind and archive key.
    Storage(Kind, String),
    /// An instance of a class this reader does not model.
    Object(String),
    Mark,
}

impl Clone for Value {
    fn clone(&self) -> Self {
        match self {
            Value::None => Value::None,
            Value::Bool(b) => Value::Bool(*b),
            Value::Int(i) => Value::Int(*i),
            Value::Float(f) => Value::Float(*f),
            Value::Str(s) => Value::Str(s.clone()),
            Value::Bytes(b) => Value::Bytes(b.clone()),
            Value::List(v) => Value::List(v.clone()),
            Value::Tuple(v) => Value::Tuple(v.clone()),
            Value::Dict(v) => Value::Dict(v.clone()),
            Value::Tensor(t) => Value::Tensor(t.shallow_clone()),
            Value::Global(g) => Value::Global(g.clone()),
            Value::Storage(k, s) => Value::Storage(*k, s.clone()),
            Value::Object(o) => Value::Object(o.clone()),
            Value::Mark => Value::Mark,
        }
    }
}

impl Value {
    /// The value under string key `key`, for a dict.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Dict(items) => items
                .iter()
                .find(|(k, _)| matches!(k, Value::Str(s) if s == key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    fn as_int(&self) -> Result<i64> {
        match self {
            Value::Int(i) => Ok(*i),
            v => bail!("expected an int, found {}", v.type_name()),
        }
    }

    fn as_ints(&self) -> Result<Vec<i64>> {
        match self {
            Value::Tuple(v) | Value::List(v) => v.iter().map(Value::as_int).collect(),
            v => bail!("expected a tuple of ints, found {}", v.type_name()),
        }
    }

    fn type_name(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::List(_) => "list",
            Value::Tuple(_) => "tuple",
            Value::Dict(_) => "dict",
            Value::Tensor(_) => "tensor",
            Value::Global(_) => "class",
            Value::Storage(..) => "storage",
            Value::Object(_) => "object",
            Value::Mark => "mark",
        }
    }
}

fn storage_kind(class: &str) -> Option<Kind> {
    Some(match class.strip_prefix("torch.")? {
        "FloatStorage" => Kind::Float,
        "DoubleStorage" => Kind::Double,
        "HalfStorage" => Kind::Half,
        "BFloat16Storage" => Kind::BFloat16,
        "LongStorage" => Kind::Int64,
        "IntStorage" => Kind::Int,
        "ShortStorage" => Kind::Int16,
        "CharStorage" => Kind::Int8,
        "ByteStorage" => Kind::Uint8,
        "BoolStorage" => Kind::Bool,
        _ => return None,
    })
}

/// A torch.save'd zip archive: its object tree with tensors materialised on the CPU.
pub fn load(path: &Path) -> Result<Value> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut zip = zip::ZipArchive::new(BufReader::new(file)).context("not a valid zip archive")?;
    let pkl_name = (0..zip.len())
        .filter_map(|i| zip.by_index(i).ok().map(|f| f.name().to_owned()))
        .find(|n| n.ends_with("/data.pkl") || n == "data.pkl")
        .ok_or_else(|| anyhow!("the archive has no data.pkl record"))?;
    let prefix = pkl_name.trim_end_matches("data.pkl").to_owned();
    if let Ok(mut f) = zip.by_name(&format!("{prefix}byteorder")) {
        let mut order = String::new();
        f.read_to_string(&mut order)?;
        if order.trim() != "little" {
            bail!("byte order {order:?} is not supported");
        }
    }
    let mut pkl = vec![];
    zip.by_name(&pkl_name)?
        .read_to_end(&mut pkl)
        .context("reading data.pkl")?;
    let mut storages: HashMap<String, Tensor> = HashMap::new();
    let mut load_storage = |kind: Kind, key: &str| -> Result<Tensor> {
        if let Some(t) = storages.get(key) {
            return Ok(t.shallow_clone());
        }
        let mut bytes = vec![];
        zip.by_name(&format!("{prefix}data/{key}"))
            .with_context(|| format!("storage record {key} is missing"))?
            .read_to_end(&mut bytes)
            .with_context(|| format!("reading storage record {key}"))?;
        let n = bytes.len() / kind.elt_size_in_bytes();
        let t = Tensor::f_from_data_size(&bytes, &[n as i64], kind)?;
        storages.insert(key.to_owned(), t.shallow_clone());
        Ok(t)
    };
    Unpickler {
        data: &pkl,
        pos: 0,
        stack: vec![],
        memo: HashMap::new(),
    }
    .run(&mut load_storage)
}

struct Unpickler<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    memo: HashMap<u32, Value>,
}

impl Unpickler<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        let end = end.ok_or_else(|| anyhow!("data.pkl ends in the middle of an opcode"))?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into()?))
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into()?))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into()?))
    }
    fn line(&mut self) -> Result<String> {
        let rest = &self.data[self.pos..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| anyhow!("unterminated line"))?;
        let s = String::from_utf8_lossy(&rest[..n]).into_owned();
        self.pos += n + 1;
        Ok(s)
    }
    fn string(&mut self, n: usize) -> Result<Value> {
        Ok(Value::Str(
            String::from_utf8_lossy(self.take(n)?).into_owned(),
        ))
    }
    fn pop(&mut self) -> Result<Value> {
        self.stack
            .pop()
            .ok_or_else(|| anyhow!("pickle stack underflow"))
    }
    fn top(&mut self) -> Result<&mut Value> {
        self.stack
            .last_mut()
            .ok_or_else(|| anyhow!("pickle stack underflow"))
    }
    /// Pops everything down to (and including) the last MARK.
    fn pop_mark(&mut self) -> Result<Vec<Value>> {
        let at = self
            .stack
            .iter()
            .rposition(|v| matches!(v, Value::Mark))
            .ok_or_else(|| anyhow!("pickle MARK missing"))?;
        let items = self.stack.split_off(at + 1);
        self.stack.pop();
        Ok(items)
    }
    fn memo_get(&mut self, i: u32) -> Result<()> {
        let v = self
            .memo
            .get(&i)
            .ok_or_else(|| anyhow!("pickle memo {i} missing"))?
            .clone();
        self.stack.push(v);
        Ok(())
    }
    fn memo_put(&mut self, i: u32) -> Result<()> {
        let v = self.top()?.clone();
        self.memo.insert(i, v);
        Ok(())
    }

    fn run(mut self, load_storage: &mut dyn FnMut(Kind, &str) -> Result<Tensor>) -> Result<Value> {
        loop {
            let op = self.u8()?;
            match op {
                0x80 => {
                    self.u8()?; // PROTO
                }
                0x95 => {
                    self.u64()?; // FRAME
                }
                b'.' => return self.pop(), // STOP
                b'N' => self.stack.push(Value::None),
                0x88 => self.stack.push(Value::Bool(true)),
                0x89 => self.stack.push(Value::Bool(false)),
                b'J' => {
                    let v = i32::from_le_bytes(self.take(4)?.try_into()?);
                    self.stack.push(Value::Int(v as i64))
                }
                b'K' => {
                    let v = self.u8()?;
                    self.stack.push(Value::Int(v as i64))
                }
                b'M' => {
                    let v = self.u16()?;
                    self.stack.push(Value::Int(v as i64))
                }
                0x8a => {
                    // LONG1: little-endian two's complement of n bytes.
                    let n = self.u8()? as usize;
                    let b = self.take(n)?;
                    if n > 8 {
                        bail!("integer of {n} bytes is too large");
                    }
                    let mut v: i64 = 0;
                    for (i, byte) in b.iter().enumerate() {
                        v |= (*byte as i64) << (8 * i);
                    }
                    if n > 0 && n < 8 && b[n - 1] & 0x80 != 0 {
                        v -= 1i64 << (8 * n);
                    }
                    self.stack.push(Value::Int(v))
                }
                b'G' => {
                    let v = f64::from_be_bytes(self.take(8)?.try_into()?);
                    self.stack.push(Value::Float(v))
                }
                b'X' => {
                    let n = self.u32()? as usize;
                    let v = self.string(n)?;
                    self.stack.push(v)
                }
                0x8c | b'U' => {
                    let n = self.u8()? as usize;
                    let v = self.string(n)?;
                    self.stack.push(v)
                }
                0x8d => {
                    let n = self.u64()? as usize;
                    let v = self.string(n)?;
                    self.stack.push(v)
                }
                b'T' => {
                    let n = self.u32()? as usize;
                    let v = self.string(n)?;
                    self.stack.push(v)
                }
                b'C' => {
                    let n = self.u8()? as usize;
                    let v = self.take(n)?.to_vec();
                    self.stack.push(Value::Bytes(v))
                }
                b'B' => {
                    let n = self.u32()? as usize;
                    let v = self.take(n)?.to_vec();
                    self.stack.push(Value::Bytes(v))
                }
                0x8e => {
                    let n = self.u64()? as usize;
                    let v = self.take(n)?.to_vec();
                    self.stack.push(Value::Bytes(v))
                }
                b'}' => self.stack.push(Value::Dict(vec![])),
                b']' => self.stack.push(Value::List(vec![])),
                b')' => self.stack.push(Value::Tuple(vec![])),
                0x8f => self.stack.push(Value::List(vec![])), // EMPTY_SET, as a list
                b'(' => self.stack.push(Value::Mark),
                b't' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::Tuple(items))
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    if self.stack.len() < n {
                        bail!("pickle stack underflow");
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.stack.push(Value::Tuple(items))
                }
                b'l' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::List(items))
                }
                b'd' => {
                    let items = self.pop_mark()?;
                    let v = pairs(items)?;
                    self.stack.push(Value::Dict(v))
                }
                b'a' => {
                    let v = self.pop()?;
                    match self.top()? {
                        Value::List(l) => l.push(v),
                        t => bail!("APPEND to {}", t.type_name()),
                    }
                }
                b'e' | 0x90 => {
                    let items = self.pop_mark()?;
                    match self.top()? {
                        Value::List(l) => l.extend(items),
                        t => bail!("APPENDS to {}", t.type_name()),
                    }
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    set_items(self.top()?, vec![(k, v)])?;
                }
                b'u' => {
                    let items = pairs(self.pop_mark()?)?;
                    set_items(self.top()?, items)?;
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.stack.push(Value::Global(format!("{module}.{name}")))
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (module, name) {
                        (Value::Str(m), Value::Str(n)) => {
                            self.stack.push(Value::Global(format!("{m}.{n}")))
                        }
                        _ => bail!("STACK_GLOBAL with non-string names"),
                    }
                }
                // BINPUT, LONG_BINPUT, MEMOIZE: the index in one byte, four, or the next free.
                b'q' | b'r' | 0x94 => {
                    let i = match op {
                        b'q' => self.u8()? as u32,
                        b'r' => self.u32()?,
                        _ => self.memo.len() as u32,
                    };
                    self.memo_put(i)?
                }
                // BINGET, LONG_BINGET: the index in one byte or four.
                b'h' | b'j' => {
                    let i = if op == b'h' {
                        self.u8()? as u32
                    } else {
                        self.u32()?
                    };
                    self.memo_get(i)?
                }
                b'Q' => {
                    // BINPERSID: ('storage', storage_type, key, location, numel)
                    let pid = self.pop()?;
                    let storage = match &pid {
                        Value::Tuple(t) if t.len() >= 3 => match (&t[1], &t[2]) {
                            (Value::Global(class), Value::Str(key)) => storage_kind(class)
                                .map(|k| Value::Storage(k, key.clone()))
                                .ok_or_else(|| anyhow!("unsupported storage type {class}"))?,
                            _ => bail!("unexpected persistent id {pid:?}"),
                        },
                        _ => bail!("unexpected persistent id {pid:?}"),
                    };
                    self.stack.push(storage)
                }
                b'R' => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let v = reduce(callable, args, load_storage)?;
                    self.stack.push(v)
                }
                0x81 | 0x92 => {
                    // NEWOBJ (class, args) / NEWOBJ_EX (class, args, kwargs): an opaque object
                    // named by its class.
                    if op == 0x92 {
                        self.pop()?; // kwargs
                    }
                    self.pop()?; // args
                    let class = self.pop()?;
                    self.stack.push(Value::Object(format!("{class:?}")))
                }
                b'b' => {
                    // BUILD: set the state of the object below. Dicts (an OrderedDict's
                    // `_metadata`) and opaque objects ignore it.
                    self.pop()?;
                }
                op => bail!(
                    "unsupported pickle opcode 0x{op:02x} at byte {}",
                    self.pos - 1
                ),
            }
        }
    }
}

fn pairs(items: Vec<Value>) -> Result<Vec<(Value, Value)>> {
    if !items.len().is_multiple_of(2) {
        bail!("odd number of dict items");
    }
    let mut it = items.into_iter();
    let mut out = vec![];
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    Ok(out)
}

fn set_items(target: &mut Value, items: Vec<(Value, Value)>) -> Result<()> {
    match target {
        Value::Dict(d) => {
            d.extend(items);
            Ok(())
        }
        // e.g. a defaultdict or a class instance built by items; not needed here.
        Value::Object(_) => Ok(()),
        t => bail!("SETITEM on {}", t.type_name()),
    }
}

fn reduce(
    callable: Value,
    args: Value,
    load_storage: &mut dyn FnMut(Kind, &str) -> Result<Tensor>,
) -> Result<Value> {
    let name = match &callable {
        Value::Global(g) => g.as_str(),
        _ => return Ok(Value::Object("reduced".into())),
    };
    let Value::Tuple(args) = args else {
        return Ok(Value::Object(name.to_owned()));
    };
    match name {
        "collections.OrderedDict" | "builtins.dict" => Ok(Value::Dict(vec![])),
        "torch._utils._rebuild_tensor_v2" | "torch._utils._rebuild_tensor" => {
            let (Some(Value::Storage(kind, key)), Some(offset), Some(size), Some(stride)) =
                (args.first(), args.get(1), args.get(2), args.get(3))
            else {
                bail!("malformed {name} arguments");
            };
            let storage = load_storage(*kind, key)?;
            let (offset, size, stride) = (offset.as_int()?, size.as_ints()?, stride.as_ints()?);
            let t = storage.f_as_strided(size.as_slice(), stride.as_slice(), offset)?;
            Ok(Value::Tensor(t.to_device(Device::Cpu)))
        }
        "torch._utils._rebuild_parameter" | "torch._utils._rebuild_parameter_with_state" => {
            match args.into_iter().next() {
                Some(v @ Value::Tensor(_)) => Ok(v),
                _ => bail!("malformed {name} arguments"),
            }
        }
        "builtins.set" | "builtins.frozenset" => Ok(args.into_iter().next().unwrap_or(Value::None)),
        _ => Ok(Value::Object(name.to_owned())),
    }
}
