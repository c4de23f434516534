//! Every rank of the layout, spelt out: its coordinates, the rows of each
//! global micro-batch it reads, and the communicator groups it belongs to.
//! The one place rank numbers are computed; the runtime reads the result.

use crate::plan::{CommGroup, GroupKind, Parallelism, RankPlan, RowSlice};

/// The ranks of `layout` and its communicator groups, for replicas that
/// each read `micro_batch` rows of every global micro-batch.
///
/// Rank r = (stage × D + replica) × T + tensor rank: the T ranks that
/// split a replica's stage are adjacent (their all-reduces run every
/// layer: one machine, in a real cluster), then the D replicas of a stage
/// (the gradient all-reduce, the next busiest).
pub(super) fn ranks(layout: &Parallelism, micro_batch: u64) -> (Vec<RankPlan>, Vec<CommGroup>) {
    let (d, p, t) = (layout.data, layout.pipeline, layout.tensor);
    let rank = |replica: u64, stage: u64, tensor: u64| (stage * d + replica) * t + tensor;
    let mut communicators = Vec::new();
    // The groups of each kind, one per value of the coordinates they share.
    if d > 1 {
        for stage in 0..p {
            for tensor in 0..t {
                communicators.push(CommGroup {
                    kind: GroupKind::Replicas,
                    ranks: (0..d).map(|replica| rank(replica, stage, tensor)).collect(),
                });
            }
        }
    }
    if p > 1 {
        for replica in 0..d {
            for tensor in 0..t {
                communicators.push(CommGroup {
                    kind: GroupKind::Pipeline,
                    ranks: (0..p).map(|stage| rank(replica, stage, tensor)).collect(),
                });
            }
        }
    }
    // Hybrid sharding: groups of k consecutive replicas split the state,
    // and the replicas at the same place in each group hold one slice.
    let k = layout.shard_degree();
    if k > 1 && k < d {
        for stage in 0..p {
            for tensor in 0..t {
                for group in 0..d / k {
                    communicators.push(CommGroup {
                        kind: GroupKind::Shard,
                        ranks: (0..k).map(|i| rank(group * k + i, stage, tensor)).collect(),
                    });
                }
                for place in 0..k {
                    communicators.push(CommGroup {
                        kind: GroupKind::Replicate,
                        ranks: (0..d / k)
                            .map(|g| rank(g * k + place, stage, tensor))
                            .collect(),
                    });
                }
            }
        }
    }
    if t > 1 {
        for stage in 0..p {
            for replica in 0..d {
                communicators.push(CommGroup {
                    kind: GroupKind::Tensor,
                    ranks: (0..t).map(|tensor| rank(replica, stage, tensor)).collect(),
                });
            }
        }
    }
    // Sync groups (`groups`): n consecutive replicas train in sync (their
    // gradients averaged every step), and the replicas at the same place
    // in each group meet across them.
    let (groups, n) = (layout.sync_groups(), layout.group_size());
    if layout.groups > 0 && d > 1 {
        for stage in 0..p {
            for tensor in 0..t {
                if n > 1 {
                    for g in 0..groups {
                        communicators.push(CommGroup {
                            kind: GroupKind::Group,
                            ranks: (0..n).map(|i| rank(g * n + i, stage, tensor)).collect(),
                        });
                    }
                }
                if groups > 1 {
                    for place in 0..n {
                        communicators.push(CommGroup {
                            kind: GroupKind::Across,
                            ranks: (0..groups)
                                .map(|g| rank(g * n + place, stage, tensor))
                                .collect(),
                        });
                    }
                }
            }
        }
    }
    let mut ranks: Vec<RankPlan> = (0..d * p * t)
        .map(|r| {
            let replica = (r / t) % d;
            RankPlan {
                rank: r,
                replica,
                stage: r / t / d,
                tensor: r % t,
                shard: replica % k,
                sync_group: if layout.groups > 0 { replica / n } else { 0 },
                // The ranks of a tensor group read the same rows.
                rows: RowSlice {
                    first: replica * micro_batch,
                    count: micro_batch,
                },
                communicators: Vec::new(),
            }
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
    fn tensor_ranks_are_adjacent_and_read_their_replicas_rows() {
        let layout = Parallelism {
            data: 2,
            pipeline: 2,
            tensor: 2,
            ..Parallelism::single()
        };
        let (ranks, groups) = ranks(&layout, 4);
        let members: Vec<(GroupKind, Vec<u64>)> =
            groups.iter().map(|g| (g.kind, g.ranks.clone())).collect();
        assert_eq!(
            members,
            [
                (GroupKind::Replicas, vec![0, 2]),
                (GroupKind::Replicas, vec![1, 3]),
                (GroupKind::Replicas, vec![4, 6]),
                (GroupKind::Replicas, vec![5, 7]),
                (GroupKind::Pipeline, vec![0, 4]),
                (GroupKind::Pipeline, vec![1, 5]),
                (GroupKind::Pipeline, vec![2, 6]),
                (GroupKind::Pipeline, vec![3, 7]),
                (GroupKind::Tensor, vec![0, 1]),
                (GroupKind::Tensor, vec![2, 3]),
                (GroupKind::Tensor, vec![4, 5]),
                (GroupKind::Tensor, vec![6, 7]),
            ]
        );
        let coordinates: Vec<(u64, u64, u64, u64)> = ranks
            .iter()
            .map(|r| (r.replica, r.stage, r.tensor, r.rows.first))
            .collect();
        assert_eq!(
            coordinates,
            [
                (0, 0, 0, 0),
                (0, 0, 1, 0),
                (1, 0, 0, 4),
                (1, 0, 1, 4),
                (0, 1, 0, 0),
                (0, 1, 1, 0),
                (1, 1, 0, 4),
                (1, 1, 1, 4),
            ]
        );
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
