//! Memory checked before it is allocated: `dtl explain`'s estimate of what
//! each rank holds (parameters, gradients, optimizer state, activations,
//! what rank 0 gathers) against the memory this machine has free, before
//! any tensor is made. A run that cannot fit is refused with the estimate
//! and its biggest consumers, unless `--force`; the estimate leaves out
//! libtorch's own fixed cost (about half a gigabyte a process), so a
//! refusal is never a false alarm of the estimate's making.
//!
//! The check reads the machine's RAM (`MemAvailable`); on a GPU the device's
//! free memory is not read yet, and the run is not refused for it.

use dtl_compiler::plan::Plan;
use dtl_compiler::tools::explain;

use crate::error::RunError;

/// The most resident memory this process has held so far
/// (`getrusage`'s `ru_maxrss`), in bytes.
pub fn peak_rss() -> Option<u64> {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given and reads nothing else.
    let status = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
    if status != 0 {
        return None;
    }
    // SAFETY: getrusage succeeded, so the struct is initialised.
    let kib = unsafe { usage.assume_init() }.ru_maxrss;
    // Kibibytes on Linux.
    u64::try_from(kib).ok().map(|k| k * 1024)
}

/// Allocations of this size or more get a mapping of their own.
///
/// Lower costs speed: at 128 KiB, every activation of the character model
/// is mapped and page-faulted afresh each step, and `moby_char_lm` trained
/// at 18.4–18.6 steps/s against 25.9–26.8 with glibc's default or with
/// this (2026-12-05). Flat buckets, gathered units, weights, gradients
/// and the optimizer's per-tensor temporaries of a model big enough for
/// memory to matter are all above it.
const MMAP_THRESHOLD: i32 = 4 * 1024 * 1024;

/// Makes every allocation of [`MMAP_THRESHOLD`] or more its own mapping,
/// returned to the system when freed (glibc's `M_MMAP_THRESHOLD`, fixed:
/// its default rises to the largest block freed, after which big blocks
/// come from the heap and a freed one may stay resident). Set for every
/// run on the CPU: the buffers of the gradient exchange, a gathered unit
/// under `shard = parameters` and the optimizer's temporaries then leave no
/// resident blocks behind, and the peak is what `dtl explain` counts.
/// Measured on eight 8.4 M-parameter blocks over 2 replicas, rank 0's peak
/// beyond the fixed cost fell from 1.29× the estimate to 1.00× without
/// `shard` (ZeRO-1 1.17× to 1.00×, ZeRO-2 1.21× to 1.00×; ZeRO-3 1.08×).
pub fn return_freed_blocks() {
    // SAFETY: mallopt changes a setting of the allocator; it is called
    // once, before the step loop, and a failure leaves the default.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}

/// Free memory of this machine, from `/proc/meminfo` (Linux).
pub fn available_ram() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// What the ranks of `plan` that run on this machine need, by explain's
/// estimate: `ranks` (a rank list; all of them for a launcher, one's own
/// for a rank of an outer launcher's job).
pub fn needed(plan: &Plan, ranks: &[u64]) -> (u64, Vec<(String, u64)>) {
    let cost = explain::cost(plan);
    let stage_total = |rank: u64| {
        let stage = plan.topology.ranks[rank as usize].stage as usize;
        cost.stages
            .get(stage)
            .map_or(cost.memory.total, |s| s.memory.total)
    };
    let total = ranks.iter().map(|&r| stage_total(r)).sum();
    let m = &cost.memory;
    let mut parts = vec![
        ("parameters".to_string(), m.parameters),
        ("gradients".to_string(), m.gradients),
        ("optimizer state".to_string(), m.optimizer_state),
        ("activations".to_string(), m.activations),
    ];
    let mut layers: Vec<&explain::LayerCost> = cost.layers.iter().collect();
    layers.sort_by_key(|l| std::cmp::Reverse(l.parameters));
    for layer in layers.iter().take(3).filter(|l| l.parameters > 0) {
        parts.push((
            format!("layer `{}` ({}) weights", layer.name, layer.kind),
            layer.parameters * 4,
        ));
    }
    parts.sort_by_key(|(_, bytes)| std::cmp::Reverse(*bytes));
    (total, parts)
}

/// Refuses a run whose ranks on this machine need more than it has free.
pub fn check_fits(plan: &Plan, ranks: &[u64]) -> Result<(), RunError> {
    let Some(free) = available_ram() else {
        return Ok(());
    };
    let (total, parts) = needed(plan, ranks);
    if total <= free {
        return Ok(());
    }
    let consumers: Vec<String> = parts
        .iter()
        .take(4)
        .map(|(what, bytes)| format!("{what} {}", explain::bytes(*bytes)))
        .collect();
    Err(RunError::Memory {
        message: format!(
            "{} rank(s) here need {} by `dtl explain`'s estimate, and this machine has {} free; the biggest: {}",
            ranks.len(),
            explain::bytes(total),
            explain::bytes(free),
            consumers.join(", ")
        ),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn this_machine_says_what_it_has_free() {
        let free = super::available_ram().expect("Linux has /proc/meminfo");
        assert!(free > 1 << 20);
    }
}
