//! `dtl layout FILE --cluster C.yaml --world N`: the search of
//! `dtl_compiler::tools::layout`, printed.

use std::path::Path;

use dtl_compiler::input::Request;
use dtl_compiler::tools::{cluster::Cluster, layout};

use crate::Failure;

/// Searches and prints the layouts of `file` on `world` devices of
/// `cluster`: a table (text) or the list, best first (`json`). No layout
/// that fits is an error (exit 1), after the counts that say why.
pub fn layout(
    file: &Path,
    cluster: &Path,
    (world, batch, top): (u64, Option<u64>, usize),
    json: bool,
    request: &Request,
) -> Result<(), Failure> {
    let cluster = Cluster::load(cluster).map_err(Failure::usage)?;
    let text = crate::read(file)?;
    let name = file.display().to_string();
    let options = request.options(file);
    let search = layout::search(&layout::Request {
        name: &name,
        text: &text,
        options,
        cluster: &cluster,
        world,
        batch,
    })
    .map_err(Failure::usage)?;
    let summary = layout::render(&search, &cluster, top);
    if json {
        let best: Vec<&layout::Layout> = search.layouts.iter().take(top).collect();
        out!(
            "{}",
            serde_json::to_string_pretty(&best).expect("layouts serialize")
        );
        // The counts go beside the list, for people.
        eprint!(
            "{}",
            summary
                .lines()
                .take_while(|l| !l.is_empty())
                .map(|l| format!("{l}\n"))
                .collect::<String>()
        );
    } else {
        out!("{}", summary.trim_end());
    }
    match search.layouts.is_empty() {
        true => Err(Failure::error(format!(
            "no layout of {} on {world} devices passes the checker and fits the device's memory: the counts above say why",
            search.model
        ))),
        false => Ok(()),
    }
}
