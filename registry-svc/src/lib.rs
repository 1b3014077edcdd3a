//! registry-svc (skeleton; see the issues).
