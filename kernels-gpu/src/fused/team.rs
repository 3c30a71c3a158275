//! Who runs a fused kernel: a [`Team`] of threads that share one structure.
//!
//! On the GPU the team is one thread block: warps of 32 lanes, `bar.sync` between
//! phases. On the CPU the same kernel source runs with a [`SerialTeam`] (one thread
//! playing the whole block) or, in tests, with several OS threads and a barrier, so the
//! work split and the barriers of the GPU code are exercised on the CPU too. The
//! kernels only use what this trait offers: strided loops over work items, one warp per
//! row with lanes over channels, warp sums, and block barriers.

/// The threads that run one structure's kernel together.
pub trait Team {
    /// This thread's index in the team, and the team's size.
    fn thread(&self) -> usize;
    fn threads(&self) -> usize;
    /// This thread's warp and lane; a warp has `lanes()` threads.
    fn warp(&self) -> usize;
    fn warps(&self) -> usize;
    fn lane(&self) -> usize;
    fn lanes(&self) -> usize;
    /// Barrier: what any thread wrote before it, every thread reads after it.
    fn sync(&self);
    /// A barrier that also returns whether `flag` held in any thread.
    fn sync_any(&self, flag: bool) -> bool;
    /// Sum over the calling warp's lanes, returned to every lane. Every lane of the
    /// warp must call it.
    fn warp_sum(&self, x: f32) -> f32;
}

/// `start, start + step, …` below `end` (a `step_by` that compiles to a plain loop on
/// the GPU).
#[derive(Clone, Copy)]
pub struct Strided {
    next: usize,
    end: usize,
    step: usize,
}

impl Iterator for Strided {
    type Item = usize;
    #[inline(always)]
    fn next(&mut self) -> Option<usize> {
        if self.next < self.end {
            let item = self.next;
            self.next += self.step;
            Some(item)
        } else {
            None
        }
    }
}

/// This thread's share of `n` work items.
#[inline(always)]
pub fn items<T: Team>(team: &T, n: usize) -> Strided {
    Strided { next: team.thread(), end: n, step: team.threads() }
}

/// This warp's share of `n` rows (every lane of the warp gets the same rows).
#[inline(always)]
pub fn warp_rows<T: Team>(team: &T, n: usize) -> Strided {
    Strided { next: team.warp(), end: n, step: team.warps() }
}

/// The first channel of each chunk of `lanes()` channels below `n`: lane l owns channel
/// `chunk + l` of each (all lanes run every chunk, so warp sums inside stay legal).
#[inline(always)]
pub fn lane_chunks<T: Team>(team: &T, n: usize) -> Strided {
    Strided { next: 0, end: n, step: team.lanes() }
}

/// Channels come in groups of this many: an edge pass's task is (receiver, group), and
/// on the GPU a group is one channel per lane.
pub const CHANNEL_GROUP: usize = 32;

/// Channel groups of `n` channels.
#[inline(always)]
pub const fn channel_groups(n: usize) -> usize {
    n.div_ceil(CHANNEL_GROUP)
}

/// The chunk starts of channel group `group` of `n` channels: lane l owns channel
/// `chunk + l` of each chunk while it is below the group's end (one chunk on the GPU,
/// 32 on a one-lane team). All lanes run every chunk, so warp sums inside stay legal.
#[inline(always)]
pub fn group_chunks<T: Team>(team: &T, group: usize, n: usize) -> (Strided, usize) {
    let start = group * CHANNEL_GROUP;
    let end = if start + CHANNEL_GROUP < n { start + CHANNEL_GROUP } else { n };
    (Strided { next: start, end, step: team.lanes() }, end)
}

/// One CPU thread playing the whole team: one warp of one lane, barriers are no-ops.
#[derive(Clone, Copy, Default)]
pub struct SerialTeam;

impl Team for SerialTeam {
    fn thread(&self) -> usize {
        0
    }
    fn threads(&self) -> usize {
        1
    }
    fn warp(&self) -> usize {
        0
    }
    fn warps(&self) -> usize {
        1
    }
    fn lane(&self) -> usize {
        0
    }
    fn lanes(&self) -> usize {
        1
    }
    fn sync(&self) {}
    fn sync_any(&self, flag: bool) -> bool {
        flag
    }
    fn warp_sum(&self, x: f32) -> f32 {
        x
    }
}

/// The calling thread block (1-D, a multiple of 32 threads).
#[cfg(target_arch = "nvptx64")]
#[derive(Clone, Copy)]
pub struct BlockTeam;

#[cfg(target_arch = "nvptx64")]
impl Team for BlockTeam {
    #[inline(always)]
    fn thread(&self) -> usize {
        crate::device::gpu::thread_idx()
    }
    #[inline(always)]
    fn threads(&self) -> usize {
        crate::device::gpu::block_dim()
    }
    #[inline(always)]
    fn warp(&self) -> usize {
        crate::device::gpu::warp_id()
    }
    #[inline(always)]
    fn warps(&self) -> usize {
        crate::device::gpu::block_dim() / crate::device::WARP_SIZE
    }
    #[inline(always)]
    fn lane(&self) -> usize {
        crate::device::gpu::lane_id()
    }
    #[inline(always)]
    fn lanes(&self) -> usize {
        crate::device::WARP_SIZE
    }
    #[inline(always)]
    fn sync(&self) {
        crate::device::gpu::sync_threads()
    }
    #[inline(always)]
    fn sync_any(&self, flag: bool) -> bool {
        crate::device::gpu::sync_threads_or(flag)
    }
    #[inline(always)]
    fn warp_sum(&self, x: f32) -> f32 {
        crate::device::gpu::warp_reduce_sum(x)
    }
}
