//! The `ultracore-loadgen` command; everything it does is in the library (`run`), so tests
//! can drive a server with it too.

use clap::Parser;
use ultracore_loadgen::{run, Args, Fail};

fn main() {
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    match rt.block_on(run(args)) {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(Fail(e)) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    }
}
