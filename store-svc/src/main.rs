fn main() {
    eprintln!("store-svc: not built yet");
    std::process::exit(1);
}
