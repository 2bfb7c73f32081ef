//! cgroup v2: where it is mounted, and the ids the kernel programs filter on.

use std::{
    fs, io,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

/// The environment variable naming the cgroup v2 root to use instead of the mount found in
/// mountinfo: in a container, the node's hierarchy mounted from the host (the Helm chart
/// mounts it at `/host/cgroup`), since the container's own `/sys/fs/cgroup` is namespaced.
pub const ROOT_ENV: &str = "SONDE_CGROUP_ROOT";

/// Mount point of the cgroup v2 hierarchy (`/sys/fs/cgroup` on pure v2 hosts,
/// `/sys/fs/cgroup/unified` on hybrid ones), from `/proc/self/mountinfo`, unless
/// `SONDE_CGROUP_ROOT` names one.
pub fn v2_mount() -> Option<PathBuf> {
    if let Some(root) = std::env::var_os(ROOT_ENV).filter(|r| !r.is_empty()) {
        return Some(PathBuf::from(root));
    }
    let text = fs::read_to_string("/proc/self/mountinfo").ok()?;
    parse_mountinfo_cgroup2(&text)
}

fn parse_mountinfo_cgroup2(text: &str) -> Option<PathBuf> {
    text.lines().find_map(|line| {
        // id parent major:minor root mountpoint options [optional...] - fstype source superopts
        let (left, right) = line.split_once(" - ")?;
        let fstype = right.split_whitespace().next()?;
        if fstype != "cgroup2" {
            return None;
        }
        let mountpoint = left.split_whitespace().nth(4)?;
        Some(PathBuf::from(mountpoint.replace("\\040", " ")))
    })
}

/// The cgroup id the kernel reports (`bpf_get_current_cgroup_id`) for a cgroup v2 directory:
/// its inode number.
pub fn id_of(dir: &Path) -> io::Result<u64> {
    Ok(fs::metadata(dir)?.ino())
}

/// Resolves a user-supplied cgroup: an absolute path, or a path relative to the v2 mount.
pub fn resolve(arg: &str) -> Result<PathBuf, String> {
    let p = Path::new(arg);
    let full = if p.is_absolute() && p.exists() {
        p.to_path_buf()
    } else {
        let root = v2_mount().ok_or_else(|| {
            "no cgroup v2 hierarchy is mounted; mount one with \
             `mount -t cgroup2 none /sys/fs/cgroup/unified`"
                .to_string()
        })?;
        root.join(arg.trim_start_matches('/'))
    };
    if !full.is_dir() {
        return Err(format!(
            "cgroup {} does not exist; give a directory under the cgroup v2 mount",
            full.display()
        ));
    }
    Ok(full)
}

/// The cgroup v2 path of a process, relative to the v2 mount (`0::/path` in /proc/PID/cgroup).
pub fn of_pid(pid: u32) -> Option<String> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_owned)
}

/// The cgroup v2 id of a process (what `bpf_get_current_cgroup_id` returns for its tasks).
pub fn id_of_pid(pid: u32) -> Option<u64> {
    let rel = of_pid(pid)?;
    id_of(&v2_mount()?.join(rel.trim_start_matches('/'))).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_cgroup2_in_mountinfo() {
        let text = "25 30 0:22 / /sys rw,nosuid shared:7 - sysfs sysfs rw\n\
                    35 26 0:30 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw\n\
                    36 26 0:31 / /sys/fs/cgroup/cpu rw shared:11 - cgroup cgroup rw,cpu\n";
        assert_eq!(
            parse_mountinfo_cgroup2(text),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(
            parse_mountinfo_cgroup2("1 2 0:1 / / rw - ext4 /dev/vda rw\n"),
            None
        );
    }
}
