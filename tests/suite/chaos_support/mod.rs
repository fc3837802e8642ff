//! Support code of the chaos suite: a linearizability checker for registers,
//! a fault-injecting TCP proxy and a tmpfs mount guard, each with its own tests.

pub mod linearizability;
pub mod proxy;
pub mod tmpfs;
