//! Partial loads of a weights file (`init = weights(path, …)`): how the
//! file's names and layouts map onto the model's, and the report of what
//! was loaded, skipped, missing or unused.

use std::collections::BTreeMap;
use std::path::Path;

use tch::Tensor;

use super::file::WeightsFile;
use crate::error::RunError;

/// How a weights file's names and layouts map onto the model's (`init =
/// weights(path, rename: [...], transpose: [...], fuse: [...], squeeze:
/// [...])`): the tensors whose names (as in the file) match `transpose` are
/// transposed (2-d only), those matching `squeeze` lose their dimensions
/// of size 1, the `fuse` groups' parts are concatenated into one, then
/// every name goes through the `rename` pairs in order, each replacing
/// every occurrence of its first string by its second.
#[derive(Debug, Clone, Copy, Default)]
pub struct NameMap<'a> {
    pub rename: &'a [[String; 2]],
    pub transpose: &'a [String],
    pub fuse: &'a [Vec<String>],
    pub squeeze: &'a [String],
}

impl NameMap<'_> {
    /// How each of the model's tensors is made from the file's, whose
    /// names and shapes `shapes` gives: two tensors that end under one
    /// name, a transposed tensor that is not 2-d or a `fuse` group missing
    /// a part are errors naming them. Nothing is read.
    pub fn recipes<'n>(
        &self,
        shapes: impl Iterator<Item = (&'n str, &'n [i64])>,
    ) -> Result<BTreeMap<String, Recipe>, String> {
        let mut by_name = BTreeMap::new();
        for (name, shape) in shapes {
            let transpose = dtl_compiler::util::glob::any(self.transpose, name);
            if transpose && shape.len() != 2 {
                return Err(format!(
                    "`{name}` is {shape:?}: `transpose` turns only 2-d tensors"
                ));
            }
            let part = Part {
                name: name.to_string(),
                transpose,
                squeeze: dtl_compiler::util::glob::any(self.squeeze, name),
            };
            by_name.insert(name.to_string(), Recipe { parts: vec![part] });
        }
        let mut out: BTreeMap<String, (String, Recipe)> = BTreeMap::new();
        for (name, recipe) in self.fused(by_name)? {
            let renamed = self
                .rename
                .iter()
                .fold(name.clone(), |n, [from, to]| n.replace(from.as_str(), to));
            if let Some((first, _)) = out.get(&renamed) {
                return Err(format!(
                    "`{first}` and `{name}` are both renamed to `{renamed}`"
                ));
            }
            out.insert(renamed, (name, recipe));
        }
        Ok(out.into_iter().map(|(k, (_, r))| (k, r)).collect())
    }

    /// `recipes` with each `fuse` group's parts joined (concatenated along
    /// the first dimension, in the group's order) under the whole's name:
    /// for every name holding the group's first part, the names with each
    /// part in its place must be there too.
    fn fused(
        &self,
        mut by_name: BTreeMap<String, Recipe>,
    ) -> Result<BTreeMap<String, Recipe>, String> {
        for group in self.fuse {
            let (parts, whole) = group.split_at(group.len() - 1);
            let firsts: Vec<String> = by_name
                .keys()
                .filter(|n| n.contains(parts[0].as_str()))
                .cloned()
                .collect();
            for first in firsts {
                let names: Vec<String> = parts
                    .iter()
                    .map(|p| first.replacen(parts[0].as_str(), p, 1))
                    .collect();
                if let Some(missing) = names.iter().find(|n| !by_name.contains_key(*n)) {
                    return Err(format!(
                        "`fuse`: `{first}` has no `{missing}` to be concatenated with"
                    ));
                }
                let joined = names
                    .iter()
                    .flat_map(|n| by_name.remove(n).expect("checked above").parts)
                    .collect();
                let into = first.replacen(parts[0].as_str(), &whole[0], 1);
                if by_name
                    .insert(into.clone(), Recipe { parts: joined })
                    .is_some()
                {
                    return Err(format!("`fuse`: the file already holds `{into}`"));
                }
            }
        }
        Ok(by_name)
    }

    /// The file's tensors under the model's names, made at once (see
    /// [`NameMap::recipes`]).
    #[cfg(test)]
    pub fn apply(
        &self,
        tensors: Vec<(String, Tensor)>,
    ) -> Result<BTreeMap<String, Tensor>, String> {
        let shapes: Vec<(String, Vec<i64>)> =
            tensors.iter().map(|(n, t)| (n.clone(), t.size())).collect();
        let recipes = self.recipes(shapes.iter().map(|(n, s)| (n.as_str(), s.as_slice())))?;
        let by_name: BTreeMap<String, Tensor> = tensors.into_iter().collect();
        let mut read = |n: &str| Ok(by_name[n].shallow_clone());
        recipes
            .into_iter()
            .map(|(name, recipe)| Ok((name, recipe.make(&mut read)?)))
            .collect()
    }
}

/// How one of the model's tensors is made from the file's: from its parts
/// (one tensor, or a `fuse` group's in order), each transposed and
/// squeezed as the map says, concatenated along the first dimension.
#[derive(Debug, Clone)]
pub struct Recipe {
    parts: Vec<Part>,
}

#[derive(Debug, Clone)]
struct Part {
    name: String,
    transpose: bool,
    squeeze: bool,
}

impl Recipe {
    /// The tensor, its parts read by `read` (from the file's names).
    pub fn make(
        &self,
        read: &mut dyn FnMut(&str) -> Result<Tensor, String>,
    ) -> Result<Tensor, String> {
        let mut pieces = Vec::with_capacity(self.parts.len());
        for part in &self.parts {
            let mut tensor = read(&part.name)?;
            if part.transpose {
                tensor = tensor.tr().contiguous();
            }
            if part.squeeze {
                tensor = tensor.squeeze();
            }
            pieces.push(tensor);
        }
        match pieces.len() {
            1 => Ok(pieces.pop().expect("one piece")),
            _ => Tensor::f_cat(&pieces, 0).map_err(|e| {
                let names: Vec<&str> = self.parts.iter().map(|p| p.name.as_str()).collect();
                format!("`fuse`: {}: {e}", names.join(", "))
            }),
        }
    }
}

/// A weights file under the model's names (through a [`NameMap`]): each
/// tensor made from the file's when asked for, one at a time.
pub struct Mapped {
    file: WeightsFile,
    recipes: BTreeMap<String, Recipe>,
}

impl Mapped {
    /// Opens `path` and maps its names; errors name the file.
    pub fn open(path: &Path, map: &NameMap<'_>) -> Result<Mapped, RunError> {
        let err = |message: String| RunError::Weights {
            path: path.display().to_string(),
            message,
        };
        let file = WeightsFile::open(path).map_err(err)?;
        let recipes = map.recipes(file.shapes()).map_err(err)?;
        Ok(Mapped { file, recipes })
    }

    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// The model's names the file gives, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.recipes.keys().map(String::as_str)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.recipes.contains_key(name)
    }

    /// The tensor the file gives for the model's `name`, read now.
    pub fn tensor(&self, name: &str) -> Result<Option<Tensor>, RunError> {
        let Some(recipe) = self.recipes.get(name) else {
            return Ok(None);
        };
        let mut read = |n: &str| {
            self.file
                .tensor(n)
                .and_then(|t| t.ok_or_else(|| format!("no tensor named `{n}`")))
        };
        recipe
            .make(&mut read)
            .map(Some)
            .map_err(|message| RunError::Weights {
                path: self.path().display().to_string(),
                message,
            })
    }
}

/// What a partial load (`init = weights(path, skip: [...])`) did with each
/// tensor, by name.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct LoadReport {
    /// Copied from the file.
    pub loaded: Vec<String>,
    /// Named by `skip`: the initialisers' values kept (the file's, if it
    /// has them, left unused).
    pub skipped: Vec<String>,
    /// Not in the file: the initialisers' values kept.
    pub missing: Vec<String>,
    /// In the file but not in the model (nor another stage), not skipped.
    pub unused: Vec<String>,
}

impl LoadReport {
    /// One line for the terminal: counts, and the names when few.
    pub fn summary(&self, path: &Path) -> String {
        let few = |names: &[String]| match names.len() {
            0 => String::new(),
            1..=6 => format!(" ({})", names.join(", ")),
            n => format!(" ({}, … {} more)", names[..4].join(", "), n - 4),
        };
        format!(
            "init from {}: {} tensors loaded, {} skipped{}, {} missing from the file{} (initialisers kept), {} in the file unused{}",
            path.display(),
            self.loaded.len(),
            self.skipped.len(),
            few(&self.skipped),
            self.missing.len(),
            few(&self.missing),
            self.unused.len(),
            few(&self.unused)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::NameMap;
    use tch::Tensor;

    fn file() -> Vec<(String, Tensor)> {
        vec![
            (
                "transformer.h.0.mlp.c_fc.weight".into(),
                Tensor::from_slice(&[1f32, 2., 3., 4., 5., 6.]).reshape([2, 3]),
            ),
            (
                "transformer.wte.weight".into(),
                Tensor::zeros([4, 2], tch::kind::FLOAT_CPU),
            ),
        ]
    }

    #[test]
    fn names_are_mapped_pair_by_pair_after_the_transposes() {
        let rename = [
            ["transformer.h.".to_string(), "1.".to_string()],
            ["transformer.".to_string(), String::new()],
        ];
        let transpose = ["*.c_fc.weight".to_string()];
        let map = NameMap {
            rename: &rename,
            transpose: &transpose,
            ..NameMap::default()
        };
        let mapped = map.apply(file()).unwrap();
        let names: Vec<&str> = mapped.keys().map(String::as_str).collect();
        assert_eq!(names, ["1.0.mlp.c_fc.weight", "wte.weight"]);
        let turned = &mapped["1.0.mlp.c_fc.weight"];
        assert_eq!(turned.size(), [3, 2]);
        assert_eq!(
            Vec::<f32>::try_from(turned.reshape([-1])).unwrap(),
            [1., 4., 2., 5., 3., 6.]
        );
    }

    /// Hugging Face LLaMA's separate query, key and value projections
    /// become one packed `in_proj_weight` (query rows, then key, then
    /// value), then renamed; a squeezed tensor loses its leading 1; a
    /// group missing a part is named.
    #[test]
    fn fused_parts_are_concatenated_in_order_before_renaming() {
        let part = |v: f64, rows: i64| Tensor::full([rows, 2], v, tch::kind::FLOAT_CPU);
        let file = vec![
            (
                "model.layers.0.attn.q_proj.weight".to_string(),
                part(1.0, 2),
            ),
            (
                "model.layers.0.attn.k_proj.weight".to_string(),
                part(2.0, 1),
            ),
            (
                "model.layers.0.attn.v_proj.weight".to_string(),
                part(3.0, 1),
            ),
            ("model.norm.weight".to_string(), part(4.0, 1)),
            (
                "model.pos".to_string(),
                Tensor::zeros([1, 3, 2], tch::kind::FLOAT_CPU),
            ),
        ];
        let squeeze = ["*.pos".to_string()];
        let fuse = [vec![
            "q_proj.weight".to_string(),
            "k_proj.weight".to_string(),
            "v_proj.weight".to_string(),
            "in_proj_weight".to_string(),
        ]];
        let rename = [
            ["model.layers.".to_string(), "1.".to_string()],
            ["model.".to_string(), String::new()],
        ];
        let map = NameMap {
            rename: &rename,
            fuse: &fuse,
            squeeze: &squeeze,
            ..NameMap::default()
        };
        let mapped = map.apply(file).unwrap();
        let names: Vec<&str> = mapped.keys().map(String::as_str).collect();
        assert_eq!(names, ["1.0.attn.in_proj_weight", "norm.weight", "pos"]);
        assert_eq!(mapped["pos"].size(), [3, 2]);
        let packed = &mapped["1.0.attn.in_proj_weight"];
        assert_eq!(
            Vec::<f32>::try_from(packed.reshape([-1])).unwrap(),
            [1., 1., 1., 1., 2., 2., 3., 3.]
        );
        let lacking = vec![("a.q_proj.weight".to_string(), part(1.0, 1))];
        let err = map.apply(lacking).unwrap_err();
        assert!(
            err.contains("`a.q_proj.weight` has no `a.k_proj.weight`"),
            "{err}"
        );
    }

    #[test]
    fn two_tensors_renamed_alike_and_a_transposed_vector_are_errors() {
        let rename = [[
            "transformer.h.0.mlp.c_fc.weight".to_string(),
            "transformer.wte.weight".to_string(),
        ]];
        let map = NameMap {
            rename: &rename,
            ..NameMap::default()
        };
        let err = map.apply(file()).unwrap_err();
        assert!(
            err.contains("are both renamed to `transformer.wte.weight`"),
            "{err}"
        );
        let transpose = ["*".to_string()];
        let map = NameMap {
            transpose: &transpose,
            ..NameMap::default()
        };
        let vector = vec![("b".to_string(), Tensor::zeros([3], tch::kind::FLOAT_CPU))];
        let err = map.apply(vector).unwrap_err();
        assert!(
            err.contains("`b` is [3]: `transpose` turns only 2-d tensors"),
            "{err}"
        );
    }
}
