//! `sonde targets`: which pods a running agent traces, and why.

use std::{io::Write as _, net::SocketAddr, process::ExitCode, time::Duration};

/// `sonde targets`: the running agent's /targets, as a table or JSON.
pub(super) fn targets(address: &str, json: bool) -> ExitCode {
    use std::io::Read as _;
    let fetch = || -> Result<String, String> {
        let addr: SocketAddr = address
            .parse()
            .map_err(|_| format!("--address {address}: expected IP:PORT such as 127.0.0.1:9464"))?;
        let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(3))
            .map_err(|e| format!("cannot reach sonde at {addr}: {e}; is `sonde run --kubernetes` running with --metrics-address {addr}?"))?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok();
        write!(
            s,
            "GET /targets HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .map_err(|e| e.to_string())?;
        let mut text = String::new();
        s.read_to_string(&mut text).map_err(|e| e.to_string())?;
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        if !head.starts_with("HTTP/1.1 200") {
            return Err(format!(
                "{addr}/targets: {}; the agent runs without --kubernetes?",
                head.lines().next().unwrap_or("no answer")
            ));
        }
        Ok(body.to_owned())
    };
    let body = match fetch() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("sonde: {e}");
            return ExitCode::FAILURE;
        }
    };
    if json {
        println!("{body}");
        return ExitCode::SUCCESS;
    }
    let t: crate::k8s::toggle::Targets = match serde_json::from_str(&body) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("sonde: unexpected /targets answer: {e}");
            return ExitCode::FAILURE;
        }
    };
    print!("{}", render_targets(&t));
    ExitCode::SUCCESS
}

/// The `sonde targets` table.
pub fn render_targets(t: &crate::k8s::toggle::Targets) -> String {
    let mut out = format!(
        "node {} (default policy {}){}; {} traced cgroups\n",
        t.node,
        t.policy,
        if t.synced { "" } else { ", not synced yet" },
        t.traced_cgroups
    );
    let rows: Vec<[String; 5]> = t
        .pods
        .iter()
        .map(|p| {
            let found = p
                .containers
                .iter()
                .filter(|c| !c.cgroups.is_empty())
                .count();
            [
                format!("{}/{}", p.namespace, p.pod),
                if p.traced { "yes" } else { "no" }.into(),
                if p.ignored.is_empty() {
                    p.why.clone()
                } else {
                    format!("{} (ignored {})", p.why, p.ignored.join(", "))
                },
                p.service_name.clone(),
                format!("{found}/{}", p.containers.len()),
            ]
        })
        .collect();
    let header = ["POD", "TRACED", "WHY", "SERVICE", "CONTAINERS FOUND"].map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    for r in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = r
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_table() {
        use crate::k8s::toggle::{ContainerTarget, PodTarget, Targets};
        let pod = |ns: &str, name: &str, traced: bool, why: &str, found: bool| PodTarget {
            namespace: ns.into(),
            pod: name.into(),
            uid: "u".into(),
            traced,
            reason: String::new(),
            why: why.into(),
            ignored: if traced {
                vec![]
            } else {
                vec!["pod sonde.dev/tracing=\"yes\"".into()]
            },
            service_name: name.into(),
            service_name_source: crate::k8s::model::ServiceNameSource::Container,
            workload: None,
            containers: vec![ContainerTarget {
                name: "c".into(),
                id: None,
                cgroups: if found { vec![1] } else { vec![] },
            }],
        };
        let t = Targets {
            node: "n1".into(),
            policy: "opt-in".into(),
            synced: true,
            traced_cgroups: 1,
            pods: vec![
                pod(
                    "shop",
                    "web",
                    true,
                    "namespace annotation sonde.dev/tracing",
                    true,
                ),
                pod("kube-system", "dns", false, "default policy opt-in", false),
            ],
            ..Targets::default()
        };
        let text = render_targets(&t);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "node n1 (default policy opt-in); 1 traced cgroups"
        );
        assert!(lines[1].starts_with("POD") && lines[1].contains("CONTAINERS FOUND"));
        assert!(lines[2].starts_with("shop/web         yes"), "{text}");
        assert!(lines[2].ends_with("1/1"), "{text}");
        assert!(
            lines[3].contains("default policy opt-in (ignored pod sonde.dev/tracing=\"yes\")"),
            "{text}"
        );
        assert!(lines[3].ends_with("0/1"), "{text}");
    }
}
