//! Test certificates made with openssl: a CA, a server certificate for 127.0.0.1/localhost and a
//! client certificate, for the mutual-TLS tests.

use std::path::Path;
use std::process::{Command, Stdio};

/// Writes `ca.pem`, `<server>.pem`/`<server>-key.pem` (serverAuth, localhost and 127.0.0.1) and
/// `client.pem`/`client-key.pem` (clientAuth) into `dir`. False when openssl is missing or fails.
pub fn make_certs(dir: &Path, server: &str) -> bool {
    let script = format!(
        r#"
set -e
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=test CA" -keyout ca-key.pem -out ca.pem
issue() {{
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$1" -keyout "$1-key.pem" -out "$1.csr"
  printf 'subjectAltName=%s\nextendedKeyUsage=%s\n' "$2" "$3" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 2 -out "$1.pem" -extfile "$1.ext"
}}
issue {server} "DNS:localhost,IP:127.0.0.1" serverAuth
issue client "DNS:client" clientAuth
"#
    );
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
