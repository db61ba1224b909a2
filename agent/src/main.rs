use clap::Parser;
use cluster_lab::cli::Cli;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    cluster_lab::logging::init(cli.verbose);
    match cli.command.run() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("cluster-lab: error: {err:#}");
            std::process::ExitCode::from(2)
        }
    }
}
