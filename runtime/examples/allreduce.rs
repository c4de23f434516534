//! The MPI backend's all-reduce, timed: for each size, a float32 tensor
//! summed in place over every rank, `--repeat` times after a warm-up; the
//! median on rank 0's stdout. Also the same reduction through rsmpi's safe
//! API, which has no in-place form (a scratch buffer, then a copy back):
//! the measured reason the backend uses MPI_IN_PLACE.
//!
//!     mpirun -n 2 --bind-to none target/release/examples/allreduce \
//!         --megabytes 1,16,64 --repeat 20 --json
//!
//! `benches/allreduce.py` runs it beside torch.distributed's gloo.

use std::time::Instant;

use dtl_runtime::comm::mpi::Mpi;
use dtl_runtime::comm::{Communicator, ReduceOp};
use tch::Tensor;

struct Args {
    megabytes: Vec<f64>,
    repeat: usize,
    json: bool,
}

fn args() -> Args {
    let mut out = Args {
        megabytes: vec![1.0, 16.0, 64.0],
        repeat: 20,
        json: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--megabytes" => {
                out.megabytes = it
                    .next()
                    .expect("--megabytes needs a list")
                    .split(',')
                    .map(|m| m.parse().expect("--megabytes: numbers"))
                    .collect();
            }
            "--repeat" => out.repeat = it.next().and_then(|n| n.parse().ok()).expect("--repeat N"),
            "--json" => out.json = true,
            other => panic!("unknown argument {other}"),
        }
    }
    out
}

fn median(mut seconds: Vec<f64>) -> f64 {
    seconds.sort_by(f64::total_cmp);
    seconds[seconds.len() / 2]
}

/// Times `f` `repeat` times after three warm-up calls, each call started
/// together on every rank (a barrier-like all-reduce of one value first).
fn time(comm: &Mpi, repeat: usize, mut f: impl FnMut()) -> f64 {
    let mut seconds = Vec::with_capacity(repeat);
    for i in 0..repeat + 3 {
        let mut sync = [0.0];
        comm.all_reduce_host(&mut sync, ReduceOp::Sum)
            .expect("sync");
        let start = Instant::now();
        f();
        if i >= 3 {
            seconds.push(start.elapsed().as_secs_f64());
        }
    }
    // The slowest rank's median is the collective's time.
    let mut m = [median(seconds)];
    comm.all_reduce_host(&mut m, ReduceOp::Max).expect("max");
    m[0]
}

fn main() {
    let args = args();
    let comm = Mpi::init().expect("MPI starts");
    let world = comm.world_handle();
    let mut results = Vec::new();
    for &mb in &args.megabytes {
        let n = (mb * 1024.0 * 1024.0 / 4.0) as i64;
        let mut tensor = Tensor::ones([n], (tch::Kind::Float, tch::Device::Cpu));
        let in_place = time(&comm, args.repeat, || {
            comm.all_reduce(&mut tensor, ReduceOp::Sum)
                .expect("all-reduce");
        });
        // rsmpi's safe API: send buffer, scratch receive buffer, copy back.
        let mut values = vec![1.0f32; n as usize];
        let mut scratch = vec![0.0f32; n as usize];
        let scratch_time = time(&comm, args.repeat, || {
            use mpi::collective::SystemOperation;
            use mpi::traits::CommunicatorCollectives;
            world.all_reduce_into(&values[..], &mut scratch[..], SystemOperation::sum());
            values.copy_from_slice(&scratch);
        });
        results.push((mb, in_place, scratch_time));
    }
    if comm.rank() != 0 {
        return;
    }
    if args.json {
        let rows: Vec<serde_json::Value> = results
            .iter()
            .map(|(mb, t, s)| {
                serde_json::json!({"megabytes": mb, "seconds_median": t, "scratch_seconds_median": s})
            })
            .collect();
        let report = serde_json::json!({
            "backend": "mpi",
            "ranks": comm.size(),
            "library": Mpi::library_version().lines().next().unwrap_or(""),
            "results": rows,
        });
        println!("{report}");
    } else {
        println!(
            "ranks {}  {}",
            comm.size(),
            Mpi::library_version().lines().next().unwrap_or("")
        );
        for (mb, t, s) in results {
            println!(
                "{mb:>6} MB  in place {:>8.3} ms ({:>7.0} MB/s)  scratch + copy {:>8.3} ms",
                t * 1e3,
                mb / t,
                s * 1e3
            );
        }
    }
}
