//! `dtl calibrate`: this machine measured, for the cluster description
//! `dtl explain --cluster` and `dtl layout` predict with.
//!
//! A job of k ranks (k = 1 in the calling process, k ≥ 2 started through
//! `mpirun` as `dtl calibrate --job`) measures, on every rank at once:
//! - matrix products (n × n by n × n) at a few sizes, float32 and
//!   bfloat16: what one rank gets of the machine while k ranks compute;
//! - a float32 linear layer's training pass (forward, ReLU, backward into
//!   the weight and the input) at a few shapes: what a training step
//!   reaches of the products' best;
//! - AdamW's update of 4 Mi values by dtl's own optimizer: what the
//!   optimizer step reaches of the memory bandwidth;
//! - a copy through memory, in bytes read and written a second;
//! - with k ≥ 2, all-reduces of float32 tensors from 4 KiB to 16 MiB over
//!   the k ranks and, between ranks 0 and 1, a ping-pong of the same sizes
//!   (half a round trip each).
//!
//! Rank 0's figures are the job's. [`fit`] turns the collectives' times
//! into one latency and one bandwidth by least squares over relative
//! errors.

use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::comm::{Communicator, ReduceOp};
use crate::error::RunError;

/// The matrix sizes the products are timed at.
pub const MATMUL_SIZES: [i64; 4] = [128, 256, 512, 1024];

/// The message sizes of the collectives, in bytes.
pub const MESSAGE_BYTES: [u64; 6] = [4 << 10, 32 << 10, 256 << 10, 1 << 20, 4 << 20, 16 << 20];

/// How long each figure is timed for, at least.
const SECONDS_EACH: f64 = 0.25;

/// What one job of `ranks` ranks measured on rank 0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobTimings {
    pub ranks: usize,
    /// libtorch's threads on each rank.
    pub threads: usize,
    pub matmuls: Vec<Matmul>,
    /// Linear layers' training passes, float32.
    pub layers: Vec<Layer>,
    /// Bytes read and written a second by a copy.
    pub memory_bandwidth: f64,
    /// Bytes a second AdamW's update moves, counted as the prediction
    /// counts them.
    pub optimizer_bandwidth: f64,
    pub messages: Vec<Message>,
}

/// One matrix product's rate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Matmul {
    /// `fp32` or `bf16`.
    pub precision: String,
    pub size: i64,
    pub flops_per_second: f64,
}

/// One linear layer's training pass: its rate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Layer {
    pub rows: i64,
    pub width: i64,
    pub flops_per_second: f64,
}

/// One collective's time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub collective: Collective,
    pub ranks: usize,
    pub bytes: u64,
    pub seconds: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Collective {
    /// A ring all-reduce: 2(k − 1) messages of bytes / k.
    AllReduce,
    /// One message, from one rank to another.
    Send,
}

impl Message {
    /// The messages and the bytes each rank sends, by the formula the
    /// prediction uses.
    fn sent(&self) -> (f64, f64) {
        let k = self.ranks as f64;
        match self.collective {
            Collective::AllReduce => (2.0 * (k - 1.0), 2.0 * (k - 1.0) / k * self.bytes as f64),
            Collective::Send => (1.0, self.bytes as f64),
        }
    }
}

fn torch(what: &str) -> impl Fn(tch::TchError) -> RunError + '_ {
    move |e| RunError::Torch {
        context: format!("calibrate: {what}"),
        message: e.to_string(),
    }
}

fn comm(what: &str) -> impl Fn(crate::comm::CommError) -> RunError + '_ {
    move |e| RunError::Backend {
        message: format!("calibrate: {what}: {}", e.0),
    }
}

/// Seconds a call of `f` takes: once to warm up, then as many calls as
/// [`SECONDS_EACH`] holds (at least 3), their mean.
fn time_of(mut f: impl FnMut() -> Result<(), RunError>) -> Result<f64, RunError> {
    f()?;
    let started = Instant::now();
    let mut calls = 0u32;
    while calls < 3 || started.elapsed().as_secs_f64() < SECONDS_EACH {
        f()?;
        calls += 1;
    }
    Ok(started.elapsed().as_secs_f64() / f64::from(calls))
}

/// The rate of n × n products at `kind`, in FLOP/s (2n³ a product).
pub fn matmul(kind: Kind, n: i64) -> Result<f64, RunError> {
    let a = Tensor::f_randn([n, n], (kind, Device::Cpu)).map_err(torch("allocate"))?;
    let b = Tensor::f_randn([n, n], (kind, Device::Cpu)).map_err(torch("allocate"))?;
    let out = Tensor::f_zeros([n, n], (kind, Device::Cpu)).map_err(torch("allocate"))?;
    let seconds = time_of(|| {
        out.f_matmul_out(&a, &b)
            .map(|_| ())
            .map_err(torch("matmul"))
    })?;
    Ok(2.0 * (n as f64).powi(3) / seconds)
}

/// The shapes (rows, width) a linear layer's training pass is timed at.
pub const LAYER_SHAPES: [(i64, i64); 3] = [(256, 256), (256, 1024), (1024, 1024)];

/// The FLOP/s a float32 linear layer's training pass reaches: `rows` × w
/// by w × w, a ReLU, and backward into both the weight and the input (3
/// products of 2·rows·w² FLOPs), the gradients accumulating.
pub fn layer_rate(rows: i64, width: i64) -> Result<f64, RunError> {
    let options = (Kind::Float, Device::Cpu);
    let x = Tensor::f_randn([rows, width], options)
        .map_err(torch("allocate"))?
        .set_requires_grad(true);
    let w = Tensor::f_randn([width, width], options)
        .map_err(torch("allocate"))?
        .set_requires_grad(true);
    let seconds = time_of(|| {
        let y = x
            .f_matmul(&w)
            .and_then(|y| y.f_relu())
            .map_err(torch("forward"))?;
        y.f_sum(Kind::Float)
            .and_then(|l| l.f_backward())
            .map_err(torch("backward"))
    })?;
    Ok(3.0 * 2.0 * (rows * width * width) as f64 / seconds)
}

/// The bytes a second AdamW's update of 4 Mi float32 values moves, by
/// the prediction's count (7 values each: the parameter, its gradient and
/// two moments read, the parameter and the moments written), with dtl's
/// own optimizer.
pub fn optimizer_rate() -> Result<f64, RunError> {
    use dtl_compiler::plan::Optimizer as Plan;
    let values = 4 << 20;
    let options = (Kind::Float, Device::Cpu);
    let param = Tensor::f_randn([values], options).map_err(torch("allocate"))?;
    let grad = Tensor::f_randn([values], options).map_err(torch("allocate"))?;
    let plan = Plan::AdamW {
        lr: 1e-3,
        betas: [0.9, 0.999],
        eps: 1e-8,
        weight_decay: 0.01,
    };
    let mut optimizer = crate::optim::Optimizer::new(&plan, &["w"], &[]);
    let seconds = time_of(|| {
        let pair = (param.shallow_clone(), Some(grad.shallow_clone()));
        optimizer.step_pairs(vec![pair], 1e-3)
    })?;
    Ok(7.0 * 4.0 * values as f64 / seconds)
}

/// Bytes read and written a second by copying 64 MiB of float32 values.
pub fn memory_bandwidth() -> Result<f64, RunError> {
    let values = 16 << 20;
    let from = Tensor::f_ones([values], (Kind::Float, Device::Cpu)).map_err(torch("allocate"))?;
    let mut to =
        Tensor::f_zeros([values], (Kind::Float, Device::Cpu)).map_err(torch("allocate"))?;
    let seconds = time_of(|| to.f_copy_(&from).map_err(torch("copy")))?;
    Ok(2.0 * 4.0 * values as f64 / seconds)
}

/// One rank of a `dtl calibrate --job` started through `mpirun` (or the
/// calling process alone, outside one): joins the world, takes its share
/// of the cores as a training rank does, measures, and rank 0 writes its
/// figures to `folder`/job.json.
pub fn job(folder: &Path) -> Result<(), RunError> {
    let world = crate::world::world_communicator()?;
    crate::launch::share_cores(crate::world::local_size());
    if let Some(timings) = measure(world.as_ref())? {
        write(&timings, &folder.join("job.json"))?;
    }
    Ok(())
}

/// Every rank of `world` measures at once; rank 0's figures come back
/// (`None` on the others). With one rank, no collectives.
pub fn measure(world: &dyn Communicator) -> Result<Option<JobTimings>, RunError> {
    let ranks = world.size();
    let mut matmuls = Vec::new();
    for (precision, kind) in [("fp32", Kind::Float), ("bf16", Kind::BFloat16)] {
        for n in MATMUL_SIZES {
            barrier(world)?;
            matmuls.push(Matmul {
                precision: precision.into(),
                size: n,
                flops_per_second: matmul(kind, n)?,
            });
        }
    }
    let mut layers = Vec::new();
    for (rows, width) in LAYER_SHAPES {
        barrier(world)?;
        layers.push(Layer {
            rows,
            width,
            flops_per_second: layer_rate(rows, width)?,
        });
    }
    barrier(world)?;
    let memory_bandwidth = memory_bandwidth()?;
    barrier(world)?;
    let optimizer_bandwidth = optimizer_rate()?;
    let mut messages = Vec::new();
    if ranks > 1 {
        for bytes in MESSAGE_BYTES {
            messages.push(all_reduce(world, bytes)?);
            messages.push(ping_pong(world, bytes)?);
        }
    }
    let timings = JobTimings {
        ranks,
        threads: tch::get_num_threads().max(1) as usize,
        matmuls,
        layers,
        memory_bandwidth,
        optimizer_bandwidth,
        messages,
    };
    Ok((world.rank() == 0).then_some(timings))
}

/// Every rank here before any goes on.
fn barrier(world: &dyn Communicator) -> Result<(), RunError> {
    world
        .all_reduce_host(&mut [0.0], ReduceOp::Sum)
        .map_err(comm("barrier"))
}

fn all_reduce(world: &dyn Communicator, bytes: u64) -> Result<Message, RunError> {
    let mut t = Tensor::f_ones([(bytes / 4) as i64], (Kind::Float, Device::Cpu))
        .map_err(torch("allocate"))?;
    let mut reduce = || {
        world
            .all_reduce(&mut t, ReduceOp::Sum)
            .map_err(comm("all-reduce"))
    };
    // Every rank must run as many: the count is agreed first, from the
    // slowest rank's first call.
    reduce()?;
    let started = Instant::now();
    reduce()?;
    let mut calls = [SECONDS_EACH / started.elapsed().as_secs_f64().max(1e-9)];
    world
        .all_reduce_host(&mut calls, ReduceOp::Min)
        .map_err(comm("all-reduce"))?;
    let calls = calls[0].clamp(3.0, 10_000.0) as u32;
    barrier(world)?;
    let started = Instant::now();
    for _ in 0..calls {
        reduce()?;
    }
    let seconds = started.elapsed().as_secs_f64() / f64::from(calls);
    // The slowest rank's time: the collective ends for all when it ends.
    let mut worst = [seconds];
    world
        .all_reduce_host(&mut worst, ReduceOp::Max)
        .map_err(comm("all-reduce"))?;
    Ok(Message {
        collective: Collective::AllReduce,
        ranks: world.size(),
        bytes,
        seconds: worst[0],
    })
}

/// Rank 0 sends to rank 1, which sends it back: half a round trip.
/// Every rank takes part in the timing loop's agreement (the others idle).
fn ping_pong(world: &dyn Communicator, bytes: u64) -> Result<Message, RunError> {
    let mut t = Tensor::f_ones([(bytes / 4) as i64], (Kind::Float, Device::Cpu))
        .map_err(torch("allocate"))?;
    let rank = world.rank();
    let mut trips = [0.0];
    if rank == 0 {
        // Rank 0 times, and after each trip tells rank 1 whether another
        // follows.
        let started = Instant::now();
        let mut n = 0u32;
        loop {
            world.send(&t, 1).map_err(comm("send"))?;
            world.recv(&mut t, 1).map_err(comm("receive"))?;
            n += 1;
            // Decided once, and said: rank 1 makes exactly these trips.
            let more = n < 3 || started.elapsed().as_secs_f64() < SECONDS_EACH;
            let flag = Tensor::from_slice(&[f64::from(u8::from(more))]);
            world.send(&flag, 1).map_err(comm("send"))?;
            if !more {
                break;
            }
        }
        trips[0] = started.elapsed().as_secs_f64() / f64::from(n) / 2.0;
    } else if rank == 1 {
        loop {
            world.recv(&mut t, 0).map_err(comm("receive"))?;
            world.send(&t, 0).map_err(comm("send"))?;
            let mut flag = Tensor::from_slice(&[0.0f64]);
            world.recv(&mut flag, 0).map_err(comm("receive"))?;
            if flag.double_value(&[0]) == 0.0 {
                break;
            }
        }
    }
    world
        .all_reduce_host(&mut trips, ReduceOp::Max)
        .map_err(comm("ping-pong"))?;
    Ok(Message {
        collective: Collective::Send,
        ranks: 2,
        bytes,
        seconds: trips[0],
    })
}

/// The latency (seconds a message) and bandwidth (bytes a second) that
/// fit `messages` best: t = m·latency + bytes/bandwidth with m and bytes
/// by each collective's formula, least squares over the relative errors
/// (each equation divided by its time, so that small messages count as
/// much as large ones). `None` without two messages of different shapes.
pub fn fit(messages: &[Message]) -> Option<(f64, f64)> {
    // Normal equations of min Σ ((m·a + v·b − t) / t)², a = latency,
    // b = 1 / bandwidth.
    let (mut mm, mut mv, mut vv, mut mt, mut vt) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for message in messages {
        let (m, v) = message.sent();
        let (m, v, t) = (m / message.seconds, v / message.seconds, 1.0);
        mm += m * m;
        mv += m * v;
        vv += v * v;
        mt += m * t;
        vt += v * t;
    }
    let det = mm * vv - mv * mv;
    if messages.len() < 2 || det.abs() <= f64::EPSILON * mm * vv {
        return None;
    }
    let latency = (mt * vv - vt * mv) / det;
    let inverse_bandwidth = (vt * mm - mt * mv) / det;
    match (latency, inverse_bandwidth) {
        (a, b) if a >= 0.0 && b > 0.0 => Some((a, 1.0 / b)),
        // A negative latency: the bandwidth alone, through the origin.
        (_, _) if vv > 0.0 => Some((0.0, vv / vt)),
        _ => None,
    }
}

/// Writes rank 0's figures as JSON to `path`, whole or not at all.
pub fn write(timings: &JobTimings, path: &Path) -> Result<(), RunError> {
    let text = serde_json::to_string_pretty(timings).expect("timings serialize");
    crate::output::write_atomic(path, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(collective: Collective, ranks: usize, bytes: u64, a: f64, bw: f64) -> Message {
        let mut m = Message {
            collective,
            ranks,
            bytes,
            seconds: 1.0,
        };
        let (n, v) = m.sent();
        m.seconds = n * a + v / bw;
        m
    }

    #[test]
    fn the_fit_finds_the_latency_and_bandwidth_the_times_were_made_with() {
        let (a, bw) = (20e-6, 3e9);
        let mut messages = Vec::new();
        for bytes in MESSAGE_BYTES {
            messages.push(message(Collective::AllReduce, 2, bytes, a, bw));
            messages.push(message(Collective::AllReduce, 4, bytes, a, bw));
            messages.push(message(Collective::Send, 2, bytes, a, bw));
        }
        let (latency, bandwidth) = fit(&messages).unwrap();
        assert!((latency - a).abs() < 1e-12, "{latency}");
        assert!((bandwidth / bw - 1.0).abs() < 1e-9, "{bandwidth}");
        assert_eq!(fit(&messages[..1]), None);
    }
}
