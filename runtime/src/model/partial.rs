//! Partial loads of a weights file (`init = weights(path, …)`): how the
//! file's names and layouts map onto the model's, and the report of what
//! was loaded, skipped, missing or unused.

use std::collections::BTreeMap;
use std::path::Path;

use tch::Tensor;

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
    /// The file's tensors under the model's names; two tensors that end
    /// under one name, or a transposed tensor that is not 2-d, are errors
    /// naming them.
    pub fn apply(
        &self,
        tensors: Vec<(String, Tensor)>,
    ) -> Result<BTreeMap<String, Tensor>, String> {
        let mut turned = Vec::with_capacity(tensors.len());
        for (name, tensor) in tensors {
            let tensor = if dtl_compiler::util::glob::any(self.transpose, &name) {
                if tensor.dim() != 2 {
                    return Err(format!(
                        "`{name}` is {:?}: `transpose` turns only 2-d tensors",
                        tensor.size()
                    ));
                }
                tensor.tr().contiguous()
            } else {
                tensor
            };
            let tensor = if dtl_compiler::util::glob::any(self.squeeze, &name) {
                tensor.squeeze()
            } else {
                tensor
            };
            turned.push((name, tensor));
        }
        let mut out: BTreeMap<String, (String, Tensor)> = BTreeMap::new();
        for (name, tensor) in self.fused(turned)? {
            let renamed = self
                .rename
                .iter()
                .fold(name.clone(), |n, [from, to]| n.replace(from.as_str(), to));
            if let Some((first, _)) = out.get(&renamed) {
                return Err(format!(
                    "`{first}` and `{name}` are both renamed to `{renamed}`"
                ));
            }
            out.insert(renamed, (name, tensor));
        }
        Ok(out.into_iter().map(|(k, (_, t))| (k, t)).collect())
    }

    /// `tensors` with each `fuse` group's parts concatenated (along the
    /// first dimension, in the group's order) under the whole's name: for
    /// every name holding the group's first part, the names with each
    /// part in its place must be there too.
    fn fused(&self, tensors: Vec<(String, Tensor)>) -> Result<Vec<(String, Tensor)>, String> {
        let mut by_name: BTreeMap<String, Tensor> = tensors.into_iter().collect();
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
                let pieces: Vec<Tensor> = names
                    .iter()
                    .map(|n| by_name.remove(n).expect("checked above"))
                    .collect();
                let fused = Tensor::f_cat(&pieces, 0)
                    .map_err(|e| format!("`fuse`: {}: {e}", names.join(", ")))?;
                let into = first.replacen(parts[0].as_str(), &whole[0], 1);
                if by_name.insert(into.clone(), fused).is_some() {
                    return Err(format!("`fuse`: the file already holds `{into}`"));
                }
            }
        }
        Ok(by_name.into_iter().collect())
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
