//! The client's terminal during `-t` sessions: raw mode (restored on every way out: drop,
//! explicit [`restore`] before `process::exit`, panics, SIGTERM/SIGHUP), the window size, and
//! docker's detach keys ("ctrl-p,ctrl-q").

use anyhow::{anyhow, Result};
use std::io::IsTerminal;
use std::sync::Mutex;

static SAVED: Mutex<Option<libc::termios>> = Mutex::new(None);

/// Puts stdin's terminal in raw mode until dropped (or [`restore`]).
pub struct RawMode(());

impl RawMode {
    /// Raw mode on stdin, if it is a terminal (None otherwise).
    pub fn enable() -> Option<RawMode> {
        if !std::io::stdin().is_terminal() {
            return None;
        }
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        if unsafe { libc::tcgetattr(0, &mut t) } != 0 {
            return None;
        }
        *SAVED.lock().unwrap() = Some(t);
        let mut raw = t;
        // As docker's (moby/term MakeRaw): no echo, no line editing, no signals from keys, no
        // output processing (the container's pty already turns LF into CR LF).
        unsafe { libc::cfmakeraw(&mut raw) };
        if unsafe { libc::tcsetattr(0, libc::TCSANOW, &raw) } != 0 {
            SAVED.lock().unwrap().take();
            return None;
        }
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            prev(info)
        }));
        tokio::spawn(async {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut term), Ok(mut hup)) = (signal(SignalKind::terminate()), signal(SignalKind::hangup())) else {
                return;
            };
            let code = tokio::select! {
                _ = term.recv() => 128 + libc::SIGTERM,
                _ = hup.recv() => 128 + libc::SIGHUP,
            };
            restore();
            std::process::exit(code);
        });
        Some(RawMode(()))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        restore();
    }
}

/// Puts the terminal back as it was (idempotent).
pub fn restore() {
    if let Some(t) = SAVED.lock().unwrap().take() {
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &t) };
    }
}

/// The terminal's size (columns, rows), from stdout or stdin.
pub fn size() -> Option<(u16, u16)> {
    for fd in [1, 0, 2] {
        let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
        if unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) } == 0 && ws.ws_col > 0 && ws.ws_row > 0 {
            return Some((ws.ws_col, ws.ws_row));
        }
    }
    None
}

/// The default detach sequence, as docker's.
pub const DEFAULT_DETACH_KEYS: &str = "ctrl-p,ctrl-q";

/// Parses docker's detach-keys format: comma-separated keys, each a single character or
/// `ctrl-<x>` with x in a-z, @, [, \, ], ^, _.
pub fn parse_detach_keys(s: &str) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    for key in s.split(',') {
        let bad = || anyhow!("Invalid detach keys ({s}) provided");
        if let Some(c) = key.strip_prefix("ctrl-") {
            let c = c.as_bytes();
            if c.len() != 1 {
                return Err(bad());
            }
            out.push(match c[0].to_ascii_lowercase() {
                b @ b'a'..=b'z' => b - b'a' + 1,
                b'@' => 0,
                b'[' => 27,
                b'\\' => 28,
                b']' => 29,
                b'^' => 30,
                b'_' => 31,
                _ => return Err(bad()),
            });
        } else if key.len() == 1 {
            out.push(key.as_bytes()[0]);
        } else {
            return Err(bad());
        }
    }
    Ok(out)
}

/// Watches typed input for the detach sequence: bytes that could start it are held back until
/// it completes (detach: they are never sent) or stops matching (sent after all).
#[derive(Debug, Default)]
pub struct Escape {
    keys: Vec<u8>,
    held: usize,
}

impl Escape {
    /// A watcher for `keys` (empty: never detaches).
    pub fn new(keys: Vec<u8>) -> Escape {
        Escape { keys, held: 0 }
    }

    /// Bytes to send for this input, and whether the sequence completed.
    pub fn feed(&mut self, input: &[u8]) -> (Vec<u8>, bool) {
        if self.keys.is_empty() {
            return (input.to_vec(), false);
        }
        let mut out = Vec::with_capacity(input.len());
        for &b in input {
            if b == self.keys[self.held] {
                self.held += 1;
                if self.held == self.keys.len() {
                    return (out, true);
                }
                continue;
            }
            // Not the sequence after all: release what was held, then see if this byte starts
            // it again.
            out.extend_from_slice(&self.keys[..self.held]);
            self.held = 0;
            if b == self.keys[0] {
                self.held = 1;
                if self.keys.len() == 1 {
                    return (out, true);
                }
            } else {
                out.push(b);
            }
        }
        (out, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detach_keys_parse_like_docker() {
        assert_eq!(parse_detach_keys("ctrl-p,ctrl-q").unwrap(), vec![16, 17]);
        assert_eq!(parse_detach_keys("ctrl-a,x,ctrl-@,ctrl-_").unwrap(), vec![1, b'x', 0, 31]);
        assert!(parse_detach_keys("ctrl-").is_err());
        assert!(parse_detach_keys("ctrl-pq").is_err());
        assert!(parse_detach_keys("xy").is_err());
    }

    #[test]
    fn escape_holds_and_releases() {
        let mut e = Escape::new(vec![16, 17]);
        assert_eq!(e.feed(b"ab"), (b"ab".to_vec(), false));
        // A prefix is held back...
        assert_eq!(e.feed(&[16]), (vec![], false));
        // ...and released when the sequence breaks.
        assert_eq!(e.feed(b"c"), (vec![16, b'c'], false));
        assert_eq!(e.feed(&[b'x', 16, 17, b'y']), (vec![b'x'], true));
        let mut e = Escape::new(vec![16, 17]);
        assert_eq!(e.feed(&[16, 16, 17]), (vec![16], true));
        let mut none = Escape::new(vec![]);
        assert_eq!(none.feed(&[16, 17]), (vec![16, 17], false));
    }
}
