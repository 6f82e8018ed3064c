fn main() -> std::process::ExitCode {
    ibu::cli::main()
}
