fn main() {
    eprintln!("registry-svc: not built yet");
    std::process::exit(1);
}
