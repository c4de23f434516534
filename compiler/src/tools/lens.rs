//! Code lenses: `dtl explain`'s headline figures above the blocks they
//! come from, before anything runs. Above `train`: the parameters, the
//! memory of the busiest rank and the FLOPs of a step; above `parallel`:
//! the grid of ranks and the bytes each sends per step.

use crate::ast::{File, Item};
use crate::span::Span;

use super::explain::{bytes, cost, count};

/// One lens: the keyword it sits on and what it says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lens {
    pub span: Span,
    pub title: String,
}

/// The lenses of a file that compiles (none for one with errors: its
/// diagnostics say why); `file` is its syntax tree, parsed already.
pub fn code_lenses(
    name: &str,
    (text, file): (&str, &File),
    options: &crate::check::Options,
) -> Vec<Lens> {
    let Ok(plan) = crate::compile_source(name, text, options) else {
        return Vec::new();
    };
    let cost = cost(&plan);
    let p = &plan.topology.parallelism;
    let sent: u64 = cost.collectives.iter().map(|c| c.bytes_per_rank).sum();
    let mut out = Vec::new();
    for item in &file.items {
        match item {
            Item::Train(block) => out.push(Lens {
                span: block.keyword,
                title: format!(
                    "{} parameters · {} per rank · {} FLOP a step",
                    count(cost.parameters),
                    bytes(cost.memory.total),
                    count(cost.flops_per_step)
                ),
            }),
            Item::Parallel(block) => out.push(Lens {
                span: block.keyword,
                title: format!(
                    "{} ranks: data {} × tensor {} × pipeline {} · {} sent per rank a step",
                    p.world_size(),
                    p.data,
                    p.tensor,
                    p.pipeline,
                    bytes(sent)
                ),
            }),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_over_train_and_parallel() {
        let text = "model M { forward(x: [B, 4]) -> [B, 2] { x |> linear(4, 2) } }
data d { source = synthetic(rows: 64, features: 4, classes: 2) }
train { model = M; data = d; loss = cross_entropy; optimizer = sgd(lr: 0.1); steps = 1; micro_batch = 8 }
parallel { data = 2 }
";
        let options = crate::options_for(std::path::Path::new("t.dtl"), false);
        let lenses = code_lenses("t.dtl", (text, &crate::syntax::parse(text).0), &options);
        assert_eq!(lenses.len(), 2);
        assert_eq!(&text[lenses[0].span.start..lenses[0].span.end], "train");
        assert!(
            lenses[0].title.starts_with("10 parameters · "),
            "{}",
            lenses[0].title
        );
        // 10 float32 gradients, ring all-reduce over 2: 2 · (2 − 1) / 2 · 40 bytes.
        assert_eq!(
            lenses[1].title,
            "2 ranks: data 2 × tensor 1 × pipeline 1 · 40 B sent per rank a step"
        );
        let broken = "model {";
        let parsed = crate::syntax::parse(broken).0;
        assert!(code_lenses("t.dtl", (broken, &parsed), &options).is_empty());
    }
}
