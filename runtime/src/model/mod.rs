//! The network built from the plan: its parameters, named as in the plan
//! (and as PyTorch's `state_dict` would name them), and its forward pass.

pub mod file;
mod load;
mod partial;
mod sequence;
mod shared_heads;
mod tensor;
mod vocab;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use dtl_compiler::plan::{Init, ModelPlan, Node, Op, ParamSpec, Precision};
use tch::{Device, Tensor};

use crate::error::{RunError, TorchContext};
use crate::ops::{self, Weights};
use crate::output::write_weights;
use dtl_compiler::util::rng::Rng;
use load::fits;
pub use load::InitWeights;
pub use partial::{LoadReport, Mapped, NameMap};
pub use tensor::TensorPart;

/// Where [`Model::forward_with`] calls its hook: around each node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edge {
    Before,
    After,
}

/// What runs before and after each node of a forward pass
/// ([`Model::forward_with`]).
pub type Around<'a> = dyn FnMut(usize, Edge) -> Result<(), RunError> + 'a;

pub struct Model {
    /// Trainable parameters in plan order.
    pub params: Vec<(String, Tensor)>,
    /// Parameters `freeze` keeps from training, in plan order: no
    /// gradient, no optimizer state, no all-reduce.
    pub frozen: Vec<(String, Tensor)>,
    /// Saved but not trained (batch_norm running statistics).
    pub buffers: Vec<(String, Tensor)>,
    index: BTreeMap<String, (Slot, usize)>,
    nodes: Vec<Node>,
    result: usize,
    /// Per node, the values let go once it has run ([`let_go_after`]).
    let_go: Vec<Vec<usize>>,
    /// The arithmetic of the forward pass.
    pub precision: Precision,
    /// Trainable parameters built without their values (`shard =
    /// parameters`): each is a placeholder of its shape until the shard
    /// units lay them out one unit at a time ([`fill_deferred`]). Loads
    /// and the hash pass them by.
    deferred: BTreeSet<String>,
    /// Under `tensor = T`: this rank's part of the split layers.
    tensor: Option<TensorPart>,
}

/// For each node, the values a forward pass lets go once it has run:
/// those it is the last (in execution order) to read, but `result`, the
/// model's output (a `let` after it may read it). Autograd keeps what
/// backward needs, and without a graph nothing more holds them.
fn let_go_after(nodes: &[Node], result: usize) -> Vec<Vec<usize>> {
    let mut last = vec![None; nodes.len()];
    for (j, node) in nodes.iter().enumerate() {
        for &i in &node.inputs {
            last[i] = Some(j);
        }
    }
    let mut after = vec![Vec::new(); nodes.len()];
    for (i, reader) in last.into_iter().enumerate() {
        if let Some(j) = reader.filter(|_| i != result) {
            after[j].push(i);
        }
    }
    after
}

/// Which of the model's lists holds a tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Param,
    Frozen,
    Buffer,
}

impl Weights for Model {
    fn weight(&self, name: &str) -> Tensor {
        match self.index[name] {
            (Slot::Param, i) => self.params[i].1.shallow_clone(),
            (Slot::Frozen, i) => self.frozen[i].1.shallow_clone(),
            (Slot::Buffer, i) => self.buffers[i].1.shallow_clone(),
        }
    }
}

/// A tensor with its initialiser's values, on `device`.
fn initial_tensor(spec: &ParamSpec, seed: u64, device: Device) -> Result<Tensor, RunError> {
    Tensor::from_slice(&initial_values(spec, seed)?)
        .f_reshape(spec.shape.as_slice())
        .and_then(|t| t.f_to_device(device))
        .context(|| format!("initialise `{}` {:?}", spec.name, spec.shape))
}

/// A parameter's stand-in until its values come: its shape over one value.
fn placeholder(spec: &ParamSpec, device: Device) -> Result<Tensor, RunError> {
    Tensor::f_zeros([1], (tch::Kind::Float, device))
        .and_then(|one| one.f_expand(spec.shape.as_slice(), false))
        .context(|| format!("lay out `{}` {:?}", spec.name, spec.shape))
}

/// Writes deferred parameter `name`'s values into `part` (its place in a
/// shard unit's flat buffer): from `saved` (its tensor in a checkpoint
/// read from `path`, `None` when the checkpoint lacks it) when given, else
/// its initialiser's, as [`Model::build_part`] would have made them.
pub fn fill_deferred(
    plan: &ModelPlan,
    seed: u64,
    name: &str,
    saved: Option<(Option<Tensor>, &Path)>,
    part: &mut Tensor,
) -> Result<(), RunError> {
    let values = match saved {
        Some((tensor, path)) => {
            let err = |message: String| RunError::Weights {
                path: path.display().to_string(),
                message,
            };
            let src = tensor.ok_or_else(|| err(format!("no tensor named `{name}`")))?;
            fits(name, &src, part, true, "").map_err(err)?;
            src
        }
        None => {
            let spec = plan
                .parameters
                .iter()
                .find(|s| s.name == name)
                .ok_or_else(|| RunError::Torch {
                    context: format!("initialise `{name}`"),
                    message: "not a parameter of the model".into(),
                })?;
            initial_tensor(spec, seed, part.device())?
        }
    };
    tch::no_grad(|| part.f_copy_(&values)).context(|| format!("lay out `{name}`"))?;
    Ok(())
}

/// The initial values of one tensor, drawn from its own seeded stream; a
/// tensor the machine cannot hold is an error naming it, not an abort.
fn initial_values(spec: &ParamSpec, seed: u64) -> Result<Vec<f32>, RunError> {
    let numel = spec.shape.iter().product::<i64>().max(0) as usize;
    let mut values = Vec::new();
    values
        .try_reserve_exact(numel)
        .map_err(|_| RunError::Allocation {
            tensor: format!("{} {:?}", spec.name, spec.shape),
            bytes: numel as u64 * 4,
        })?;
    let mut rng = Rng::for_name(seed, &spec.name);
    match spec.init {
        Init::Uniform { bound } => {
            values.extend((0..numel).map(|_| (bound * (2.0 * rng.next_f64() - 1.0)) as f32))
        }
        Init::Normal { std } => values.extend((0..numel).map(|_| (std * rng.next_normal()) as f32)),
        Init::Ones => values.resize(numel, 1.0),
        Init::Zeros => values.resize(numel, 0.0),
    }
    Ok(values)
}

impl Model {
    /// Creates every parameter and buffer with its initialiser. The values
    /// come from a generator seeded by `seed` and the tensor's name, not from
    /// libtorch's global generator: the same plan gives the same weights on
    /// every device, whatever else runs in the process, and adding a layer
    /// leaves the other layers' initial weights unchanged.
    pub fn build(plan: &ModelPlan, seed: u64, device: Device) -> Result<Model, RunError> {
        Model::build_nodes(plan, seed, device, 0..=plan.nodes.len().saturating_sub(1))
    }

    /// The part of the model a pipeline stage runs: only the parameters and
    /// buffers its nodes (`nodes`, of the plan's list) read, initialised as
    /// the whole model's would be (each tensor from its own seeded stream).
    pub fn build_nodes(
        plan: &ModelPlan,
        seed: u64,
        device: Device,
        nodes: std::ops::RangeInclusive<usize>,
    ) -> Result<Model, RunError> {
        Model::build_part(plan, seed, device, nodes, BTreeSet::new())
    }

    /// [`Model::build_nodes`], the trainable parameters named in
    /// `deferred` built as placeholders of their shape, which hold one
    /// value: their values come later, unit by unit.
    pub fn build_part(
        plan: &ModelPlan,
        seed: u64,
        device: Device,
        nodes: std::ops::RangeInclusive<usize>,
        deferred: BTreeSet<String>,
    ) -> Result<Model, RunError> {
        let used: BTreeSet<&str> = plan.nodes[nodes]
            .iter()
            .flat_map(|n| n.op.params().into_iter().chain(n.op.buffers()))
            .collect();
        let create = |spec: &ParamSpec| initial_tensor(spec, seed, device);
        let mut index = BTreeMap::new();
        let (mut params, mut frozen) = (Vec::new(), Vec::new());
        for spec in plan
            .parameters
            .iter()
            .filter(|s| used.contains(s.name.as_str()))
        {
            if spec.frozen {
                index.insert(spec.name.clone(), (Slot::Frozen, frozen.len()));
                frozen.push((spec.name.clone(), create(spec)?));
            } else {
                index.insert(spec.name.clone(), (Slot::Param, params.len()));
                let tensor = match deferred.contains(&spec.name) {
                    true => placeholder(spec, device)?,
                    false => create(spec)?,
                };
                params.push((spec.name.clone(), tensor.set_requires_grad(true)));
            }
        }
        let mut buffers = Vec::with_capacity(plan.buffers.len());
        for spec in plan
            .buffers
            .iter()
            .filter(|s| used.contains(s.name.as_str()))
        {
            index.insert(spec.name.clone(), (Slot::Buffer, buffers.len()));
            buffers.push((spec.name.clone(), create(spec)?));
        }
        Ok(Model {
            params,
            frozen,
            buffers,
            index,
            nodes: plan.nodes.clone(),
            result: plan.result,
            let_go: let_go_after(&plan.nodes, plan.result),
            precision: Precision::Fp32,
            deferred,
            tensor: None,
        })
    }

    /// Tensor `name` (a parameter, frozen or not, or a buffer), to replace.
    fn tensor_mut(&mut self, name: &str) -> Option<&mut Tensor> {
        let (slot, i) = *self.index.get(name)?;
        let list = match slot {
            Slot::Param => &mut self.params,
            Slot::Frozen => &mut self.frozen,
            Slot::Buffer => &mut self.buffers,
        };
        Some(&mut list[i].1)
    }

    /// The deferred parameters have their values: the shard units hold
    /// them now.
    pub fn filled(&mut self) {
        self.deferred.clear();
    }

    /// Runs the graph on a batch. `train` turns dropout on and makes
    /// batch_norm use and update batch statistics.
    pub fn forward(&self, input: &Tensor, train: bool) -> Result<Tensor, RunError> {
        self.forward_with(input, train, &mut |_, _| Ok(()), None)
    }

    /// Node `j`'s output from `inputs` (its op, and under `tensor = T` the
    /// sum of a partial output over `tensor`, the tensor group).
    pub fn run_node(
        &self,
        j: usize,
        inputs: &[&Tensor],
        train: bool,
        tensor: Option<&dyn crate::comm::Communicator>,
        ctx: impl Fn() -> String,
    ) -> Result<Tensor, RunError> {
        let node = &self.nodes[j];
        let Some(part) = &self.tensor else {
            return ops::forward(&node.op, inputs, self, train, self.precision, ctx);
        };
        if let Op::Dropout { p } = node.op {
            if let Some(y) = part.dropout(j, inputs[0], p, train) {
                return y.context(ctx);
            }
        }
        let y = match self.vocab_embedding(part, j, inputs[0]) {
            Some(y) => y.context(&ctx)?,
            None => ops::forward(&node.op, inputs, self, train, self.precision, &ctx)?,
        };
        part.finish(j, y, self, tensor)
    }

    /// [`Model::forward`], calling `around(j, Edge::Before)` before node
    /// `j` and `around(j, Edge::After)` after it (`shard = parameters`
    /// gathers and frees its units there), split layers summed over
    /// `tensor`.
    pub fn forward_with(
        &self,
        input: &Tensor,
        train: bool,
        around: &mut Around<'_>,
        tensor: Option<&dyn crate::comm::Communicator>,
    ) -> Result<Tensor, RunError> {
        let mut values: Vec<Option<Tensor>> = Vec::with_capacity(self.nodes.len());
        for (j, node) in self.nodes.iter().enumerate() {
            around(j, Edge::Before)?;
            let inputs: Vec<&Tensor> = if node.inputs.is_empty() {
                vec![input]
            } else {
                let value = |i: usize| values[i].as_ref().expect("read before its last reader");
                node.inputs.iter().map(|&i| value(i)).collect()
            };
            let shapes: Vec<Vec<i64>> = inputs.iter().map(|t| t.size()).collect();
            let ctx = || {
                format!(
                    "layer `{}` ({:?}) on input {:?}",
                    node.name,
                    node.op.kind(),
                    shapes
                )
            };
            let output = self.run_node(j, &inputs, train, tensor, ctx)?;
            for &i in self.let_go(j) {
                values[i] = None;
            }
            values.push(Some(output));
            around(j, Edge::After)?;
        }
        Ok(values.swap_remove(self.result).expect("the result is kept"))
    }

    /// Whether `name` is a parameter this model trains (not frozen, not a
    /// buffer).
    pub fn trains(&self, name: &str) -> bool {
        matches!(self.index.get(name), Some((Slot::Param, _)))
    }

    /// The values a forward pass lets go once node `j` has run: those it
    /// is the last to read, but the model's output.
    pub fn let_go(&self, j: usize) -> &[usize] {
        &self.let_go[j]
    }

    /// The plan's nodes, in execution order.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The node whose output is the model's.
    pub fn result(&self) -> usize {
        self.result
    }

    pub fn tensors(&self) -> impl Iterator<Item = &Tensor> + Clone {
        self.params.iter().map(|(_, t)| t)
    }

    /// Converts every parameter and buffer to `kind` (float64 for
    /// gradient checks); parameters stay trainable.
    pub fn to_kind(&mut self, kind: tch::Kind) -> Result<(), RunError> {
        for (name, t) in &mut self.params {
            *t = t
                .f_to_kind(kind)
                .context(|| format!("convert `{name}`"))?
                .detach()
                .set_requires_grad(true);
        }
        for (name, t) in self.frozen.iter_mut().chain(&mut self.buffers) {
            *t = t.f_to_kind(kind).context(|| format!("convert `{name}`"))?;
        }
        Ok(())
    }

    /// A hash (FNV-1a) of every parameter's and buffer's bytes, in order:
    /// equal on two replicas exactly when their weights are bitwise equal.
    /// Deferred parameters are left out: [`fill_deferred`]'s caller
    /// hashes them as they are laid out.
    pub fn hash(&self) -> Result<u64, RunError> {
        let built = self.all().filter(|(n, _)| !self.deferred.contains(n));
        hash_of(built.map(|(n, t)| (n.clone(), t.shallow_clone())))
    }

    /// The parameters' and buffers' tensors (sharing storage), for
    /// averaging over replicas.
    pub fn state_tensors(&self) -> Vec<Tensor> {
        self.all().map(|(_, t)| t.shallow_clone()).collect()
    }

    /// Every tensor with its name: the parameters, the frozen ones, the
    /// buffers.
    pub fn all(&self) -> impl Iterator<Item = &(String, Tensor)> {
        self.params.iter().chain(&self.frozen).chain(&self.buffers)
    }

    /// [`Model::all`] but the deferred parameters (placeholders), to load
    /// in place: each tensor with whether it is real-valued (a parameter,
    /// frozen or not; not a buffer).
    fn all_mut(&mut self) -> impl Iterator<Item = (bool, &mut (String, Tensor))> {
        let deferred = &self.deferred;
        let real = self.params.iter_mut().chain(self.frozen.iter_mut());
        real.map(|t| (true, t))
            .chain(self.buffers.iter_mut().map(|t| (false, t)))
            .filter(move |(_, (name, _))| !deferred.contains(name))
    }

    pub fn zero_grad(&mut self) {
        for (_, t) in &mut self.params {
            t.zero_grad();
        }
    }

    /// Writes the parameters and buffers as safetensors, atomically (temp
    /// file + rename).
    pub fn save(&self, path: &Path) -> Result<(), RunError> {
        write_weights(path, &self.named())
    }

    /// The parameters and buffers by name (sharing storage).
    pub fn named(&self) -> Vec<(String, Tensor)> {
        self.all()
            .map(|(n, t)| (n.clone(), t.shallow_clone()))
            .collect()
    }
}

/// A hash (FNV-1a) of the tensors' values in float32, in order, fed one
/// chunk at a time: no copy of the whole model is made.
pub fn hash_of(tensors: impl Iterator<Item = (String, Tensor)>) -> Result<u64, RunError> {
    const CHUNK: i64 = 1 << 20;
    let mut hash = dtl_compiler::util::rng::Fnv1a::new();
    for (name, t) in tensors {
        let ctx = || format!("hash `{name}`");
        let flat = t.f_detach().and_then(|t| t.f_reshape([-1])).context(ctx)?;
        let n = flat.numel() as i64;
        for start in (0..n).step_by(CHUNK as usize) {
            let values = flat
                .f_narrow(0, start, CHUNK.min(n - start))
                .and_then(|t| t.f_to_device(Device::Cpu))
                .and_then(|t| t.f_to_kind(tch::Kind::Float))
                .context(ctx)?;
            let values = Vec::<f32>::try_from(&values).context(ctx)?;
            let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            hash = hash.update(&bytes);
        }
    }
    Ok(hash.finish())
}
