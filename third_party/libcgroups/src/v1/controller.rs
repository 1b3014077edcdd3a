use std::fs;
use std::path::Path;

use nix::unistd::Pid;

use crate::common::{self, CGROUP_PROCS, ControllerOpt, WrapIoResult, WrappedIoError};

/// Berth patch: moves `pid` into the v1 cgroup at `cgroup_path`.
///
/// Writing a pid to `cgroup.procs` takes the kernel's global `cgroup_threadgroup_rwsem` for
/// writing, which waits for an RCU grace period: 10-20 ms on a VM, paid by every container
/// start. When the caller moves itself and has a single thread (the runtime's intermediate
/// process, just forked), writing `0` to `tasks` moves that one thread, which is the whole
/// process, and the kernel skips the global lock (`cgroup_procs_write_start`: "If we migrate
/// a single thread [that is `current`] ... we can skip the global lock"). Children forked
/// afterwards inherit the cgroup. Anything else keeps the upstream behaviour.
pub(super) fn join(pid: Pid, cgroup_path: &Path) -> Result<(), WrappedIoError> {
    if pid == nix::unistd::getpid() && single_threaded() {
        common::write_cgroup_file(cgroup_path.join("tasks"), 0)
    } else {
        common::write_cgroup_file(cgroup_path.join(CGROUP_PROCS), pid)
    }
}

/// Whether the calling process has exactly one thread (`Threads:` in /proc/self/status).
fn single_threaded() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|n| n.trim().parse::<u32>().ok())
        })
        == Some(1)
}


pub(super) trait Controller {
    type Error: From<WrappedIoError>;
    type Resource;

    /// Adds a new task specified by its pid to the cgroup
    fn add_task(pid: Pid, cgroup_path: &Path) -> Result<(), Self::Error> {
        fs::create_dir_all(cgroup_path).wrap_create_dir(cgroup_path)?;
        join(pid, cgroup_path)?;
        Ok(())
    }

    /// Applies resource restrictions to the cgroup
    fn apply(controller_opt: &ControllerOpt, cgroup_root: &Path) -> Result<(), Self::Error>;

    /// Checks if the controller needs to handle this request
    fn needs_to_handle<'a>(controller_opt: &'a ControllerOpt) -> Option<&'a Self::Resource>;
}
