//! Empty library target: lets `lockrace` list this crate as a build-dependency so cargo rebuilds
//! the eBPF object when it changes (the programs live in the `lockrace` binary target).
#![no_std]
