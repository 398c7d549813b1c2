//! `pdx`: the command-line front end of a pdx node. A thin binary: parsing,
//! rendering and exit codes here; everything else in the `pdx_node` library.
#![forbid(unsafe_code)]

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
