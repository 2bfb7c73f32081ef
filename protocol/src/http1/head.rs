//! Finding, checking and parsing one message head.
//!
//! Heads are scanned incrementally: [`HeadScanner`] remembers how far it got, so a head that
//! arrives a few bytes per syscall is looked at once, not once per syscall (httparse warns
//! against re-parsing a growing buffer). The start line is checked byte by byte and each field
//! line as soon as its LF arrives, so garbage is rejected at its first wrong byte or line
//! instead of after `max_head_bytes`; that is also what keeps resynchronising (which tries a
//! head at every plausible byte) linear. Only when the blank line is found is the head parsed
//! into owned values, once.
//!
//! ```text
//! request-line = method SP request-target SP HTTP-version CRLF
//! status-line  = HTTP-version SP status-code [ SP reason-phrase ] CRLF
//! field-line   = field-name ":" OWS field-value OWS CRLF
//!                  name: 1*tchar, no space before ":"; value: no CTL except HTAB
//! obs-fold     = CRLF 1*( SP / HTAB )          continuation, kept and blanked to SP
//! end of head  = CRLF on its own                a bare LF is accepted for every CRLF
//! ```

use super::Side;
use super::error::ErrorKind;
use super::headers::{Headers, RequestHead, ResponseHead};
use crate::detect::{self, Prefix};

/// Field positions are `u32`; no head may be longer than this whatever the limits say.
const HARD_MAX_HEAD: usize = 16 << 20;

/// Longest reason phrase accepted in a tentative status line. Real ones are a few words; the
/// bound keeps resynchronising linear when a body repeats `HTTP/1.1 200` without line breaks.
const TENTATIVE_MAX_REASON: usize = 256;

/// Result of scanning the bytes of a head so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scan {
    /// The head is complete and is the first `n` bytes.
    Complete(usize),
    /// All bytes so far are a valid, incomplete head.
    NeedMore,
}

/// A head that cannot be valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ScanError {
    pub kind: ErrorKind,
    /// Index of the byte found wrong (of the LF ending a wrong field line; of the limit for
    /// `HeadTooLarge`). Scanning for the next message resumes there when the head was a
    /// message (its start was plausible); otherwise the caller resumes one byte after the start.
    pub resume: usize,
}

/// How far the start line has been checked, byte by byte, so a wrong one fails at its first
/// wrong byte rather than at its end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StartLine {
    /// Before `detect`'s rule matched.
    Prefix,
    /// request-target: visible bytes up to SP.
    Target {
        len: usize,
    },
    /// `HTTP/1.x`, `i` bytes of it seen, then the line end.
    Version {
        i: usize,
    },
    /// After the status code: SP, or the line end.
    AfterCode,
    Reason {
        len: usize,
    },
    /// CR seen, LF expected.
    Cr,
    Done,
}

/// Resumable scanner for one head. Positions are relative to the first byte of the head.
#[derive(Clone, Debug)]
pub(crate) struct HeadScanner {
    side: Side,
    /// A head tried while resynchronising: held to a shorter reason phrase.
    tentative: bool,
    start: StartLine,
    /// Next byte of the start line to check.
    start_pos: usize,
    /// Next byte to examine.
    pos: usize,
    line_start: usize,
    /// Complete lines so far, the start line included.
    lines: usize,
    /// Field lines so far (continuations excluded).
    fields: usize,
}

impl HeadScanner {
    pub(crate) fn new(side: Side, tentative: bool) -> Self {
        Self {
            side,
            tentative,
            start: StartLine::Prefix,
            start_pos: 0,
            pos: 0,
            line_start: 0,
            lines: 0,
            fields: 0,
        }
    }

    /// The start of the head looks like a message (a method and SP, or `HTTP/1.x NNN`).
    pub(crate) fn plausible(&self) -> bool {
        self.start != StartLine::Prefix
    }

    /// The whole start line is valid.
    pub(crate) fn start_line_done(&self) -> bool {
        self.lines > 0
    }

    /// Scans `data`, the head's bytes so far (the same bytes as the previous call, plus more).
    pub(crate) fn scan(
        &mut self,
        data: &[u8],
        max_headers: usize,
        max_head_bytes: usize,
    ) -> Result<Scan, ScanError> {
        let limit = max_head_bytes.min(HARD_MAX_HEAD);
        if self.start == StartLine::Prefix {
            let prefix = match self.side {
                Side::Request => detect::request_start(data),
                Side::Response => detect::response_start(data),
            };
            match prefix {
                Prefix::Match(n) => {
                    self.start_pos = n;
                    self.start = match self.side {
                        Side::Request => StartLine::Target { len: 0 },
                        Side::Response => StartLine::AfterCode,
                    };
                }
                Prefix::Partial if data.len() < limit => return Ok(Scan::NeedMore),
                Prefix::Partial => return Err(self.fail(ErrorKind::HeadTooLarge, limit)),
                Prefix::Mismatch(at) => return Err(self.fail(ErrorKind::Desync, at)),
            }
        }
        let end = data.len().min(limit);
        self.check_start_line(data, end)?;
        while self.pos < end {
            let window = &data[self.pos..end];
            let Some(i) = window.iter().position(|&b| b == b'\n' || is_ctl(b)) else {
                self.pos = end;
                break;
            };
            let at = self.pos + i;
            if data[at] != b'\n' {
                return Err(self.fail(self.line_error(), at));
            }
            self.pos = at + 1;
            if let Some(done) = self.end_line(data, at, max_headers)? {
                return Ok(done);
            }
        }
        if self.pos >= limit {
            return Err(self.fail(ErrorKind::HeadTooLarge, limit));
        }
        Ok(Scan::NeedMore)
    }

    /// Checks the start line's bytes from where the last call stopped, up to its LF.
    fn check_start_line(&mut self, data: &[u8], end: usize) -> Result<(), ScanError> {
        while self.start_pos < end && self.start != StartLine::Done {
            let b = data[self.start_pos];
            let next = match self.start {
                StartLine::Target { len } => match b {
                    b' ' if len > 0 => Some(StartLine::Version { i: 0 }),
                    _ if b > 0x20 && b != 0x7f => Some(StartLine::Target { len: len + 1 }),
                    _ => None,
                },
                StartLine::Version { i: 7 } if b == b'0' || b == b'1' => {
                    Some(StartLine::Version { i: 8 })
                }
                StartLine::Version { i } if i < 7 && b == b"HTTP/1."[i] => {
                    Some(StartLine::Version { i: i + 1 })
                }
                StartLine::Version { i: 8 } | StartLine::AfterCode if b == b'\r' => {
                    Some(StartLine::Cr)
                }
                StartLine::Version { i: 8 } | StartLine::AfterCode | StartLine::Cr
                    if b == b'\n' =>
                {
                    Some(StartLine::Done)
                }
                StartLine::AfterCode if b == b' ' => Some(StartLine::Reason { len: 0 }),
                StartLine::Reason { len } => match b {
                    b'\r' => Some(StartLine::Cr),
                    b'\n' => Some(StartLine::Done),
                    _ if is_ctl(b) => None,
                    _ if self.tentative && len >= TENTATIVE_MAX_REASON => None,
                    _ => Some(StartLine::Reason { len: len + 1 }),
                },
                _ => None,
            };
            match next {
                Some(state) => self.start = state,
                None => return Err(self.fail(self.line_error(), self.start_pos)),
            }
            self.start_pos += 1;
        }
        Ok(())
    }

    fn end_line(
        &mut self,
        data: &[u8],
        lf: usize,
        max_headers: usize,
    ) -> Result<Option<Scan>, ScanError> {
        let line = strip_cr(&data[self.line_start..lf]);
        let ok = if line.contains(&b'\r') {
            false
        } else if self.lines == 0 {
            match self.side {
                Side::Request => parse_request_line(line).is_some(),
                Side::Response => parse_status_line(line).is_some(),
            }
        } else if line.is_empty() {
            return Ok(Some(Scan::Complete(lf + 1)));
        } else if matches!(line[0], b' ' | b'\t') {
            // A continuation line; not allowed right after the start line (RFC 9112 §2.2).
            self.lines > 1
        } else {
            self.fields += 1;
            if self.fields > max_headers {
                return Err(self.fail(ErrorKind::TooManyHeaders, lf));
            }
            split_field(line).is_some()
        };
        if !ok {
            return Err(self.fail(self.line_error(), lf));
        }
        self.lines += 1;
        self.line_start = lf + 1;
        Ok(None)
    }

    fn line_error(&self) -> ErrorKind {
        match (self.lines, self.side) {
            (0, Side::Request) => ErrorKind::MalformedRequestLine,
            (0, Side::Response) => ErrorKind::MalformedStatusLine,
            _ => ErrorKind::MalformedHeader,
        }
    }

    fn fail(&self, kind: ErrorKind, resume: usize) -> ScanError {
        ScanError { kind, resume }
    }
}

/// Control bytes never allowed in a head (CR is checked per line, HTAB is allowed).
fn is_ctl(b: u8) -> bool {
    (b < 0x20 && b != b'\t' && b != b'\r') || b == 0x7f
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// RFC 9110 `tchar`.
pub(crate) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn parse_version(v: &[u8]) -> Option<u8> {
    match v {
        b"HTTP/1.1" => Some(1),
        b"HTTP/1.0" => Some(0),
        _ => None,
    }
}

/// `(method, target, minor)` of a request line without its line ending.
fn parse_request_line(line: &[u8]) -> Option<(&[u8], &[u8], u8)> {
    let mut parts = line.split(|&b| b == b' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    let known = detect::METHODS.iter().any(|m| m.as_bytes() == method);
    let target_ok = !target.is_empty() && target.iter().all(|&b| b > 0x20 && b != 0x7f);
    if parts.next().is_some() || !known || !target_ok {
        return None;
    }
    Some((method, target, parse_version(version)?))
}

/// `(minor, status, reason)` of a status line without its line ending.
fn parse_status_line(line: &[u8]) -> Option<(u8, u16, &[u8])> {
    let minor = parse_version(line.get(..8)?)?;
    let rest = line.get(8..)?.strip_prefix(b" ")?;
    let code = rest.get(..3)?;
    if !code.iter().all(u8::is_ascii_digit) || code[0] == b'0' {
        return None;
    }
    let status = code.iter().fold(0u16, |n, &d| n * 10 + u16::from(d - b'0'));
    let reason = match &rest[3..] {
        [] => &[][..],
        [b' ', reason @ ..] => reason,
        _ => return None,
    };
    Some((minor, status, reason))
}

/// `(name_end, value_start, value_end)` of a field line: the name is `line[..name_end]`, the
/// value trimmed of OWS is `line[value_start..value_end]`.
fn split_field(line: &[u8]) -> Option<(usize, usize, usize)> {
    let colon = line.iter().position(|&b| b == b':')?;
    if colon == 0 || !line[..colon].iter().copied().all(is_tchar) {
        return None;
    }
    let (start, end) = trimmed_range(line, colon + 1, line.len());
    Some((colon, start, end))
}

/// `line[start..end]` without leading and trailing OWS, as a range into `line`.
fn trimmed_range(line: &[u8], mut start: usize, mut end: usize) -> (usize, usize) {
    while start < end && matches!(line[start], b' ' | b'\t') {
        start += 1;
    }
    while end > start && matches!(line[end - 1], b' ' | b'\t') {
        end -= 1;
    }
    (start, end)
}

/// A complete head, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Head {
    Request(RequestHead),
    Response(ResponseHead),
}

/// Parses a complete head (as delimited by [`HeadScanner`]): start line, fields, blank line.
/// `None` if it is not valid, which a scanned head always is.
pub(crate) fn parse(side: Side, head: &[u8]) -> Option<Head> {
    let first_lf = head.iter().position(|&b| b == b'\n')?;
    let start = strip_cr(&head[..first_lf]);
    let block = &head[first_lf + 1..];
    let headers = parse_fields(block)?;
    Some(match side {
        Side::Request => {
            let (method, target, minor_version) = parse_request_line(start)?;
            Head::Request(RequestHead {
                method: String::from_utf8_lossy(method).into_owned(),
                target: String::from_utf8_lossy(target).into_owned(),
                minor_version,
                headers,
            })
        }
        Side::Response => {
            let (minor_version, status, reason) = parse_status_line(start)?;
            Head::Response(ResponseHead {
                minor_version,
                status,
                reason: String::from_utf8_lossy(reason).into_owned(),
                headers,
            })
        }
    })
}

/// Parses the field lines that follow the start line, up to and including the blank line.
fn parse_fields(block: &[u8]) -> Option<Headers> {
    if block.len() > HARD_MAX_HEAD {
        return None;
    }
    let mut raw = block.to_vec();
    let mut fields: Vec<((u32, u32), (u32, u32))> = Vec::new();
    let mut line_start = 0;
    while let Some(i) = raw[line_start..].iter().position(|&b| b == b'\n') {
        let lf = line_start + i;
        // The line break is `CRLF` or a bare `LF`.
        let brk = if lf > line_start && raw[lf - 1] == b'\r' {
            lf - 1
        } else {
            lf
        };
        if brk == line_start {
            return Some(Headers::from_parts(raw.into_boxed_slice(), fields));
        }
        if matches!(raw[line_start], b' ' | b'\t') {
            // obs-fold: blank the previous line break and extend the previous value over this
            // line, so the value reads "a   b" (RFC 9112 §5.2: replace with SP).
            let (_, value) = fields.last_mut()?;
            let (start, end) = trimmed_range(&raw, line_start, brk);
            if start < end {
                if value.0 == value.1 {
                    value.0 = start as u32;
                }
                value.1 = end as u32;
            }
            let prev_lf = line_start - 1;
            let prev_brk = if prev_lf > 0 && raw[prev_lf - 1] == b'\r' {
                prev_lf - 1
            } else {
                prev_lf
            };
            raw[prev_brk..line_start].fill(b' ');
        } else {
            let (name_end, start, end) = split_field(&raw[line_start..brk])?;
            let at = |i: usize| (line_start + i) as u32;
            fields.push(((at(0), at(name_end)), (at(start), at(end))));
        }
        line_start = lf + 1;
    }
    None
}

#[cfg(test)]
#[path = "head_tests.rs"]
mod tests;
