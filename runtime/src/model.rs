//! The network built from the plan: its parameters, named as in the plan
//! (and as PyTorch's `state_dict` would name them), and its forward pass.

use std::collections::BTreeMap;
use std::path::Path;

use dtl_compiler::plan::{Init, ModelPlan, Node, Op};
use tch::{Device, Tensor};

use crate::error::{RunError, TorchContext};
use crate::rng::Rng;

pub struct Model {
    /// Parameters in plan order.
    pub params: Vec<(String, Tensor)>,
    index: BTreeMap<String, usize>,
    nodes: Vec<Node>,
}

impl Model {
    /// Creates every parameter with its initialiser. The values come from a
    /// generator seeded by `seed` and the parameter's name, not from
    /// libtorch's global generator: the same plan gives the same weights on
    /// every device, whatever else runs in the process, and adding a layer
    /// leaves the other layers' initial weights unchanged.
    pub fn build(plan: &ModelPlan, seed: u64, device: Device) -> Result<Model, RunError> {
        let mut params = Vec::with_capacity(plan.parameters.len());
        let mut index = BTreeMap::new();
        for spec in &plan.parameters {
            let ctx = || format!("initialise `{}` {:?}", spec.name, spec.shape);
            let numel: i64 = spec.shape.iter().product();
            let values: Vec<f32> = match spec.init {
                Init::Uniform { bound } => {
                    let mut rng = Rng::for_name(seed, &spec.name);
                    (0..numel)
                        .map(|_| (bound * (2.0 * rng.next_f64() - 1.0)) as f32)
                        .collect()
                }
                Init::Ones => vec![1.0; numel as usize],
                Init::Zeros => vec![0.0; numel as usize],
            };
            let tensor = Tensor::from_slice(&values)
                .f_reshape(spec.shape.as_slice())
                .and_then(|t| t.f_to_device(device))
                .context(ctx)?;
            index.insert(spec.name.clone(), params.len());
            params.push((spec.name.clone(), tensor.set_requires_grad(true)));
        }
        Ok(Model {
            params,
            index,
            nodes: plan.nodes.clone(),
        })
    }

    fn param(&self, name: &str) -> &Tensor {
        &self.params[self.index[name]].1
    }

    /// Runs the nodes in order. `train` turns dropout on.
    pub fn forward(&self, input: &Tensor, train: bool) -> Result<Tensor, RunError> {
        let mut x = input.shallow_clone();
        for node in &self.nodes {
            let ctx = || {
                format!(
                    "layer `{}` ({}) on input {:?}",
                    node.name,
                    op_name(&node.op),
                    x.size()
                )
            };
            x = match &node.op {
                Op::Linear { weight, bias, .. } => x
                    .f_linear(self.param(weight), bias.as_deref().map(|b| self.param(b)))
                    .context(ctx)?,
                Op::LayerNorm {
                    dim,
                    eps,
                    weight,
                    bias,
                } => x
                    .f_layer_norm(
                        [*dim].as_slice(),
                        Some(self.param(weight)),
                        Some(self.param(bias)),
                        *eps,
                        true,
                    )
                    .context(ctx)?,
                Op::Dropout { p } => x.f_dropout(*p, train).context(ctx)?,
                Op::Flatten => x.f_flatten(1, -1).context(ctx)?,
                Op::Relu => x.f_relu().context(ctx)?,
                Op::Gelu => x.f_gelu("none").context(ctx)?,
                Op::Silu => x.f_silu().context(ctx)?,
                Op::Tanh => x.f_tanh().context(ctx)?,
                Op::Sigmoid => x.f_sigmoid().context(ctx)?,
            };
        }
        Ok(x)
    }

    pub fn tensors(&self) -> impl Iterator<Item = &Tensor> + Clone {
        self.params.iter().map(|(_, t)| t)
    }

    pub fn zero_grad(&mut self) {
        for (_, t) in &mut self.params {
            t.zero_grad();
        }
    }

    /// Writes the weights as safetensors, atomically (temp file + rename).
    pub fn save(&self, path: &Path) -> Result<(), RunError> {
        let tmp = path.with_extension("safetensors.tmp");
        let named: Vec<(&str, Tensor)> = self
            .params
            .iter()
            .map(|(n, t)| (n.as_str(), t.detach().to_device(Device::Cpu)))
            .collect();
        Tensor::write_safetensors(&named, &tmp).context(|| format!("write {}", tmp.display()))?;
        std::fs::rename(&tmp, path).map_err(|e| RunError::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        })
    }

    /// Loads weights written by [`Model::save`] or by PyTorch's safetensors;
    /// every parameter must be present with its shape.
    pub fn load(&mut self, path: &Path) -> Result<(), RunError> {
        let err = |message: String| RunError::Data {
            path: path.display().to_string(),
            message,
        };
        let tensors = Tensor::read_safetensors(path).map_err(|e| err(e.to_string()))?;
        let by_name: BTreeMap<String, Tensor> = tensors.into_iter().collect();
        for (name, param) in &mut self.params {
            let Some(src) = by_name.get(name) else {
                return Err(err(format!("no tensor named `{name}`")));
            };
            if src.size() != param.size() {
                return Err(err(format!(
                    "`{name}` has shape {:?}, the model needs {:?}",
                    src.size(),
                    param.size()
                )));
            }
            tch::no_grad(|| param.f_copy_(src)).context(|| format!("load `{name}`"))?;
        }
        Ok(())
    }
}

fn op_name(op: &Op) -> &'static str {
    match op {
        Op::Linear { .. } => "linear",
        Op::LayerNorm { .. } => "layer_norm",
        Op::Dropout { .. } => "dropout",
        Op::Flatten => "flatten",
        Op::Relu => "relu",
        Op::Gelu => "gelu",
        Op::Silu => "silu",
        Op::Tanh => "tanh",
        Op::Sigmoid => "sigmoid",
    }
}
