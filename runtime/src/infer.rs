//! Using a trained model without training it: its metrics on the held-out
//! rows or on another file (`dtl eval`), its outputs for rows of features
//! (`dtl predict`), and text from a next-token model (`dtl generate`, with
//! a cache of keys and values). One process; the weights file holds the
//! whole model whatever the layout it was trained with.

use std::collections::BTreeSet;
use std::path::Path;

use dtl_compiler::dataset::{self, FeatureRows};
use dtl_compiler::plan::{DataSource, Dim, Loss, Op, Plan, TextEncoding};
use dtl_compiler::records::EvalRecord;
use tch::{Device, Kind, Tensor};

use crate::data::{self, Dataset};
use crate::error::{RunError, TorchContext};
use crate::metrics::{over_rows, Measure};
use crate::model::Model;
use crate::ops::{self, KvCache};

/// The plan's model with the weights of `path` (every parameter and buffer
/// by name, as `model.safetensors` holds them).
pub fn load_model(plan: &Plan, path: &Path, device: Device) -> Result<Model, RunError> {
    let mut model = Model::build(&plan.model, plan.train.seed, device)?;
    model.precision = plan.train.precision;
    model.load(path)?;
    Ok(model)
}

/// The plan's model with its `init` weights (the `train` block's), loaded
/// as training would load them (`skip`, `rename`, `transpose`), what was
/// loaded said on standard error.
pub fn initial_model(plan: &Plan, device: Device) -> Result<Model, RunError> {
    let train = &plan.train;
    let Some(path) = &train.init else {
        return Err(RunError::Weights {
            path: String::new(),
            message: "the plan has no `init` weights".into(),
        });
    };
    let path = Path::new(path);
    let mut model = Model::build(&plan.model, train.seed, device)?;
    model.precision = train.precision;
    if let (_, Some(report)) = model.load_init(train, path, &BTreeSet::new())? {
        eprintln!("{}", report.summary(path));
    }
    Ok(model)
}

/// The loss and the plan's metrics of `model` on the rows the plan holds
/// out, or on every row of `other` (files in the plan's data format).
pub fn evaluate(
    plan: &Plan,
    model: &Model,
    other: Option<&[String]>,
) -> Result<EvalRecord, RunError> {
    let rows = match other {
        None => data::load(&plan.data, plan.train.seed)?.valid,
        Some(files) => every_row_of(plan, files)?,
    };
    if rows.rows == 0 {
        return Err(RunError::Data {
            path: plan.data.source.path().to_string(),
            message:
                "no rows to evaluate: the plan holds none out (`valid`); give a file with --data"
                    .into(),
        });
    }
    let measure = Measure::new(plan);
    let device = model_device(model);
    let mut forward = |x: &Tensor| model.forward(x, false).map(Some);
    let values = over_rows(
        "evaluation",
        &measure,
        (&rows, 0, rows.rows),
        &plan.model.output,
        device,
        &mut forward,
        &|| {},
    )?;
    Ok(measure.record(0, rows.rows, &values, ""))
}

/// Every row of `files`, read as the plan reads its own data (the same
/// format, columns, targets and `scale`).
fn every_row_of(plan: &Plan, files: &[String]) -> Result<Dataset, RunError> {
    let mut other = plan.data.clone();
    let slots = other.source.files_mut();
    let format = match &plan.data.source {
        DataSource::Text { .. } | DataSource::Tokens { .. } | DataSource::Synthetic { .. } => None,
        source => Some(source.files().len()),
    };
    if format != Some(files.len()) {
        let wanted = match format {
            Some(1) => "one file".to_string(),
            Some(n) => format!("{n} files, in the order of the data block's source"),
            None => {
                return Err(RunError::Data {
                    path: files.join(", "),
                    message: "another file is evaluated for table sources (csv, npy, idx, safetensors); a text or token model is evaluated on its own held-out windows".into(),
                })
            }
        };
        return Err(RunError::Data {
            path: files.join(", "),
            message: format!("the plan's data source reads {wanted}"),
        });
    }
    for (slot, file) in slots.into_iter().zip(files) {
        *slot = file.clone();
    }
    // Not the files the plan was made with: nothing to compare them to.
    other.files.clear();
    data::load_every_row(&other)
}

fn model_device(model: &Model) -> Device {
    model
        .params
        .first()
        .map_or(Device::Cpu, |(_, t)| t.device())
}

/// The rows of `path` as the model's input: `[N, *input]`, times the
/// data block's `scale`, normalised by its `mean` and `std`.
pub fn read_inputs(plan: &Plan, path: &Path) -> Result<Tensor, RunError> {
    let rows: FeatureRows =
        dataset::feature_rows(path, &dataset::Limits::unbounded()).map_err(|e| RunError::Data {
            path: e.path,
            message: e.message,
        })?;
    let per_row: i64 = plan.data.sample_shape.iter().product();
    let given: i64 = rows.row_shape.iter().product();
    if given != per_row {
        return Err(RunError::Data {
            path: path.display().to_string(),
            message: format!(
                "rows of {given} values ({:?}), the model reads {per_row} ({:?}){}",
                rows.row_shape,
                plan.data.sample_shape,
                if given == per_row + 1 {
                    ": leave the label column out"
                } else {
                    ""
                }
            ),
        });
    }
    let mut shape = vec![rows.rows as i64];
    shape.extend(&plan.data.sample_shape);
    let x = Tensor::from_slice(&rows.values)
        .f_mul_scalar(plan.data.scale)
        .and_then(|t| t.f_to_kind(Kind::Float))
        .and_then(|t| t.f_reshape(shape.as_slice()))
        .context(|| format!("read {}", path.display()))?;
    // As every sample is on its way to the model: `mean` and `std`.
    crate::augment::Transforms::new(&plan.data.augment, 0).normalize(x)
}

/// One row's prediction: the model's output, and for class scores the
/// class and the probabilities (softmax of the scores, exp of
/// log-probabilities); for multi-label logits the probabilities (sigmoid).
pub fn predict(
    plan: &Plan,
    model: &Model,
    inputs: &Tensor,
) -> Result<Vec<serde_json::Value>, RunError> {
    let ctx = || "predict".to_string();
    let device = model_device(model);
    let chunk = crate::metrics::chunk_rows(&plan.model.output);
    let rows = inputs.size()[0] as usize;
    let mut out = Vec::with_capacity(rows);
    tch::no_grad(|| -> Result<(), RunError> {
        let mut start = 0;
        while start < rows {
            let len = chunk.min(rows - start);
            let x = inputs
                .f_narrow(0, start as i64, len as i64)
                .and_then(|x| x.f_to_device(device))
                .context(ctx)?;
            let y = model
                .forward(&x, false)?
                .f_to_kind(Kind::Double)
                .context(ctx)?;
            let probabilities = match plan.train.loss {
                Loss::CrossEntropy { .. } => Some(y.f_softmax(-1, None::<Kind>).context(ctx)?),
                Loss::Nll => Some(y.f_exp().context(ctx)?),
                Loss::BinaryCrossEntropy { .. } => Some(y.f_sigmoid().context(ctx)?),
                Loss::Mse | Loss::SmoothL1 { .. } | Loss::Huber { .. } => None,
            };
            let classes = matches!(plan.train.loss, Loss::CrossEntropy { .. } | Loss::Nll);
            for i in 0..len as i64 {
                let row = |t: &Tensor| -> Result<Vec<f64>, RunError> {
                    let r = t.f_get(i).and_then(|r| r.f_reshape([-1])).context(ctx)?;
                    Vec::<f64>::try_from(r).context(ctx)
                };
                let mut line = serde_json::Map::new();
                line.insert("row".into(), (start as i64 + i).into());
                let output = row(&y)?;
                if let Some(p) = &probabilities {
                    let p = row(p)?;
                    if classes && plan.data.target_shape.is_empty() {
                        let best = argmax(&output);
                        line.insert("class".into(), best.into());
                    }
                    line.insert("probabilities".into(), p.into());
                }
                line.insert("output".into(), output.into());
                out.push(serde_json::Value::Object(line));
            }
            start += len;
        }
        Ok(())
    })?;
    Ok(out)
}

fn argmax(values: &[f64]) -> usize {
    let mut best = 0;
    for (i, v) in values.iter().enumerate() {
        if *v > values[best] {
            best = i;
        }
    }
    best
}

/// How `generate` picks each token: greedily (`temperature` 0), or by
/// sampling the scores divided by `temperature`, among the `top_k` best
/// when given, from a generator seeded with `seed`.
#[derive(Debug, Clone, Copy)]
pub struct Sampling {
    pub tokens: usize,
    pub temperature: f64,
    pub top_k: Option<i64>,
    pub seed: i64,
}

/// The tokens of a text model: characters (the training file's distinct
/// characters, in code-point order) or bytes. Token files have none: their
/// ids are given and printed as numbers.
pub enum Vocabulary {
    Chars(Vec<char>),
    Bytes,
    Ids { size: i64 },
}

impl Vocabulary {
    /// The vocabulary the plan's model was trained with.
    pub fn of(plan: &Plan) -> Result<Vocabulary, RunError> {
        match &plan.data.source {
            DataSource::Text {
                path,
                encoding: TextEncoding::Chars,
                ..
            } => {
                let text = std::fs::read_to_string(path).map_err(|e| RunError::Data {
                    path: path.clone(),
                    message: format!(
                        "the characters of the training text make the vocabulary: {e}"
                    ),
                })?;
                let mut chars: Vec<char> = text.chars().collect();
                chars.sort_unstable();
                chars.dedup();
                Ok(Vocabulary::Chars(chars))
            }
            DataSource::Text { .. } => Ok(Vocabulary::Bytes),
            DataSource::Tokens { .. } => Ok(Vocabulary::Ids {
                size: plan.data.classes,
            }),
            other => Err(RunError::Data {
                path: other.path().to_string(),
                message:
                    "generate continues text: the model must be trained on a text or token file"
                        .into(),
            }),
        }
    }

    /// A prompt's token ids: its characters or bytes, or for token files
    /// a list of ids (`464, 3290, 318`).
    pub fn encode(&self, prompt: &str) -> Result<Vec<i64>, String> {
        match self {
            Vocabulary::Bytes => Ok(prompt.bytes().map(i64::from).collect()),
            Vocabulary::Chars(chars) => prompt
                .chars()
                .map(|c| {
                    chars
                        .binary_search(&c)
                        .map(|i| i as i64)
                        .map_err(|_| format!("{c:?} is not in the training text's characters"))
                })
                .collect(),
            Vocabulary::Ids { size } => prompt
                .split([',', ' '])
                .filter(|s| !s.is_empty())
                .map(|s| match s.trim().parse::<i64>() {
                    Ok(id) if (0..*size).contains(&id) => Ok(id),
                    _ => Err(format!(
                        "{s:?} is not a token id below {size}: a token model's prompt is its ids, e.g. \"464,3290\""
                    )),
                })
                .collect(),
        }
    }

    /// A token as text (a byte that is not whole UTF-8 alone is written as
    /// it comes: callers join the bytes before decoding).
    pub fn decode(&self, ids: &[i64]) -> String {
        match self {
            Vocabulary::Bytes => {
                let bytes: Vec<u8> = ids.iter().map(|&i| i as u8).collect();
                String::from_utf8_lossy(&bytes).into_owned()
            }
            Vocabulary::Chars(chars) => ids
                .iter()
                .map(|&i| chars.get(i as usize).copied().unwrap_or('\u{fffd}'))
                .collect(),
            Vocabulary::Ids { .. } => ids
                .iter()
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(" "),
        }
    }
}

/// Whether `model` can generate with a cache of keys and values: every
/// operation acts on each position alone except causal attention and
/// position embeddings (no convolution over time, no mean over it, no
/// reshaping).
pub fn can_cache(model: &Model) -> bool {
    let nodes = model.nodes();
    nodes.iter().all(|node| {
        let last = |dim: i64| {
            let rank = node.output.len() as i64;
            dim == -1 || dim == rank - 1
        };
        match &node.op {
            Op::Attention { causal, .. } => *causal,
            Op::Softmax { dim } | Op::LogSoftmax { dim } | Op::Concat { dim } => last(*dim),
            Op::Input
            | Op::Linear { .. }
            | Op::LayerNorm { .. }
            | Op::RmsNorm { .. }
            | Op::Embedding { .. }
            | Op::PosEmbedding { .. }
            | Op::Dropout { .. }
            | Op::Relu
            | Op::LeakyRelu { .. }
            | Op::Elu { .. }
            | Op::Gelu { .. }
            | Op::Silu
            | Op::Tanh
            | Op::Sigmoid
            | Op::Add
            | Op::Mul => true,
            _ => false,
        }
    })
}

/// The model's context: the positions it was trained on.
pub fn context(plan: &Plan) -> Result<i64, RunError> {
    match plan.model.input.get(1) {
        Some(Dim::Size(t)) if plan.model.input.len() == 2 => Ok(*t),
        _ => Err(RunError::Data {
            path: plan.data.source.path().to_string(),
            message: format!(
                "generate needs a model of token windows [B, T], this one reads {:?}",
                plan.model.input
            ),
        }),
    }
}

/// Continues `prompt` by `sampling.tokens` tokens, one at a time: the
/// scores of the last position of the last `T` tokens (the model's
/// context) give the next token. With `cache`, while the text fits in the
/// context, each token's keys and values are kept and only the new token
/// is computed; beyond it the window slides and every position changes,
/// so each token is computed over the whole window. `each` is called with
/// every new token.
pub fn generate(
    plan: &Plan,
    model: &Model,
    prompt: &[i64],
    sampling: Sampling,
    cache: bool,
    each: &mut dyn FnMut(i64),
) -> Result<Vec<i64>, RunError> {
    let ctx = || "generate".to_string();
    let window = context(plan)?;
    let device = model_device(model);
    if prompt.is_empty() {
        return Err(RunError::Data {
            path: "--prompt".into(),
            message: "an empty prompt: give at least one token".into(),
        });
    }
    tch::manual_seed(sampling.seed);
    let mut ids: Vec<i64> = prompt.to_vec();
    tch::no_grad(|| -> Result<(), RunError> {
        let start = ids.len().saturating_sub(window as usize);
        let mut caches: Option<Vec<KvCache>> = (cache && can_cache(model))
            .then(|| model.nodes().iter().map(|_| KvCache::default()).collect());
        let tokens = Tensor::from_slice(&ids[start..])
            .f_reshape([1, -1])
            .and_then(|t| t.f_to_device(device))
            .context(ctx)?;
        let mut scores = match &mut caches {
            Some(caches) => forward_cached(model, &tokens, 0, caches)?,
            None => model.forward(&tokens, false)?,
        };
        for _ in 0..sampling.tokens {
            let last = scores
                .f_select(1, -1)
                .and_then(|s| s.f_select(0, 0))
                .context(ctx)?;
            let next = pick(&last, sampling).context(ctx)?;
            ids.push(next);
            each(next);
            let cached = caches.as_mut().filter(|_| ids.len() as i64 <= window);
            scores = match cached {
                Some(caches) => {
                    let token = Tensor::from_slice(&[next])
                        .f_reshape([1, 1])
                        .and_then(|t| t.f_to_device(device))
                        .context(ctx)?;
                    forward_cached(model, &token, ids.len() as i64 - 1, caches)?
                }
                None => {
                    let from = ids.len().saturating_sub(window as usize);
                    let tokens = Tensor::from_slice(&ids[from..])
                        .f_reshape([1, -1])
                        .and_then(|t| t.f_to_device(device))
                        .context(ctx)?;
                    model.forward(&tokens, false)?
                }
            };
        }
        Ok(())
    })?;
    Ok(ids[prompt.len()..].to_vec())
}

/// The model on positions `offset..offset + t` of the text, given the
/// caches of the positions before.
fn forward_cached(
    model: &Model,
    tokens: &Tensor,
    offset: i64,
    caches: &mut [KvCache],
) -> Result<Tensor, RunError> {
    let mut values: Vec<Tensor> = Vec::with_capacity(model.nodes().len());
    for (node, cache) in model.nodes().iter().zip(caches.iter_mut()) {
        let inputs: Vec<&Tensor> = if node.inputs.is_empty() {
            vec![tokens]
        } else {
            node.inputs.iter().map(|&i| &values[i]).collect()
        };
        let ctx = || format!("generate: layer `{}`", node.name);
        values.push(ops::forward_at(
            &node.op,
            &inputs,
            model,
            model.precision,
            offset,
            cache,
            ctx,
        )?);
    }
    Ok(values.swap_remove(model.result()))
}

/// The next token from the last position's scores.
fn pick(scores: &Tensor, sampling: Sampling) -> Result<i64, tch::TchError> {
    if sampling.temperature == 0.0 {
        return scores.f_argmax(-1, false)?.f_int64_value(&[]);
    }
    let mut scores = scores
        .f_to_kind(Kind::Float)?
        .f_div_scalar(sampling.temperature)?;
    if let Some(k) = sampling.top_k {
        let k = k.min(scores.size()[0]);
        // As nanoGPT: every score below the k-th best is left out.
        let (best, _) = scores.f_topk(k, -1, true, true)?;
        let kth = best.f_select(0, k - 1)?;
        let below = scores.f_lt_tensor(&kth)?;
        scores = scores.f_masked_fill(&below, f64::NEG_INFINITY)?;
    }
    let probabilities = scores.f_softmax(-1, None::<Kind>)?;
    probabilities.f_multinomial(1, false)?.f_int64_value(&[0])
}
