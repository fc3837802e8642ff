//! The `ydht` binary: all logic lives in the library.

fn main() -> std::process::ExitCode {
    ydht::cli::main()
}
