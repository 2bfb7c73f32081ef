//! tracefs: where tracepoints are described, mounted by sonde when the host has not.

use std::{
    fs,
    path::{Path, PathBuf},
};

pub const TRACEFS: &str = "/sys/kernel/tracing";
const DEBUGFS_TRACING: &str = "/sys/kernel/debug/tracing";

#[derive(Debug, thiserror::Error)]
pub enum TracefsError {
    #[error(
        "tracefs is not mounted and mounting it at {TRACEFS} failed: {source}; run \
         `mount -t tracefs tracefs {TRACEFS}` as root"
    )]
    Mount {
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cannot read tracepoint format {path}: {source}; does this kernel have {category}:{name}?"
    )]
    Format {
        path: PathBuf,
        category: String,
        name: String,
        #[source]
        source: std::io::Error,
    },
}

/// One field of a tracepoint record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub offset: u32,
    pub size: u32,
}

/// The record layout of one tracepoint, from its `format` file.
#[derive(Clone, Debug, Default)]
pub struct Format {
    pub fields: Vec<Field>,
}

impl Format {
    pub fn parse(text: &str) -> Self {
        let mut fields = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            let Some(rest) = line.strip_prefix("field:") else {
                continue;
            };
            let mut decl = None;
            let mut offset = None;
            let mut size = None;
            for part in rest.split(';') {
                let part = part.trim();
                if let Some(v) = part.strip_prefix("offset:") {
                    offset = v.trim().parse().ok();
                } else if let Some(v) = part.strip_prefix("size:") {
                    size = v.trim().parse().ok();
                } else if decl.is_none() && !part.is_empty() {
                    decl = Some(part);
                }
            }
            let (Some(decl), Some(offset), Some(size)) = (decl, offset, size) else {
                continue;
            };
            // "unsigned int fd", "char comm[16]", "__data_loc char[] filename"
            let name = decl
                .rsplit(|c: char| c.is_whitespace() || c == '*')
                .next()
                .unwrap_or("")
                .split('[')
                .next()
                .unwrap_or("")
                .to_owned();
            fields.push(Field { name, offset, size });
        }
        Self { fields }
    }

    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }
}

/// A mounted tracefs.
#[derive(Clone, Debug)]
pub struct TraceFs {
    root: PathBuf,
}

impl TraceFs {
    /// Finds tracefs, mounting it at [`TRACEFS`] if it is nowhere to be found.
    pub fn find_or_mount() -> Result<Self, TracefsError> {
        if let Some(fs) = Self::find() {
            return Ok(fs);
        }
        mount_tracefs().map_err(|source| TracefsError::Mount { source })?;
        Ok(Self {
            root: PathBuf::from(TRACEFS),
        })
    }

    /// Finds a mounted tracefs without changing anything.
    pub fn find() -> Option<Self> {
        [TRACEFS, DEBUGFS_TRACING]
            .iter()
            .map(Path::new)
            .find(|p| p.join("events").is_dir())
            .map(|p| Self { root: p.to_owned() })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn format(&self, category: &str, name: &str) -> Result<Format, TracefsError> {
        let path = self
            .root
            .join("events")
            .join(category)
            .join(name)
            .join("format");
        let text = fs::read_to_string(&path).map_err(|source| TracefsError::Format {
            path: path.clone(),
            category: category.into(),
            name: name.into(),
            source,
        })?;
        Ok(Format::parse(&text))
    }

    pub fn has_event(&self, category: &str, name: &str) -> bool {
        self.root.join("events").join(category).join(name).is_dir()
    }
}

fn mount_tracefs() -> std::io::Result<()> {
    let target = c"/sys/kernel/tracing";
    let fstype = c"tracefs";
    // SAFETY: all pointers are valid NUL-terminated strings; data may be null.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_format_file() {
        let text = "name: sched_process_exit\nID: 369\nformat:\n\
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\n\
\tfield:char comm[16];\toffset:8;\tsize:16;\tsigned:0;\n\
\tfield:pid_t pid;\toffset:24;\tsize:4;\tsigned:1;\n\
\tfield:bool group_dead;\toffset:32;\tsize:1;\tsigned:0;\n\
\tfield:__data_loc char[] filename;\toffset:8;\tsize:4;\tsigned:0;\n\
\tfield:const char * buf;\toffset:24;\tsize:8;\tsigned:0;\n\
print fmt: \"comm=%s\"\n";
        let f = Format::parse(text);
        assert_eq!(
            f.field("group_dead"),
            Some(&Field {
                name: "group_dead".into(),
                offset: 32,
                size: 1
            })
        );
        assert_eq!(f.field("comm").map(|f| (f.offset, f.size)), Some((8, 16)));
        assert_eq!(f.field("filename").map(|f| f.offset), Some(8));
        assert_eq!(f.field("buf").map(|f| f.offset), Some(24));
        assert_eq!(f.field("common_pid").map(|f| f.offset), Some(4));
        assert!(f.field("nope").is_none());
    }
}
