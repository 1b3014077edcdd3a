//! runtime-svc (skeleton; see the issues).
