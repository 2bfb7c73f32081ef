fn main() -> std::process::ExitCode {
    sonde::cli::main()
}
