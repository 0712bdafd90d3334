//! Builds a layer index from a tar, as `strata pull` does, for trying `strata-fs -o layers=`
//! by hand: `build-index LAYER.tar DIR` writes DIR/data and DIR/index.

use std::path::Path;

use strata_fs::layer::index::{build_index, IndexLimits};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: build-index LAYER.tar DIR");
        std::process::exit(2);
    }
    let run = || -> Result<(), Box<dyn std::error::Error>> {
        let mut tar = std::io::BufReader::new(std::fs::File::open(&args[1])?);
        std::fs::create_dir_all(&args[2])?;
        let summary = build_index(&mut tar, Path::new(&args[2]), &IndexLimits::default())?;
        println!("{summary:?}");
        Ok(())
    };
    if let Err(e) = run() {
        eprintln!("build-index: {e}");
        std::process::exit(1);
    }
}
