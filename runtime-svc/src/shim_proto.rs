//! The wire protocol between runtime-svc and a container's shim, over the shim's unix socket
//! (`<container dir>/shim.sock`). Shared by the daemon and the `berth-shim` binary, so it uses
//! std only.
//!
//! Every connection starts with one command line from the client:
//! - `START\n` → `OK <pid>\n` or `ERR <exit code> <message>\n` (runs the OCI runtime once).
//! - `KILL <signo>\n` → `OK\n` or `ERR <code> <message>\n`.
//! - `STATUS\n` → `CREATED\n`, `RUNNING <pid>\n` or `EXITED <code> <oom 0|1> <message>\n`.
//! - `WAIT\n` → the `EXITED ...` line once the container has exited.
//! - `ATTACH <flags> [<cols> <rows>]\n` (flags: any of `i`, `o`, `e` for stdin/stdout/stderr,
//!   `-` for none; the size, if given, is applied to the container's pty before the reply) →
//!   `OK <tty 0|1>\n`, then binary frames both ways until the shim sends [`FRAME_EXIT`].
//! - `EXEC <flags> <cols> <rows> <len>\n` followed by `<len>` bytes of JSON (an OCI `process`
//!   object; flags: any of `i` stdin, `t` pty, `d` detached, `-` for none; cols/rows 0 when
//!   unknown) → `OK <pid>\n` or `ERR <exit code> <message>\n` (126/127 like START); then, unless
//!   detached, the same frames as ATTACH for that process only (its output is not logged) and a
//!   [`FRAME_EXIT`] with its exit status. Closing the connection detaches; the process runs on.
//!
//! A frame is one kind byte, a big-endian u32 length and that many bytes of payload. Shim →
//! client: [`FRAME_STDOUT`], [`FRAME_STDERR`], [`FRAME_EXIT`] (payload: the `EXITED ...` line).
//! Client → shim: [`FRAME_STDIN`], [`FRAME_CLOSE_STDIN`] (empty; ignored with a pty, where EOF
//! is the user's Ctrl-D), [`FRAME_RESIZE`] (u16 columns, u16 rows, big-endian; `TIOCSWINSZ` on
//! the pty master, which signals SIGWINCH to the foreground process group).
//!
//! With a pty (`berth-shim --tty`) the runtime is given `--console-socket`; the shim receives
//! the pty master over it (SCM_RIGHTS), keeps it, and sends all output as [`FRAME_STDOUT`].

/// Bytes for the container's stdin.
pub const FRAME_STDIN: u8 = 0;
/// Bytes the container wrote to stdout.
pub const FRAME_STDOUT: u8 = 1;
/// Bytes the container wrote to stderr.
pub const FRAME_STDERR: u8 = 2;
/// The container's stdin reached EOF.
pub const FRAME_CLOSE_STDIN: u8 = 3;
/// Terminal size changed (u16 columns, u16 rows).
pub const FRAME_RESIZE: u8 = 4;
/// The container exited; payload is the `EXITED` status line; last frame.
pub const FRAME_EXIT: u8 = 5;

/// Largest frame payload either side sends.
pub const MAX_FRAME: usize = 64 * 1024;

/// Encodes one frame header.
pub fn frame_header(kind: u8, len: usize) -> [u8; 5] {
    let l = (len as u32).to_be_bytes();
    [kind, l[0], l[1], l[2], l[3]]
}

/// How a container ended, as the shim reports it and writes to `<dir>/exit`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exit {
    /// Exit code; 128+N for signal N; 125/126/127 when the runtime could not start the process.
    pub code: i32,
    /// Killed by the kernel's OOM killer (the cgroup's oom_kill counter went up).
    pub oom: bool,
    /// Why the process could not start; empty when it ran.
    pub error: String,
}

impl Exit {
    /// The `EXITED <code> <oom> <message>` line (no newline).
    pub fn to_line(&self) -> String {
        let msg: String = self.error.chars().map(|c| if c == '\n' { ' ' } else { c }).collect();
        format!("EXITED {} {} {}", self.code, self.oom as u8, msg).trim_end().to_string()
    }

    /// Parses a line made by [`Exit::to_line`].
    pub fn parse(line: &str) -> Option<Exit> {
        let rest = line.trim_end().strip_prefix("EXITED ")?;
        let mut it = rest.splitn(3, ' ');
        let code = it.next()?.parse().ok()?;
        let oom = it.next()? == "1";
        let error = it.next().unwrap_or("").to_string();
        Some(Exit { code, oom, error })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_line_round_trips() {
        let e = Exit { code: 127, oom: false, error: "exec: \"nope\": not found\nmore".into() };
        let back = Exit::parse(&e.to_line()).unwrap();
        assert_eq!(back.code, 127);
        assert_eq!(back.error, "exec: \"nope\": not found more");
        let e = Exit { code: 0, oom: true, error: String::new() };
        assert_eq!(Exit::parse(&e.to_line()).unwrap(), e);
    }
}
