//! Uprobe programs of the TLS probes: loaded once with the other programs, attached per file by
//! the `tls` module (one attachment per library or binary file: the kernel then fires them in
//! every process that maps the file, including those that start or `dlopen` it later).

use std::path::Path;

use aya::programs::{
    UProbe,
    uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeLinkId, UProbeScope},
};
use sonde_proto::tls_programs;

use super::{ProbeError, Probes};

/// Every TLS uprobe program.
pub const TLS_PROGRAMS: [&str; 10] = [
    tls_programs::SSL_WRITE,
    tls_programs::SSL_READ,
    tls_programs::SSL_WRITE_EX,
    tls_programs::SSL_READ_EX,
    tls_programs::SSL_HANDSHAKE,
    tls_programs::SSL_RET,
    tls_programs::SSL_HANDSHAKE_RET,
    tls_programs::GO_WRITE,
    tls_programs::GO_READ,
    tls_programs::GO_RET,
];

/// One attachment of a uprobe program; detach it with [`Probes::detach_uprobe`].
#[derive(Debug)]
pub struct UprobeLink {
    program: &'static str,
    id: UProbeLinkId,
}

impl Probes {
    /// Loads the TLS uprobe programs (not attached yet). An error leaves TLS capture off.
    pub(super) fn load_tls_programs(&mut self) -> Result<(), ProbeError> {
        for name in TLS_PROGRAMS {
            let prog = self.uprobe(name)?;
            prog.load().map_err(ProbeError::load(name))?;
        }
        Ok(())
    }

    fn uprobe(&mut self, name: &'static str) -> Result<&mut UProbe, ProbeError> {
        super::program(&mut self.ebpf, name)
    }

    /// Attaches `program` at file offset `offset` of `target`, for every process.
    pub fn attach_uprobe(
        &mut self,
        program: &'static str,
        target: &Path,
        offset: u64,
        cookie: Option<u64>,
    ) -> Result<UprobeLink, ProbeError> {
        if !self.tls {
            return Err(ProbeError::MissingProgram { name: program });
        }
        let prog = self.uprobe(program)?;
        let point = UProbeAttachPoint {
            location: UProbeAttachLocation::AbsoluteOffset(offset),
            cookie,
        };
        let id = prog
            .attach(point, target, UProbeScope::AllProcesses)
            .map_err(|e| ProbeError::Uprobe {
                name: program,
                target: target.display().to_string(),
                offset,
                source: Box::new(e),
            })?;
        Ok(UprobeLink { program, id })
    }

    pub fn detach_uprobe(&mut self, link: UprobeLink) {
        if let Ok(prog) = self.uprobe(link.program)
            && let Err(e) = prog.detach(link.id)
        {
            tracing::debug!("detaching {}: {e}", link.program);
        }
    }
}
