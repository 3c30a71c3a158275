//! Neighbour search: the cell-list bodies ([`cell_list`]), their GPU drivers (one
//! warp per atom for the rows), the prefix sums between the passes, the kernels'
//! argument structs and their entry points.

pub mod args;
pub mod cell_list;
pub mod entries;

#[cfg(target_arch = "nvptx64")]
mod gpu;
#[cfg(target_arch = "nvptx64")]
mod scan;
