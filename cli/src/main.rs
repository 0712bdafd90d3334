//! The `strata` command. Image and container commands arrive with their issues; today the
//! union filesystem is reached through the `strata-fs` binary.

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--version") | Some("version") => {
            println!("strata {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        _ => anyhow::bail!(
            "strata: no commands yet besides `version`; mount a union with `strata-fs -o lowerdir=…`"
        ),
    }
}
