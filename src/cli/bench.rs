use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum BenchCommand {}

pub fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {}
}
