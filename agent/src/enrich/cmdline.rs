//! Credentials on command lines, redacted where `process.command_line` is built, before it is
//! cached or cut to length.
//!
//! The privacy policy (`privacy::redact_command_line`) also redacts header-like forms
//! (`-H "Authorization: Bearer …"`, `?api_key=…`) when spans leave; this covers what it
//! does not: credentials in URLs (`postgres://user:pass@db`), secret-named options and
//! variables (`--db-password=…`, `--token …`, `DB_PASSWORD=…`, `-Dapp.secret=…`), `user:pass`
//! after `-u`/`--user`, and the short password flags of common clients (`mysql -pSECRET`,
//! `redis-cli -a SECRET`, `sshpass -p SECRET`, `mongosh -p SECRET`).
//!
//! Arguments are taken one by one, and the words inside each (whitespace-separated), so a
//! command inside `sh -c "…"` is covered too; a value with spaces in it is redacted up to its
//! first space only. A blank argument is a value its program erased itself (curl blanks
//! `-u user:pass` in its own argv): it answers the option before it.

use std::sync::OnceLock;

use regex::Regex;

pub const REDACTED: &str = "REDACTED";

/// Last words of a secret name (`DB_PASSWORD`, `--client-secret`, `access_token`).
const SECRET_WORDS: &[&str] = &[
    "password",
    "passwd",
    "pass",
    "pwd",
    "secret",
    "token",
    "credentials",
    "credential",
    "auth",
    "apikey",
    "accesskey",
    "secretkey",
    "privatekey",
];

/// Words before `key` that make it secret (`API_KEY`, `aws_secret_access_key`).
const SECRET_KEY_QUALIFIERS: &[&str] = &[
    "api",
    "access",
    "secret",
    "private",
    "signing",
    "encryption",
    "master",
];

/// Names that end in a secret word but are not secrets.
const NOT_SECRET: &[&str] = &["pwd", "oldpwd"];

/// Programs whose short flag takes a password: (program names, flag letter, whether the value
/// may be the next word). `mysql -p` takes it attached only (`mysql -p db` prompts and `db` is
/// the database).
const PASSWORD_FLAGS: &[(&[&str], char, bool)] = &[
    (
        &[
            "mysql",
            "mysqldump",
            "mysqladmin",
            "mysqlimport",
            "mysqlcheck",
            "mysqlshow",
            "mysqlslap",
            "mariadb",
            "mariadb-dump",
            "mariadb-admin",
            "mariadb-import",
            "mariadb-check",
        ],
        'p',
        false,
    ),
    (&["redis-cli", "valkey-cli"], 'a', true),
    (&["sshpass"], 'p', true),
    (
        &[
            "mongo",
            "mongosh",
            "mongodump",
            "mongorestore",
            "mongoexport",
            "mongoimport",
        ],
        'p',
        true,
    ),
];

/// Options whose value is `user:password`.
const USER_OPTIONS: &[&str] = &["-u", "--user", "--proxy-user"];

/// Whether an option or variable name names a secret: its last word (split at `_`, `-`, `.`)
/// is a secret word, or it is `key` qualified by a secret word (`API_KEY`).
pub fn is_secret_name(name: &str) -> bool {
    let name = name.trim_start_matches('-').to_ascii_lowercase();
    if name.is_empty() || NOT_SECRET.contains(&name.as_str()) {
        return false;
    }
    let words: Vec<&str> = name
        .split(['_', '-', '.'])
        .filter(|w| !w.is_empty())
        .collect();
    match words.as_slice() {
        [.., before, "key"] => SECRET_KEY_QUALIFIERS.contains(before),
        [.., last] => SECRET_WORDS.contains(last),
        [] => false,
    }
}

fn userinfo() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)[^/?#@\s]+@")
            .expect("a valid built-in pattern")
    })
}

/// What the previous word asks of the next one.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pending {
    None,
    /// The next word is a secret (`--token VALUE`, `redis-cli -a VALUE`).
    Secret,
    /// The next word is `user:password` (`-u user:pass`).
    UserPass,
}

type Program = &'static (&'static [&'static str], char, bool);

/// A process's arguments with the credentials in them replaced by `REDACTED`.
pub fn redact_args<S: AsRef<str>>(args: &[S]) -> Vec<String> {
    let mut program: Option<Program> = None;
    let mut pending = Pending::None;
    args.iter()
        .map(|arg| {
            let arg = arg.as_ref();
            if arg.trim().is_empty() {
                pending = Pending::None;
                return arg.to_owned();
            }
            let mut out = String::with_capacity(arg.len());
            let mut rest = arg;
            while !rest.is_empty() {
                let space = rest.len() - rest.trim_start().len();
                out.push_str(&rest[..space]);
                rest = &rest[space..];
                let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
                let (word, after) = rest.split_at(end);
                rest = after;
                let (redacted, next) = redact_word(word, pending, &mut program);
                out.push_str(&redacted);
                pending = next;
            }
            out
        })
        .collect()
}

/// `line` (one string of words) with the credentials in it replaced by `REDACTED`.
pub fn redact(line: &str) -> String {
    redact_args(&[line]).concat()
}

fn redact_word(word: &str, pending: Pending, program: &mut Option<Program>) -> (String, Pending) {
    let word = userinfo().replace_all(word, "${scheme}REDACTED@");
    if !word.starts_with('-') {
        match pending {
            Pending::Secret => return (REDACTED.to_owned(), Pending::None),
            Pending::UserPass => return (user_pass(&word), Pending::None),
            Pending::None => {}
        }
    }
    // A program of `PASSWORD_FLAGS` (by base name) governs the words after it.
    let base = word.rsplit('/').next().unwrap_or(&word);
    if let Some(p) = PASSWORD_FLAGS
        .iter()
        .find(|(names, ..)| names.contains(&base))
    {
        *program = Some(p);
        return (word.into_owned(), Pending::None);
    }
    // NAME=value, --name=value, -Dname=value.
    if let Some((name, value)) = word.split_once('=')
        && !value.is_empty()
        && !name.contains([':', '/', '?'])
        && is_secret_name(name.strip_prefix("-D").unwrap_or(name))
    {
        return (format!("{name}={REDACTED}"), Pending::None);
    }
    if USER_OPTIONS.contains(&word.as_ref()) {
        return (word.into_owned(), Pending::UserPass);
    }
    if let Some(v) = word.strip_prefix("-u").filter(|v| v.contains(':')) {
        return (format!("-u{}", user_pass(v)), Pending::None);
    }
    if let Some(&(_, letter, separate)) = *program
        && let Some(v) = word.strip_prefix('-').and_then(|w| w.strip_prefix(letter))
    {
        // One password per program: what follows may be another command (`sshpass -p X ssh -p
        // 2222 host`).
        if !v.is_empty() {
            *program = None;
            return (format!("-{letter}{REDACTED}"), Pending::None);
        }
        if separate {
            *program = None;
            return (word.into_owned(), Pending::Secret);
        }
    }
    // --password VALUE, -token VALUE (not --no-password: a switch).
    if word.starts_with('-')
        && !word.contains('=')
        && !word
            .trim_start_matches('-')
            .to_ascii_lowercase()
            .starts_with("no-")
        && is_secret_name(&word)
    {
        return (word.into_owned(), Pending::Secret);
    }
    (word.into_owned(), Pending::None)
}

/// `user:password` with the password redacted; anything else (a URL, a bare user) as it is.
fn user_pass(v: &str) -> String {
    match v.split_once(':') {
        Some((user, pass)) if !pass.is_empty() && !pass.starts_with("//") => {
            format!("{user}:{REDACTED}")
        }
        _ => v.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn same(line: &str) {
        assert_eq!(redact(line), line, "must not be redacted");
    }

    #[test]
    fn credentials_in_urls_keep_scheme_and_host() {
        assert_eq!(
            redact("psql postgres://app:hunter2@db.internal:5432/orders"),
            "psql postgres://REDACTED@db.internal:5432/orders"
        );
        assert_eq!(
            redact("git clone https://ghp_abc123@github.com/org/repo.git"),
            "git clone https://REDACTED@github.com/org/repo.git"
        );
        assert_eq!(
            redact("app --db=mysql://root:pw@127.0.0.1/x --cache redis://:pw@r:6379"),
            "app --db=mysql://REDACTED@127.0.0.1/x --cache redis://REDACTED@r:6379"
        );
        same("curl http://example.com/users/@me?x=1 https://h/a@b");
        same("git clone git@github.com:org/repo.git");
    }

    #[test]
    fn secret_named_options_with_equals_or_a_separate_value() {
        assert_eq!(
            redact("app --password=hunter2 --db-password hunter3 --token abc --client-secret s"),
            "app --password=REDACTED --db-password REDACTED --token REDACTED --client-secret REDACTED"
        );
        assert_eq!(
            redact("app -api-key k1 --API_KEY=k2 --aws-secret-access-key k3 --pass p"),
            "app -api-key REDACTED --API_KEY=REDACTED --aws-secret-access-key REDACTED --pass REDACTED"
        );
        assert_eq!(
            redact("java -Ddb.password=pw -Dapp.name=x -jar app.jar"),
            "java -Ddb.password=REDACTED -Dapp.name=x -jar app.jar"
        );
    }

    #[test]
    fn secret_named_variables() {
        assert_eq!(
            redact(
                "env PASSWORD=a DB_PASSWORD=b db_passwd=c MY_SECRET=d GITHUB_TOKEN=e API_KEY=f \
                 AWS_ACCESS_KEY=g PRIVATE_KEY=h GOOGLE_CREDENTIALS=i REDIS_AUTH=j DB_PASS=k app"
            ),
            "env PASSWORD=REDACTED DB_PASSWORD=REDACTED db_passwd=REDACTED MY_SECRET=REDACTED \
             GITHUB_TOKEN=REDACTED API_KEY=REDACTED AWS_ACCESS_KEY=REDACTED PRIVATE_KEY=REDACTED \
             GOOGLE_CREDENTIALS=REDACTED REDIS_AUTH=REDACTED DB_PASS=REDACTED app"
        );
    }

    #[test]
    fn short_password_flags_of_common_clients() {
        assert_eq!(
            redact("mysql -h db -uroot -pS3cret orders"),
            "mysql -h db -uroot -pREDACTED orders"
        );
        // `mysql -p db` prompts for the password; `db` is the database.
        same("mysql -u root -p orders");
        assert_eq!(
            redact("/usr/bin/mariadb-dump -pS3cret --all-databases"),
            "/usr/bin/mariadb-dump -pREDACTED --all-databases"
        );
        assert_eq!(
            redact("redis-cli -h r -a S3cret ping"),
            "redis-cli -h r -a REDACTED ping"
        );
        assert_eq!(
            redact("sshpass -p S3cret ssh -p 2222 host"),
            "sshpass -p REDACTED ssh -p 2222 host"
        );
        assert_eq!(
            redact("sh -c mysql -pS3cret -e select"),
            "sh -c mysql -pREDACTED -e select"
        );
        assert_eq!(
            redact("mongosh --host h -u admin -p S3cret"),
            "mongosh --host h -u admin -p REDACTED"
        );
    }

    #[test]
    fn user_and_password_options() {
        assert_eq!(
            redact("curl -u alice:S3cret --proxy-user bob:pw2 http://h/"),
            "curl -u alice:REDACTED --proxy-user bob:REDACTED http://h/"
        );
        assert_eq!(redact("curl -ualice:S3cret h"), "curl -ualice:REDACTED h");
        same("curl -u alice http://h/");
        same("curl -u http://h/");
    }

    #[test]
    fn arguments_are_taken_one_by_one() {
        // curl blanks the value of --proxy-user in its own argv (what /proc shows): the blank
        // argument answers the option, the URL after it is not taken for `user:pass`.
        assert_eq!(
            redact_args(&[
                "curl",
                "--proxy-user",
                "            ",
                "http://h:80/a?x=1",
                "--token",
                "t 1",
                "sh",
                "-c",
                "mysql -pS3cret db"
            ]),
            [
                "curl",
                "--proxy-user",
                "            ",
                "http://h:80/a?x=1",
                "--token",
                "REDACTED 1",
                "sh",
                "-c",
                "mysql -pREDACTED db"
            ]
        );
    }

    #[test]
    fn what_is_not_a_secret_is_kept() {
        same("python3 app.py --port 8080 -p 8080");
        same("ssh -p2222 -l root host");
        same("nginx -g daemon off; -p /var/www");
        same("app --token-file /run/token --password-file=/run/pw --max-tokens 100");
        same("app --auth-type basic --secret-name db --key /etc/tls.key --keyfile k");
        same("env PWD=/home/x OLDPWD=/ KEYBOARD=us TOKENIZER=bert PASSPORT=x app");
        same("psql --no-password -h db orders");
        same("docker run -p8080:80 -e MODE=prod img");
        same("app --password");
        same("app --password --verbose");
        same("");
    }

    #[test]
    fn secret_names() {
        for n in [
            "password",
            "DB_PASSWORD",
            "--db-password",
            "client.secret",
            "x-auth-token",
            "ApiKey",
            "aws_secret_access_key",
            "SIGNING_KEY",
        ] {
            assert!(is_secret_name(n), "{n}");
        }
        for n in [
            "PWD",
            "password_file",
            "key",
            "monkey",
            "keyboard",
            "passport",
            "bypass_cache",
            "tokens",
            "",
        ] {
            assert!(!is_secret_name(n), "{n}");
        }
    }
}
