//! A pseudo-terminal to drive `berth` as a user at a terminal would (included with
//! `mod pty_env;`): berth runs with the pty's slave as stdin/stdout/stderr and controlling
//! terminal; the test writes keystrokes to the master and reads the screen from it.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A `berth` process on a pty.
pub struct PtyProc {
    master: std::fs::File,
    /// Everything read from the terminal so far.
    pub screen: Arc<Mutex<Vec<u8>>>,
    pub child: Child,
    /// Where the next `expect` starts looking.
    seen: usize,
}

/// Sets a terminal's size.
pub fn set_size(fd: i32, cols: u16, rows: u16) {
    let ws = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
    unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) };
}

impl PtyProc {
    /// Spawns `cmd` on a new pty of `cols`×`rows`.
    pub fn spawn(mut cmd: Command, cols: u16, rows: u16) -> PtyProc {
        let (mut m, mut s) = (0, 0);
        let ws = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
        let r = unsafe { libc::openpty(&mut m, &mut s, std::ptr::null_mut(), std::ptr::null(), &ws) };
        assert_eq!(r, 0, "openpty: {}", std::io::Error::last_os_error());
        let master = unsafe { std::fs::File::from(OwnedFd::from_raw_fd(m)) };
        let slave = unsafe { OwnedFd::from_raw_fd(s) };
        let sfd = slave.as_raw_fd();
        cmd.stdin(slave.try_clone().unwrap()).stdout(slave.try_clone().unwrap()).stderr(slave.try_clone().unwrap());
        unsafe {
            cmd.pre_exec(move || {
                if libc::setsid() < 0 || libc::ioctl(sfd, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawning berth on a pty");
        drop(slave);
        let screen = Arc::new(Mutex::new(Vec::new()));
        let mut reader = master.try_clone().unwrap();
        let sc = screen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sc.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        PtyProc { master, screen, child, seen: 0 }
    }

    /// Types bytes.
    pub fn send(&mut self, b: &[u8]) {
        self.master.write_all(b).unwrap();
    }

    /// Types a line (Enter is CR at a raw terminal).
    pub fn line(&mut self, s: &str) {
        self.send(format!("{s}\r").as_bytes());
    }

    /// The screen as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.screen.lock().unwrap()).into_owned()
    }

    /// Waits until `needle` appears after what earlier expects consumed.
    pub fn expect(&mut self, needle: &str, timeout: Duration) {
        let t0 = Instant::now();
        loop {
            let text = self.text();
            if let Some(i) = text.get(self.seen..).and_then(|t| t.find(needle)) {
                self.seen += i + needle.len();
                return;
            }
            if t0.elapsed() > timeout {
                panic!("{needle:?} did not appear within {timeout:?}; the terminal shows:\n{text:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Resizes the terminal (berth gets SIGWINCH as the foreground process).
    pub fn resize(&self, cols: u16, rows: u16) {
        set_size(self.master.as_raw_fd(), cols, rows);
    }

    /// Waits for the process to exit; its exit code.
    pub fn wait(&mut self, timeout: Duration) -> Option<i32> {
        let t0 = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code();
            }
            if t0.elapsed() > timeout {
                let _ = self.child.kill();
                panic!("berth did not exit within {timeout:?}; the terminal shows:\n{:?}", self.text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The terminal's current settings still have echo and canonical mode (raw mode undone).
    pub fn cooked(&self) -> bool {
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        unsafe { libc::tcgetattr(self.master.as_raw_fd(), &mut t) };
        t.c_lflag & libc::ICANON != 0 && t.c_lflag & libc::ECHO != 0
    }
}

impl Drop for PtyProc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
