//! store-svc (skeleton; see the issues).
