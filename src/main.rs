#![forbid(unsafe_code)]
use clap::Parser;
use trustform::cli;

fn main() -> std::process::ExitCode {
    miette::set_hook(Box::new(|_| {
        Box::new(
            miette::MietteHandlerOpts::new()
                .color(std::env::var_os("NO_COLOR").is_none())
                .width(100)
                .build(),
        )
    }))
    .ok();
    let parsed = cli::Cli::parse_from(cli::normalize_args(std::env::args()));
    match cli::run(parsed) {
        Ok(code) => std::process::ExitCode::from(code as u8),
        Err(report) => {
            eprintln!("{report:?}");
            std::process::ExitCode::from(1)
        }
    }
}
