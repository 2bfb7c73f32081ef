//! Low-cardinality routes for span names (`GET /users/{id}`).
//!
//! A span name must not carry ids: one name per user or per order makes traces unsearchable
//! and metrics derived from them explode. Patterns the user configures win; otherwise a
//! heuristic replaces the segments that look like identifiers, and keeps words, versions and
//! file names:
//!
//! ```text
//! segment                                 becomes    example
//! all digits                              {id}       /users/42            -> /users/{id}
//! UUID 8-4-4-4-12 hex                     {uuid}     /o/1b4e28ba-2fa1-... -> /o/{uuid}
//! >= 8 hex digits, at least one digit     {hex}      /commit/9fceb02d0ae5 -> /commit/{hex}
//! >= 16 chars of [A-Za-z0-9_-.~+=%],      {token}    /s/eyJhbGciOiJIUzI1  -> /s/{token}
//!   letters and digits mixed (>= 3
//!   letter/digit switches), or >= 20 with
//!   many case switches (base64 of text)
//! anything else                           kept       /api/v1/index.html
//! ```
//!
//! Patterns: `/users/{id}/orders/{order}`; `{name}` matches any one non-empty segment, a final
//! `*` matches any number of segments (including none); the route is the pattern as written.

/// A user-configured route pattern, parsed once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoutePattern {
    raw: String,
    segments: Vec<PatternSegment>,
    /// Ends in `/*`: any further segments match.
    rest: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum PatternSegment {
    Literal(String),
    Param,
}

/// Why a route pattern was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// Patterns are absolute paths.
    #[error("route pattern {pattern:?} must start with '/'")]
    NotAbsolute {
        /// The pattern as given.
        pattern: String,
    },
    /// A `{` without its `}`, text around a parameter, or an empty name.
    #[error("route pattern {pattern:?}: segment {segment:?} is not a literal or a whole {{name}}")]
    BadParameter {
        /// The pattern as given.
        pattern: String,
        /// The offending segment.
        segment: String,
    },
    /// `*` anywhere but as the last segment.
    #[error("route pattern {pattern:?}: '*' is only allowed as the last segment")]
    MisplacedWildcard {
        /// The pattern as given.
        pattern: String,
    },
}

impl RoutePattern {
    /// Parses a pattern such as `/users/{id}/orders/{order}` or `/static/*`.
    pub fn parse(pattern: &str) -> Result<Self, RouteError> {
        let Some(body) = pattern.strip_prefix('/') else {
            return Err(RouteError::NotAbsolute {
                pattern: pattern.to_string(),
            });
        };
        let parts: Vec<&str> = body.split('/').collect();
        let mut segments = Vec::with_capacity(parts.len());
        let mut rest = false;
        for (i, part) in parts.iter().enumerate() {
            if *part == "*" {
                if i + 1 != parts.len() {
                    return Err(RouteError::MisplacedWildcard {
                        pattern: pattern.to_string(),
                    });
                }
                rest = true;
            } else if let Some(name) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                if name.is_empty() || name.contains(['{', '}']) {
                    return Err(bad_parameter(pattern, part));
                }
                segments.push(PatternSegment::Param);
            } else if part.contains(['{', '}', '*']) {
                return Err(bad_parameter(pattern, part));
            } else {
                segments.push(PatternSegment::Literal((*part).to_string()));
            }
        }
        Ok(Self {
            raw: pattern.to_string(),
            segments,
            rest,
        })
    }

    /// The pattern as written: the route reported when it matches.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// Whether `path` (no query) matches.
    pub fn matches(&self, path: &str) -> bool {
        let mut parts = path.strip_prefix('/').unwrap_or(path).split('/');
        for seg in &self.segments {
            match (seg, parts.next()) {
                (PatternSegment::Literal(l), Some(p)) if l == p => {}
                (PatternSegment::Param, Some(p)) if !p.is_empty() => {}
                _ => return false,
            }
        }
        self.rest || parts.next().is_none()
    }
}

fn bad_parameter(pattern: &str, segment: &str) -> RouteError {
    RouteError::BadParameter {
        pattern: pattern.to_string(),
        segment: segment.to_string(),
    }
}

/// The route of `path`: the first pattern that matches, else `path` with identifier-like
/// segments replaced (see the module docs). A query or fragment, if present, is dropped.
pub fn route(path: &str, patterns: &[RoutePattern]) -> String {
    let path = path.split(['?', '#']).next().unwrap_or_default();
    if path.is_empty() {
        return "/".to_string();
    }
    if let Some(p) = patterns.iter().find(|p| p.matches(path)) {
        return p.raw.clone();
    }
    let mut out = String::with_capacity(path.len());
    for (i, seg) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        out.push_str(placeholder(seg).unwrap_or(seg));
    }
    out
}

/// The placeholder for a segment that looks like an identifier.
fn placeholder(seg: &str) -> Option<&'static str> {
    let b = seg.as_bytes();
    if b.is_empty() {
        None
    } else if b.iter().all(u8::is_ascii_digit) {
        Some("{id}")
    } else if is_uuid(b) {
        Some("{uuid}")
    } else if b.len() >= 8 && b.iter().all(u8::is_ascii_hexdigit) {
        // All hex with no digit is a word ("deadbeef", "facade"): keep those.
        b.iter().any(u8::is_ascii_digit).then_some("{hex}")
    } else if is_token(b) {
        Some("{token}")
    } else {
        None
    }
}

fn is_uuid(b: &[u8]) -> bool {
    let b = b
        .strip_prefix(b"{")
        .and_then(|x| x.strip_suffix(b"}"))
        .unwrap_or(b);
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

fn is_token(b: &[u8]) -> bool {
    const TOKEN_CHARS: &[u8] = b"_-.~+=%";
    if b.len() < 16
        || !b
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || TOKEN_CHARS.contains(c))
    {
        return false;
    }
    let (digits, letters) = (
        b.iter().filter(|c| c.is_ascii_digit()).count(),
        b.iter().filter(|c| c.is_ascii_alphabetic()).count(),
    );
    // Adjacent letter/digit and lower/upper switches: ids switch often, words rarely do.
    let class_switches = b
        .windows(2)
        .filter(|w| {
            w[0].is_ascii_alphabetic() && w[1].is_ascii_digit()
                || w[0].is_ascii_digit() && w[1].is_ascii_alphabetic()
        })
        .count();
    let case_switches = b
        .windows(2)
        .filter(|w| {
            w[0].is_ascii_lowercase() && w[1].is_ascii_uppercase()
                || w[0].is_ascii_uppercase() && w[1].is_ascii_lowercase()
        })
        .count();
    (digits > 0 && letters > 0 && class_switches >= 3)
        || (b.len() >= 20 && case_switches * 4 >= b.len())
}

/// Splits a request-target into path and query (RFC 9112 §3.2):
///
/// ```text
/// origin-form      /a/b?x=1              -> ("/a/b", Some("x=1"))
/// absolute-form    http://h:8080/a?x=1   -> ("/a", Some("x=1"));  http://h -> ("/", None)
/// asterisk-form    *                     -> ("*", None)
/// authority-form   db.local:5432         -> ("db.local:5432", None)   (CONNECT)
/// ```
///
/// A fragment (`#...`, which clients should not send) is dropped.
pub fn split_target(target: &str) -> (&str, Option<&str>) {
    let target = target.split('#').next().unwrap_or_default();
    let rest = match target.find("://") {
        Some(i)
            if target[..i]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
                && i > 0 =>
        {
            let after = &target[i + 3..];
            match after.find(['/', '?']) {
                Some(j) => &after[j..],
                None => return ("/", None),
            }
        }
        _ => target,
    };
    match rest.split_once('?') {
        Some(("", query)) => ("/", Some(query)),
        Some((path, query)) => (path, Some(query)),
        None => (rest, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heuristic_replaces_identifiers_and_keeps_words() {
        let cases = [
            ("/", "/"),
            ("", "/"),
            ("/api/v1/users", "/api/v1/users"),
            ("/api/v2/users/42", "/api/v2/users/{id}"),
            ("/users/42/orders/7?x=1", "/users/{id}/orders/{id}"),
            ("/o/1b4e28ba-2fa1-11d2-883f-0016d3cca427", "/o/{uuid}"),
            ("/o/{1B4E28BA-2FA1-11D2-883F-0016D3CCA427}", "/o/{uuid}"),
            (
                "/commit/9fceb02d0ae598e95dc970b74767f19372d61af8",
                "/commit/{hex}",
            ),
            ("/c/deadbeef", "/c/deadbeef"),
            ("/c/0ff1ce42", "/c/{hex}"),
            ("/c/abc1234", "/c/abc1234"),
            ("/s/eyJhbGciOiJIUzI1NiJ9", "/s/{token}"),
            ("/s/a1b2c3d4e5f6g7h8", "/s/{token}"),
            ("/s/QWxhZGRpbjpvcGVuIHNlc2FtZQ", "/s/{token}"),
            ("/static/index.html", "/static/index.html"),
            ("/static/app.3f2a1b9c.js", "/static/app.3f2a1b9c.js"),
            ("/docs/internationalization", "/docs/internationalization"),
            ("/reports/user_profile_2023", "/reports/user_profile_2023"),
            ("/reports/2024-01-01", "/reports/2024-01-01"),
            ("/users/", "/users/"),
            ("//double", "//double"),
        ];
        for (path, want) in cases {
            assert_eq!(route(path, &[]), want, "{path}");
        }
    }

    #[test]
    fn patterns_win_in_order() {
        let patterns: Vec<RoutePattern> = [
            "/users/{id}/orders/{order}",
            "/users/{id}",
            "/static/*",
            "/",
        ]
        .iter()
        .map(|p| RoutePattern::parse(p).expect("valid pattern"))
        .collect();
        let cases = [
            ("/users/alice/orders/x-9", "/users/{id}/orders/{order}"),
            ("/users/alice", "/users/{id}"),
            ("/users/alice/", "/users/alice/"),
            ("/users//orders/1", "/users//orders/{id}"),
            ("/static", "/static/*"),
            ("/static/a/b/c.css", "/static/*"),
            ("/", "/"),
            ("/other/42", "/other/{id}"),
        ];
        for (path, want) in cases {
            assert_eq!(route(path, &patterns), want, "{path}");
        }
    }

    #[test]
    fn bad_patterns_are_refused() {
        assert!(matches!(
            RoutePattern::parse("users"),
            Err(RouteError::NotAbsolute { .. })
        ));
        assert!(matches!(
            RoutePattern::parse("/a/{id"),
            Err(RouteError::BadParameter { .. })
        ));
        assert!(matches!(
            RoutePattern::parse("/a/x{id}"),
            Err(RouteError::BadParameter { .. })
        ));
        assert!(matches!(
            RoutePattern::parse("/a/{}"),
            Err(RouteError::BadParameter { .. })
        ));
        assert!(matches!(
            RoutePattern::parse("/*/a"),
            Err(RouteError::MisplacedWildcard { .. })
        ));
        let e = RoutePattern::parse("/a/{").unwrap_err();
        assert_eq!(
            e.to_string(),
            "route pattern \"/a/{\": segment \"{\" is not a literal or a whole {name}"
        );
        assert_eq!(RoutePattern::parse("/a/{b}").unwrap().as_str(), "/a/{b}");
    }

    #[test]
    fn split_target_handles_every_form() {
        let cases = [
            ("/a/b?x=1&y", ("/a/b", Some("x=1&y"))),
            ("/a/b", ("/a/b", None)),
            ("/a?", ("/a", Some(""))),
            ("/a#frag", ("/a", None)),
            ("http://h:8080/a/b?x=1", ("/a/b", Some("x=1"))),
            ("https://h", ("/", None)),
            ("http://h?q", ("/", Some("q"))),
            ("*", ("*", None)),
            ("db.local:5432", ("db.local:5432", None)),
            (
                "/redirect?to=http://x/y",
                ("/redirect", Some("to=http://x/y")),
            ),
        ];
        for (target, want) in cases {
            assert_eq!(split_target(target), want, "{target}");
        }
    }
}
