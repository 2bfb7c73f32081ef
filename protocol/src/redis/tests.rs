use super::*;

fn cmd(args: &[&str]) -> Vec<u8> {
    let mut v = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        v.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
    }
    v
}

struct T {
    conn: RedisConn,
    out: Vec<RedisEvent>,
    off: [u64; 2],
}

impl T {
    fn new() -> Self {
        Self::with(RedisConn::new(Limits::default()))
    }
    fn with(conn: RedisConn) -> Self {
        Self {
            conn,
            out: Vec::new(),
            off: [0; 2],
        }
    }
    fn send(&mut self, side: Side, b: &[u8]) {
        let o = &mut self.off[side as usize];
        self.conn.data(side, *o, b, &mut self.out);
        *o += b.len() as u64;
    }
    fn req(&mut self, b: &[u8]) {
        self.send(Side::Request, b)
    }
    fn resp(&mut self, b: &[u8]) {
        self.send(Side::Response, b)
    }
    fn ops(&self) -> Vec<&RedisOperation> {
        self.out
            .iter()
            .filter_map(|e| match e {
                RedisEvent::Operation(o) => Some(&**o),
                _ => None,
            })
            .collect()
    }
    fn errors(&self) -> Vec<&'static str> {
        self.out
            .iter()
            .filter_map(|e| match e {
                RedisEvent::Error(e) => Some(e.kind.as_str()),
                _ => None,
            })
            .collect()
    }
}

#[test]
fn auth_and_hello_arguments_are_never_surfaced() {
    let mut t = T::new();
    t.req(&cmd(&["AUTH", "alice", "s3cret-pw"]));
    t.req(&cmd(&["HELLO", "3", "AUTH", "alice", "s3cret-pw"]));
    t.req(b"AUTH s3cret-pw\r\n");
    t.resp(b"+OK\r\n%1\r\n+proto\r\n:3\r\n-WRONGPASS invalid username-password pair\r\n");
    let ops = t.ops();
    let texts: Vec<String> = ops.iter().map(|o| o.query_text()).collect();
    assert_eq!(texts, ["AUTH ? ?", "HELLO ? ? ? ?", "AUTH ?"]);
    assert_eq!(ops[2].error_code(), Some("WRONGPASS"));
    assert!(!format!("{:?}", t.out).contains("s3cret"));
}

#[test]
fn resp3_types_attributes_and_pushes() {
    let mut t = T::new();
    t.req(&cmd(&["HGETALL", "h"]));
    t.req(&cmd(&["GET", "k"]));
    t.req(&cmd(&["EXISTS", "k"]));
    t.req(&cmd(&["CLIENT", "TRACKING", "on"]));
    // An attribute before a reply; a nested map; an invalidation push between replies.
    t.resp(b"|1\r\n+key-popularity\r\n%1\r\n$1\r\nk\r\n,0.5\r\n%2\r\n+a\r\n*2\r\n:1\r\n:2\r\n+b\r\n_\r\n");
    t.resp(b">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n");
    t.resp(b"=15\r\ntxt:Some string\r\n#t\r\n+OK\r\n");
    let kinds: Vec<_> = t
        .ops()
        .iter()
        .map(|o| o.reply.as_ref().map(|r| r.kind))
        .collect();
    assert_eq!(
        kinds,
        [
            Some(ReplyKind::Map),
            Some(ReplyKind::Bulk),
            Some(ReplyKind::Number),
            Some(ReplyKind::Simple)
        ]
    );
    assert!(
        t.out
            .iter()
            .any(|e| matches!(e, RedisEvent::Push { kind, .. } if kind == "invalidate"))
    );
    assert_eq!(t.ops()[3].query_text(), "CLIENT TRACKING ?");
    assert!(t.errors().is_empty());
}

#[test]
fn multi_exec_is_one_operation_per_command_and_select_applies_at_exec() {
    let mut t = T::new();
    for c in [
        &["MULTI"][..],
        &["SELECT", "3"],
        &["INCR", "n"],
        &["EXEC"],
        &["GET", "n"],
    ] {
        t.req(&cmd(c));
    }
    t.resp(b"+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n+OK\r\n:1\r\n$1\r\n1\r\n");
    let ops = t.ops();
    let seen: Vec<_> = ops
        .iter()
        .map(|o| (o.command.as_str(), o.database))
        .collect();
    assert_eq!(
        seen,
        [
            ("MULTI", Some(0)),
            ("SELECT", Some(0)),
            ("INCR", Some(0)),
            ("EXEC", Some(0)),
            ("GET", Some(3))
        ]
    );
}

#[test]
fn subscribe_with_two_channels_is_one_operation() {
    let mut t = T::new();
    t.req(&cmd(&["SUBSCRIBE", "a", "b"]));
    t.resp(b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n*3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n");
    t.resp(b"*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$2\r\nhi\r\n");
    t.req(&cmd(&["PING"]));
    t.resp(b"*2\r\n$4\r\npong\r\n$0\r\n\r\n");
    let ops = t.ops();
    assert_eq!(ops.len(), 2);
    assert_eq!(ops[0].response.map(|r| (r.first, r.last)), Some((0, 59)));
    assert!(matches!(t.out[1], RedisEvent::Push { ref kind, .. } if kind == "message"));
    assert_eq!(ops[1].command, "PING");
}

#[test]
fn hostile_input() {
    // 1 GiB bulk string declared: an error, nothing allocated by it.
    let mut t = T::new();
    t.req(b"*2\r\n$3\r\nSET\r\n$1073741824\r\nabc");
    assert_eq!(t.errors(), ["too_large"]);
    assert_eq!(t.conn.buffered(Side::Request), 0);
    // Deep nesting, unknown type, bad length, missing CRLF after a bulk.
    for (req, resp, want) in [
        (&b"*1\r\n"[..], &b"*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n"[..], "too_deep"),
        (b"*1\r\n$4\r\nPING\r\n", b"@weird\r\n", "unknown_type"),
        (b"*x\r\n", b"", "malformed_length"),
        (b"*1\r\n$4\r\nPINGxx", b"", "missing_crlf"),
    ] {
        let mut t = T::new();
        t.req(req);
        t.resp(resp);
        assert!(t.errors().contains(&want), "{want}: {:?}", t.out);
    }
    // A line that never ends: bounded.
    let mut t = T::new();
    t.req(&vec![b'A'; 70_000]);
    assert_eq!(t.errors(), ["too_large"]);
    assert!(t.conn.buffered(Side::Request) <= 64 * 1024);
    // A reply nobody asked for.
    let mut t = T::new();
    t.resp(b"+OK\r\n");
    assert_eq!(t.errors(), ["unexpected_reply"]);
}

#[test]
fn a_gap_inside_a_value_is_skipped_and_elsewhere_resynchronises() {
    let mut t = T::new();
    t.req(&cmd(&["GET", "k"]));
    t.resp(b"$100\r\n0123456789");
    let o = t.off[1];
    t.conn.gap(Side::Response, o, 80, &mut t.out);
    t.off[1] += 80;
    t.resp(b"0123456789\r\n");
    assert_eq!(t.ops()[0].reply.as_ref().map(|r| r.len), Some(Some(100)));
    // A gap in a command: lost, then found again after a quiet point.
    let o = t.off[0];
    t.conn.gap(Side::Request, o, 10, &mut t.out);
    t.off[0] += 10;
    t.resp(b"+OK\r\n");
    t.req(&cmd(&["GET", "x"]));
    t.resp(b"$-1\r\n");
    assert_eq!(t.errors(), ["gap"]);
    let ops = t.ops();
    assert_eq!(ops.len(), 2);
    assert_eq!((ops[1].command.as_str(), ops[1].database), ("GET", None));
    assert_eq!(ops[1].reply.as_ref().map(|r| r.kind), Some(ReplyKind::Null));
}

#[test]
fn query_text_is_bounded() {
    let mut t = T::new();
    let args: Vec<String> = (0..20).map(|i| i.to_string()).collect();
    let mut c = vec!["MSET"];
    c.extend(args.iter().map(String::as_str));
    t.req(&cmd(&c));
    t.resp(b"+OK\r\n");
    assert_eq!(t.ops()[0].query_text(), "MSET ? ? ? ? ? ? ? ? …");
    assert_eq!(t.ops()[0].args, 20);
}

#[test]
fn client_reply_off_and_skip_do_not_shift_the_pairing() {
    let mut t = T::new();
    t.req(&cmd(&["CLIENT", "REPLY", "SKIP"]));
    t.req(&cmd(&["SET", "a", "1"]));
    t.req(&cmd(&["GET", "a"]));
    t.req(&cmd(&["CLIENT", "REPLY", "OFF"]));
    t.req(&cmd(&["SET", "b", "2"]));
    t.req(&cmd(&["CLIENT", "REPLY", "ON"]));
    t.req(&cmd(&["GET", "b"]));
    t.resp(b"$1\r\n1\r\n+OK\r\n$1\r\n2\r\n");
    let seen: Vec<_> = t
        .ops()
        .iter()
        .map(|o| (o.query_text(), o.reply.as_ref().map(|r| r.kind)))
        .collect();
    let want = [
        ("CLIENT REPLY ?", None),
        ("SET ? ?", None),
        ("CLIENT REPLY ?", None),
        ("SET ? ?", None),
        ("GET ?", Some(ReplyKind::Bulk)),
        ("CLIENT REPLY ?", Some(ReplyKind::Simple)),
        ("GET ?", Some(ReplyKind::Bulk)),
    ];
    let want: Vec<_> = want.iter().map(|(q, k)| (q.to_string(), *k)).collect();
    assert_eq!(seen, want);
    assert!(t.errors().is_empty());
}

#[test]
fn heap_bytes_sees_a_partial_line_and_pipelined_commands() {
    let mut t = T::new();
    let fresh = t.conn.heap_bytes();
    assert!(fresh < 1024, "{fresh}");
    // An inline command 10 006 bytes long, its line not ended: held.
    let line = format!("SET k {}", "x".repeat(10_000));
    t.req(line.as_bytes());
    assert_eq!(t.conn.buffered(Side::Request), line.len());
    let partial = t.conn.heap_bytes();
    assert!((10_000..2 * line.len()).contains(&partial), "{partial}");
    // The line ends: only the queued command is left (its first words, 64 bytes at most).
    t.req(b"\r\n");
    assert_eq!(t.conn.pending(), 1);
    let queued = t.conn.heap_bytes();
    assert!(queued < 2048, "{queued}");
    t.resp(b"+OK\r\n");
    assert_eq!(t.ops().len(), 1);
    // 100 pipelined commands, no reply yet.
    let base = t.conn.heap_bytes();
    let batch: Vec<u8> = (0..100)
        .flat_map(|i| cmd(&["GET", &format!("k{i}")]))
        .collect();
    t.req(&batch);
    assert_eq!(t.conn.pending(), 100);
    let grown = t.conn.heap_bytes() - base;
    let op = std::mem::size_of::<RedisOperation>();
    assert!(grown >= 100 * (op + 3), "{grown}");
    assert!(grown < 256 * (op + 64), "{grown}");
}
