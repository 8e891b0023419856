//! The load generator against the real binary on its journal, small enough for CI: single
//! transfers over keep-alive connections and the batch endpoint, every transfer acknowledged,
//! every balance verified afterwards (the full-size runs are in docs/BENCHMARKS.md).

mod common;

use clap::Parser;
use common::*;
use ultracore_loadgen::{run, Args};

fn load(addr: &str, token: &str, extra: &[&str]) -> bool {
    let mut argv = vec![
        "ultracore-loadgen",
        "--url",
        addr,
        "--token",
        token,
        "--accounts",
        "50",
    ];
    argv.extend_from_slice(extra);
    let args = Args::parse_from(argv);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    match rt.block_on(run(args)) {
        Ok(good) => good,
        Err(e) => panic!("load generator failed: {}", e.0),
    }
}

#[test]
fn the_load_generator_posts_and_verifies_against_the_real_server() {
    let dir = temp("bin-load");
    let admin = token(&dir, "admin");
    let server = start(&dir);
    let url = format!("http://{}", server.addr);
    assert!(
        load(
            &url,
            &admin,
            &[
                "--connections",
                "8",
                "--transfers",
                "2000",
                "--run-id",
                "single"
            ]
        ),
        "single transfers: not all acknowledged or balances differ"
    );
    assert!(
        load(
            &url,
            &admin,
            &[
                "--mode",
                "batch",
                "--batch-size",
                "500",
                "--connections",
                "2",
                "--transfers",
                "5000",
                "--run-id",
                "batch"
            ]
        ),
        "batch: not all acknowledged or balances differ"
    );
}
