//! Every rank of the layout, spelt out: its coordinates, the rows of each
//! global micro-batch it reads, and the communicator groups it belongs to.
//! The one place rank numbers are computed; the runtime reads the result.

use crate::plan::{CommGroup, GroupKind, Parallelism, RankPlan, RowSlice};

/// The ranks of `layout` and its communicator groups, for replicas that
/// each read `micro_batch` rows of every global micro-batch.
///
/// Rank r = stage × D + replica: the D replicas of a stage are
/// consecutive, so that the gradient all-reduce, the busiest collective,
/// runs among neighbours (ranks on one machine, in a real cluster).
pub(super) fn ranks(layout: &Parallelism, micro_batch: u64) -> (Vec<RankPlan>, Vec<CommGroup>) {
    let (d, p) = (layout.data, layout.pipeline);
    let rank = |replica: u64, stage: u64| stage * d + replica;
    let mut communicators = Vec::new();
    // The groups of each kind, one per value of the coordinates they share.
    if d > 1 {
        for stage in 0..p {
            communicators.push(CommGroup {
                kind: GroupKind::Replicas,
                ranks: (0..d).map(|replica| rank(replica, stage)).collect(),
            });
        }
    }
    if p > 1 {
        for replica in 0..d {
            communicators.push(CommGroup {
                kind: GroupKind::Pipeline,
                ranks: (0..p).map(|stage| rank(replica, stage)).collect(),
            });
        }
    }
    // Hybrid sharding: groups of k consecutive replicas split the state,
    // and the replicas at the same place in each group hold one slice.
    let k = layout.shard_degree();
    if k > 1 && k < d {
        for stage in 0..p {
            for group in 0..d / k {
                communicators.push(CommGroup {
                    kind: GroupKind::Shard,
                    ranks: (0..k).map(|i| rank(group * k + i, stage)).collect(),
                });
            }
            for place in 0..k {
                communicators.push(CommGroup {
                    kind: GroupKind::Replicate,
                    ranks: (0..d / k).map(|g| rank(g * k + place, stage)).collect(),
                });
            }
        }
    }
    let mut ranks: Vec<RankPlan> = (0..d * p)
        .map(|r| RankPlan {
            rank: r,
            replica: r % d,
            stage: r / d,
            tensor: 0,
            shard: (r % d) % k,
            sync_group: 0,
            rows: RowSlice {
                first: (r % d) * micro_batch,
                count: micro_batch,
            },
            communicators: Vec::new(),
        })
        .collect();
    for (index, group) in communicators.iter().enumerate() {
        for &r in &group.ranks {
            ranks[r as usize].communicators.push(index as u64);
        }
    }
    (ranks, communicators)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_two_by_two_grid_has_two_replica_groups_and_two_pipelines() {
        let layout = Parallelism {
            data: 2,
            pipeline: 2,
            ..Parallelism::single()
        };
        let (ranks, groups) = ranks(&layout, 16);
        let members: Vec<(GroupKind, Vec<u64>)> =
            groups.iter().map(|g| (g.kind, g.ranks.clone())).collect();
        assert_eq!(
            members,
            [
                (GroupKind::Replicas, vec![0, 1]),
                (GroupKind::Replicas, vec![2, 3]),
                (GroupKind::Pipeline, vec![0, 2]),
                (GroupKind::Pipeline, vec![1, 3]),
            ]
        );
        let rank3 = &ranks[3];
        assert_eq!((rank3.replica, rank3.stage), (1, 1));
        assert_eq!(
            rank3.rows,
            RowSlice {
                first: 16,
                count: 16
            }
        );
        assert_eq!(rank3.communicators, [1, 3]);
    }

    #[test]
    fn hybrid_sharding_groups_consecutive_replicas_and_their_copies() {
        let layout = Parallelism {
            data: 4,
            shard: crate::plan::Shard::Optimizer,
            shard_group: 2,
            ..Parallelism::single()
        };
        let (ranks, groups) = ranks(&layout, 8);
        let members: Vec<(GroupKind, Vec<u64>)> =
            groups.iter().map(|g| (g.kind, g.ranks.clone())).collect();
        assert_eq!(
            members,
            [
                (GroupKind::Replicas, vec![0, 1, 2, 3]),
                (GroupKind::Shard, vec![0, 1]),
                (GroupKind::Shard, vec![2, 3]),
                (GroupKind::Replicate, vec![0, 2]),
                (GroupKind::Replicate, vec![1, 3]),
            ]
        );
        let places: Vec<u64> = ranks.iter().map(|r| r.shard).collect();
        assert_eq!(places, [0, 1, 0, 1]);
        assert_eq!(ranks[2].communicators, [0, 2, 3]);
    }

    #[test]
    fn one_process_belongs_to_no_group() {
        let (ranks, groups) = ranks(&Parallelism::single(), 8);
        assert!(groups.is_empty());
        assert_eq!(ranks.len(), 1);
        assert!(ranks[0].communicators.is_empty());
        assert_eq!(ranks[0].rows, RowSlice { first: 0, count: 8 });
    }
}
