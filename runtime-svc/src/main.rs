fn main() {
    eprintln!("runtime-svc: not built yet");
    std::process::exit(1);
}
