//! `dtl calibrate -o clusters/local.yaml`: this machine measured
//! ([`dtl_runtime::calibrate`]) and written as a cluster description.
//!
//! One rank alone gives the device's figures: the best matrix-product rate
//! per precision over the sizes tried, and the memory bandwidth. Jobs of 2
//! … N ranks on this machine give `node.share` (what one rank gets of the
//! product rate while k ranks compute: they share its cores) and the
//! link: one latency and bandwidth fitted to every all-reduce and
//! ping-pong they timed. One machine has no network: `network` is the
//! node's link again. `efficiency.compute` is what a float32 linear
//! layer's training pass reaches of the best product (the median over its
//! shapes); `efficiency.memory` what AdamW's update (dtl's own) reaches of
//! the copy's bandwidth; the link's figures are rates reached, so its
//! efficiency is 1.

#[cfg(feature = "runtime")]
use std::path::Path;
use std::path::PathBuf;

use crate::Failure;

/// `dtl calibrate`'s arguments.
#[derive(clap::Args)]
#[cfg_attr(not(feature = "runtime"), allow(dead_code))]
pub struct CalibrateArgs {
    /// Where to write the cluster description (YAML).
    #[arg(short, long, required_unless_present = "job")]
    pub output: Option<PathBuf>,
    /// Measure jobs of 2 … N ranks on this machine (N ≥ 2); more ranks
    /// than cores share them, as `dtl run --world N` would.
    #[arg(long, default_value_t = 4)]
    pub ranks: usize,
    /// One rank of a measuring job (started by `dtl calibrate` itself).
    #[arg(long, hide = true)]
    pub job: bool,
}

#[cfg(not(feature = "runtime"))]
pub fn calibrate(_: CalibrateArgs) -> Result<(), Failure> {
    Err(Failure::usage(
        "this dtl was built without the runtime (`--no-default-features`): nothing to measure with"
            .into(),
    ))
}

#[cfg(feature = "runtime")]
pub fn calibrate(args: CalibrateArgs) -> Result<(), Failure> {
    use dtl_runtime::calibrate;
    crate::run::restart_with_environment();
    if args.job {
        let folder = std::env::var_os("DTL_RUN_FOLDER").map(PathBuf::from);
        let folder = folder.ok_or_else(|| {
            Failure::usage("`--job` is what `dtl calibrate` starts its ranks with".into())
        })?;
        return calibrate::job(&folder).map_err(|e| Failure::error(e.to_string()));
    }
    let output = args.output.expect("clap requires --output");
    if args.ranks < 2 {
        return Err(Failure::usage(format!(
            "--ranks {}: the links need jobs of 2 ranks or more",
            args.ranks
        )));
    }
    let scratch = scratch_folder()?;
    let mut jobs = Vec::new();
    for ranks in 1..=args.ranks {
        eprintln!("dtl calibrate: measuring with {ranks} rank(s)…");
        let job = measure_job(ranks, &scratch);
        jobs.push(job?);
    }
    let _ = std::fs::remove_dir_all(&scratch);
    let cluster = describe(&jobs).map_err(Failure::error)?;
    let text = format!(
        "# This machine, measured by `dtl calibrate --ranks {}` (dtl {}): see\n# docs/planning.md. Units: FLOP/s, bytes, bytes/s (one direction), seconds.\n{}",
        args.ranks,
        env!("CARGO_PKG_VERSION"),
        cluster.to_yaml()
    );
    dtl_runtime::output::write_atomic(&output, text.as_bytes())
        .map_err(|e| Failure::error(e.to_string()))?;
    out!(
        "wrote {}: fp32 {:.1} GFLOP/s, bf16 {:.1} GFLOP/s, memory {:.1} GB/s, link {:.1} µs + {:.2} GB/s",
        output.display(),
        cluster.device.peak_flops.fp32 / 1e9,
        cluster.device.peak_flops.bf16.unwrap_or(0.0) / 1e9,
        cluster.device.memory_bandwidth / 1e9,
        cluster.node.link.latency * 1e6,
        cluster.node.link.bandwidth / 1e9
    );
    Ok(())
}

/// A fresh folder for the jobs' figures.
#[cfg(feature = "runtime")]
fn scratch_folder() -> Result<PathBuf, Failure> {
    let folder = std::env::temp_dir().join(format!("dtl-calibrate-{}", std::process::id()));
    std::fs::create_dir_all(&folder)
        .map_err(|e| Failure::error(format!("cannot create {}: {e}", folder.display())))?;
    Ok(folder)
}

/// One job's figures: in this process for one rank, else through mpirun.
#[cfg(feature = "runtime")]
fn measure_job(
    ranks: usize,
    scratch: &Path,
) -> Result<dtl_runtime::calibrate::JobTimings, Failure> {
    use dtl_runtime::calibrate;
    let failed = |e: dtl_runtime::RunError| Failure::error(e.to_string());
    if ranks == 1 {
        let alone = dtl_runtime::comm::Local;
        return Ok(calibrate::measure(&alone)
            .map_err(failed)?
            .expect("one rank is rank 0"));
    }
    let path = scratch.join("job.json");
    let _ = std::fs::remove_file(&path);
    let args: [std::ffi::OsString; 2] = ["calibrate".into(), "--job".into()];
    let code = dtl_runtime::launch::launch(ranks, &args, scratch).map_err(failed)?;
    if code != 0 {
        return Err(Failure::error(format!(
            "the measuring job of {ranks} ranks failed (exit code {code})"
        )));
    }
    let text = std::fs::read_to_string(&path)
        .map_err(|e| Failure::error(format!("the job of {ranks} ranks wrote no figures: {e}")))?;
    serde_json::from_str(&text).map_err(|e| Failure::error(format!("{}: {e}", path.display())))
}

/// The cluster description the jobs' figures make.
#[cfg(feature = "runtime")]
fn describe(
    jobs: &[dtl_runtime::calibrate::JobTimings],
) -> Result<dtl_compiler::tools::cluster::Cluster, String> {
    use dtl_compiler::tools::cluster::{Cluster, Device, Efficiency, Link, Node, PeakFlops};
    let best = |job: &dtl_runtime::calibrate::JobTimings, precision: &str| {
        job.matmuls
            .iter()
            .filter(|m| m.precision == precision)
            .map(|m| m.flops_per_second)
            .fold(0.0, f64::max)
    };
    let alone = &jobs[0];
    let fp32 = best(alone, "fp32");
    let bf16 = best(alone, "bf16");
    let share: Vec<f64> = jobs
        .iter()
        .map(|job| (best(job, "fp32") / fp32).min(1.0))
        .collect();
    // What training reaches of the best product: the layers' median.
    let mut layers: Vec<f64> = alone.layers.iter().map(|l| l.flops_per_second).collect();
    layers.sort_by(f64::total_cmp);
    let compute = (layers[layers.len() / 2] / fp32).min(1.0);
    let messages: Vec<_> = jobs.iter().flat_map(|j| j.messages.clone()).collect();
    let (latency, bandwidth) = dtl_runtime::calibrate::fit(&messages)
        .ok_or("the collectives' times fit no latency and bandwidth")?;
    let link = Link { bandwidth, latency };
    let mut sources = vec![format!(
        "measured on {} ({} cores, libtorch {} thread(s) a rank alone)",
        cpu_name(),
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        alone.threads
    )];
    for job in jobs {
        let rates: Vec<String> = job
            .matmuls
            .iter()
            .map(|m| {
                format!(
                    "{} {}: {:.2}",
                    m.precision,
                    m.size,
                    m.flops_per_second / 1e9
                )
            })
            .collect();
        let layers: Vec<String> = job
            .layers
            .iter()
            .map(|l| format!("{} × {}: {:.2}", l.rows, l.width, l.flops_per_second / 1e9))
            .collect();
        sources.push(format!(
            "{} rank(s), GFLOP/s a rank by n × n product: {}; by linear layer's training pass (fp32): {}; copy {:.2} GB/s; AdamW's update {:.2} GB/s",
            job.ranks,
            rates.join(", "),
            layers.join(", "),
            job.memory_bandwidth / 1e9,
            job.optimizer_bandwidth / 1e9
        ));
    }
    sources.push(format!(
        "link: least squares over {} all-reduces (ring formula) and ping-pongs of 4 KiB to 16 MiB; one machine, so network = the node's link",
        messages.len()
    ));
    let cluster = Cluster {
        name: format!("this machine ({}), measured", cpu_name()),
        device: Device {
            name: cpu_name(),
            peak_flops: PeakFlops {
                fp32,
                tf32: None,
                bf16: Some(bf16),
                fp16: None,
            },
            memory_bytes: memory_bytes()?,
            memory_bandwidth: alone.memory_bandwidth,
        },
        node: Node {
            devices: jobs.len() as u64,
            link,
            share,
        },
        network: link,
        efficiency: Efficiency {
            compute,
            network: 1.0,
            memory: (alone.optimizer_bandwidth / alone.memory_bandwidth).min(1.0),
        },
        sources,
    };
    cluster.check()?;
    Ok(cluster)
}

/// The processor's name, from /proc/cpuinfo.
#[cfg(feature = "runtime")]
fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, name)| name.trim().to_string())
        })
        .unwrap_or_else(|| "CPU".into())
}

/// The memory this machine has (MemTotal), in bytes.
#[cfg(feature = "runtime")]
fn memory_bytes() -> Result<u64, String> {
    let text = std::fs::read_to_string("/proc/meminfo")
        .map_err(|e| format!("cannot read /proc/meminfo: {e}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .ok_or_else(|| "no MemTotal in /proc/meminfo".into())
}
