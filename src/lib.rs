#![doc = include_str!("../README.md")]

pub mod device;
pub mod serve;

pub use pulserec_core as core;
pub use pulserec_data as data;
