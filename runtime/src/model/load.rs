//! Loading weights files into the model: strictly (every tensor by
//! name, as PyTorch's `load_state_dict(strict=True)`), or partially
//! through the `init` name map, one tensor at a time.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use tch::Tensor;

use super::{LoadReport, Mapped, Model, NameMap};
use crate::error::{RunError, TorchContext};

impl Model {
    /// Loads weights written by [`Model::save`] or by PyTorch's safetensors,
    /// strictly (as PyTorch's `load_state_dict(strict=True)`): every
    /// parameter and buffer must be there with its shape, and the file may
    /// hold nothing else (a misspelt name would otherwise go unnoticed).
    pub fn load(&mut self, path: &Path) -> Result<(), RunError> {
        self.load_part(path, &BTreeSet::new()).map(drop)
    }

    /// [`Model::load`] for a pipeline stage: the file holds the whole
    /// model, so the tensors of `others` (the other stages') may be there
    /// too, and are left. The file is read one tensor at a time; the
    /// deferred parameters are only checked to be there, and the file
    /// comes back for [`InitWeights::deferred`] to lay them out.
    pub fn load_part(
        &mut self,
        path: &Path,
        others: &BTreeSet<String>,
    ) -> Result<InitWeights, RunError> {
        let file = Mapped::open(path, &NameMap::default())?;
        if let Some(name) = self.deferred.iter().find(|n| !file.contains(n)) {
            return Err(RunError::Weights {
                path: path.display().to_string(),
                message: format!("no tensor named `{name}`"),
            });
        }
        self.load_from(file.names(), &mut |n| file.tensor(n), others, path)?;
        Ok(InitWeights { file, skip: None })
    }

    /// [`Model::load_part`] from tensors already read (from `path`, which
    /// errors name).
    pub fn load_weights(
        &mut self,
        by_name: BTreeMap<String, Tensor>,
        others: &BTreeSet<String>,
        path: &Path,
    ) -> Result<(), RunError> {
        let mut get = |n: &str| Ok(by_name.get(n).map(Tensor::shallow_clone));
        self.load_from(by_name.keys().map(String::as_str), &mut get, others, path)
    }

    /// The strict load of [`Model::load_part`] from a source that holds
    /// the tensors `names` and gives each by `get`.
    fn load_from<'n>(
        &mut self,
        mut names: impl Iterator<Item = &'n str>,
        get: &mut dyn FnMut(&str) -> Result<Option<Tensor>, RunError>,
        others: &BTreeSet<String>,
        path: &Path,
    ) -> Result<(), RunError> {
        let err = |message: String| RunError::Weights {
            path: path.display().to_string(),
            message,
        };
        if let Some(extra) =
            names.find(|name| !self.index.contains_key(*name) && !others.contains(*name))
        {
            let known = self.index.keys().map(String::as_str);
            let hint = dtl_compiler::util::suggest::did_you_mean(extra, known)
                .map_or(String::new(), |h| format!(" ({h})"));
            return Err(err(format!(
                "`{extra}` is not a parameter or buffer of the model{hint}"
            )));
        }
        for (real, (name, param)) in self.all_mut() {
            let Some(src) = get(name)? else {
                return Err(err(format!("no tensor named `{name}`")));
            };
            fits(name, &src, param, real, "").map_err(err)?;
            tch::no_grad(|| param.f_copy_(&src)).context(|| format!("load `{name}`"))?;
        }
        Ok(())
    }

    /// A partial load: every tensor of this part of the model that the
    /// file holds and `skip` does not name is copied, with its shape and
    /// kind checked as [`Model::load_part`] does; the rest keep their
    /// initialisers. Tensors of `others` (other pipeline stages) are
    /// neither loaded nor reported. The deferred parameters are reported
    /// as what [`InitWeights::deferred`] will do with them.
    pub fn load_partial(
        &mut self,
        file: &Mapped,
        others: &BTreeSet<String>,
        skip: &[String],
    ) -> Result<LoadReport, RunError> {
        let err = |message: String| RunError::Weights {
            path: file.path().display().to_string(),
            message,
        };
        let skipped = |name: &str| dtl_compiler::util::glob::any(skip, name);
        let mut report = LoadReport::default();
        let every = self.params.iter().chain(&self.frozen).chain(&self.buffers);
        for (name, _) in every {
            if skipped(name) {
                report.skipped.push(name.clone());
            } else if file.contains(name) {
                report.loaded.push(name.clone());
            } else {
                report.missing.push(name.clone());
            }
        }
        let load: BTreeSet<&String> = report.loaded.iter().collect();
        for (real, (name, param)) in self.all_mut() {
            if !load.contains(name) {
                continue;
            }
            let src = file.tensor(name)?.expect("the file holds it");
            let way_out = "; name it in `skip` to keep its initialiser";
            fits(name, &src, param, real, way_out).map_err(err)?;
            tch::no_grad(|| param.f_copy_(&src)).context(|| format!("load `{name}`"))?;
        }
        report.unused = file
            .names()
            .filter(|n| !self.index.contains_key(*n) && !others.contains(*n) && !skipped(n))
            .map(str::to_string)
            .collect();
        Ok(report)
    }

    /// The `init` weights at `path` as the plan's `train` block loads them:
    /// for `weights(path, skip: ..., rename: ..., transpose: ...)` a
    /// partial load through that name map, whose report comes back; for a
    /// plain path every tensor by name. Tensors of `others` (other
    /// pipeline stages') are left; the file comes back for the deferred
    /// parameters.
    pub fn load_init(
        &mut self,
        train: &dtl_compiler::plan::TrainPlan,
        path: &Path,
        others: &BTreeSet<String>,
    ) -> Result<(InitWeights, Option<LoadReport>), RunError> {
        let Some(skip) = &train.init_skip else {
            return Ok((self.load_part(path, others)?, None));
        };
        let map = NameMap {
            rename: &train.init_rename,
            transpose: &train.init_transpose,
            fuse: &train.init_fuse,
            squeeze: &train.init_squeeze,
        };
        let file = Mapped::open(path, &map)?;
        let report = self.load_partial(&file, others, skip)?;
        let skip = Some(skip.clone());
        Ok((InitWeights { file, skip }, Some(report)))
    }
}

/// The weights file a model was loaded from, kept for the deferred
/// parameters (`shard = parameters`), which the units lay out one at a
/// time, each read from the file as its unit comes.
pub struct InitWeights {
    file: Mapped,
    /// A partial load's `skip`; `None` for a strict load.
    skip: Option<Vec<String>>,
}

impl InitWeights {
    /// What [`fill_deferred`] lays out for deferred parameter `name`: the
    /// file's tensor with the file's path, or `None` where a partial load
    /// keeps the initialiser (skipped, or not in the file). A strict load
    /// checked that the file holds every deferred parameter.
    pub fn deferred(&self, name: &str) -> Result<Option<(Option<Tensor>, &Path)>, RunError> {
        let skipped = |skip: &[String]| dtl_compiler::util::glob::any(skip, name);
        if self.skip.as_deref().is_some_and(skipped) {
            return Ok(None);
        }
        let path = self.file.path();
        match (self.file.tensor(name)?, &self.skip) {
            (None, Some(_)) => Ok(None),
            (tensor, _) => Ok(Some((tensor, path))),
        }
    }
}

/// Whether the file's tensor `src` can be copied into `param`: the same
/// shape, and real values for a parameter (integers or booleans would be
/// cast silently; buffers may count, as PyTorch's num_batches_tracked).
/// `way_out` ends the shape message.
pub(super) fn fits(
    name: &str,
    src: &Tensor,
    param: &Tensor,
    real: bool,
    way_out: &str,
) -> Result<(), String> {
    if src.size() != param.size() {
        return Err(format!(
            "`{name}` has shape {:?} in the file, the model needs {:?}{way_out}",
            src.size(),
            param.size()
        ));
    }
    if real && !is_float(src.kind()) {
        return Err(format!(
            "`{name}` is {:?} in the file, but it is a parameter of real values ({:?}): refused rather than converted",
            src.kind(),
            param.kind()
        ));
    }
    Ok(())
}

fn is_float(kind: tch::Kind) -> bool {
    matches!(
        kind,
        tch::Kind::Float | tch::Kind::Double | tch::Kind::Half | tch::Kind::BFloat16
    )
}
