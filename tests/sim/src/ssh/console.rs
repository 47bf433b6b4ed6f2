//! The console rules the SSH endpoint applies to a command line before the device sees it:
//! `;` separates commands, `/export [show-sensitive] [hide-sensitive] [terse] [verbose]
//! [compact] [file=NAME]` is answered from [`SshDevice::export`], and anything else goes to
//! [`SshDevice::cli`]. Plain functions without I/O; `mod.rs` moves the bytes.

use super::SshDevice;

/// Runs a console command line against the device and returns what the console prints, with
/// `\n` line ends (see [`crlf`] for the wire form).
///
/// A syntax error in an `/export` stops the line there, as RouterOS checks a command before it
/// runs it.
pub(super) fn run(device: &dyn SshDevice, line: &str) -> String {
    let mut out = String::new();
    for (offset, command) in split_commands(line) {
        match parse_export(command, line[..offset].chars().count()) {
            None => out.push_str(&device.cli(command)),
            Some(Ok(export)) => {
                let text = device.export(export.show_sensitive, export.hide_sensitive);
                match export.file {
                    Some(name) => device.file_write(&name, text.into_bytes()),
                    None => out.push_str(&text),
                }
            }
            Some(Err(message)) => {
                out.push_str(&message);
                out.push('\n');
                break;
            }
        }
    }
    out
}

/// An `/export` command as parsed from the command line.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Export {
    /// `show-sensitive` was given.
    pub show_sensitive: bool,
    /// `hide-sensitive` was given.
    pub hide_sensitive: bool,
    /// `file=NAME`: the file to write (`NAME.rsc`) instead of printing.
    pub file: Option<String>,
}

/// Parses one command (no `;`) that has `column` characters before it on its line: `None` if
/// it is not an `/export`, else the export or the console's error text.
pub(super) fn parse_export(command: &str, column: usize) -> Option<Result<Export, String>> {
    let mut words = tokens(command).into_iter();
    let (_, first) = words.next()?;
    if first != "/export" && first != "export" {
        return None;
    }
    let mut export = Export::default();
    for (start, word) in words {
        match word.as_str() {
            "show-sensitive" => export.show_sensitive = true,
            "hide-sensitive" => export.hide_sensitive = true,
            "terse" | "verbose" | "compact" => {}
            _ => match word.strip_prefix("file=") {
                Some(name) if !name.is_empty() => {
                    // RouterOS adds the extension; a name that has it already keeps one [U].
                    let file = if name.ends_with(".rsc") {
                        name.to_owned()
                    } else {
                        format!("{name}.rsc")
                    };
                    export.file = Some(file);
                }
                _ => {
                    let column = column + command[..start].chars().count() + 1;
                    return Some(Err(format!(
                        "expected end of command (line 1 column {column})"
                    )));
                }
            },
        }
    }
    Some(Ok(export))
}

/// Splits a command line at `;` outside double quotes; each command comes with its byte
/// offset in the line, leading spaces skipped, and empty commands dropped.
pub(super) fn split_commands(line: &str) -> Vec<(usize, &str)> {
    let mut commands = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    let mut escaped = false;
    let mut push = |from: usize, to: usize| {
        let piece = &line[from..to];
        let trimmed = piece.trim_start();
        let skipped = piece.len() - trimmed.len();
        let trimmed = trimmed.trim_end();
        if !trimmed.is_empty() {
            commands.push((from + skipped, trimmed));
        }
    };
    for (i, c) in line.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ';' if !quoted => {
                push(start, i);
                start = i + 1;
            }
            _ => {}
        }
    }
    push(start, line.len());
    commands
}

/// The words of one command, each with its byte offset: split at whitespace outside double
/// quotes; quotes are removed and `\"`, `\\` inside them unescaped.
fn tokens(command: &str) -> Vec<(usize, String)> {
    let mut words = Vec::new();
    let mut current: Option<(usize, String)> = None;
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in command.char_indices() {
        if !quoted && c.is_whitespace() {
            words.extend(current.take());
            continue;
        }
        let (_, word) = current.get_or_insert_with(|| (i, String::new()));
        match c {
            _ if escaped => {
                word.push(c);
                escaped = false;
            }
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            _ => word.push(c),
        }
    }
    words.extend(current);
    words
}

/// The console text with every bare `\n` turned into `\r\n`, as RouterOS sends it over SSH.
pub(super) fn crlf(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 16);
    let mut previous = '\0';
    for c in text.chars() {
        if c == '\n' && previous != '\r' {
            out.push('\r');
        }
        out.push(c);
        previous = c;
    }
    out
}

/// Attribute names whose values never reach the logs.
const SECRET_ATTRIBUTES: [&str; 3] = ["password=", "secret=", "passphrase="];

/// The command line for logging: values of password-like attributes replaced by `***`.
pub(super) fn redact(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some((at, key)) = SECRET_ATTRIBUTES
        .iter()
        .filter_map(|key| rest.find(key).map(|at| (at, *key)))
        .min()
    {
        let (head, tail) = rest.split_at(at + key.len());
        out.push_str(head);
        out.push_str("***");
        let end = match tail.strip_prefix('"') {
            Some(inner) => inner.find('"').map_or(tail.len(), |close| close + 2),
            None => tail.find(char::is_whitespace).unwrap_or(tail.len()),
        };
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_export(command: &str, expected: Option<Result<Export, &str>>) {
        let got = parse_export(command, 0);
        assert_eq!(got, expected.map(|r| r.map_err(str::to_owned)), "{command}");
    }

    #[test]
    fn export_arguments() {
        let plain = || Export::default();
        check_export("/export", Some(Ok(plain())));
        check_export("export terse verbose compact", Some(Ok(plain())));
        check_export(
            "/export show-sensitive",
            Some(Ok(Export {
                show_sensitive: true,
                ..plain()
            })),
        );
        check_export(
            "/export hide-sensitive file=cfg",
            Some(Ok(Export {
                hide_sensitive: true,
                file: Some("cfg.rsc".to_owned()),
                ..plain()
            })),
        );
        check_export(
            r#"/export file="my cfg.rsc""#,
            Some(Ok(Export {
                file: Some("my cfg.rsc".to_owned()),
                ..plain()
            })),
        );
        check_export(
            "/export bogus",
            Some(Err("expected end of command (line 1 column 9)")),
        );
        check_export(
            "/export file=",
            Some(Err("expected end of command (line 1 column 9)")),
        );
        check_export("/system identity print", None);
        check_export("/exporter", None);
        check_export("", None);
    }

    #[test]
    fn commands_split_at_semicolons_outside_quotes() {
        assert_eq!(
            split_commands(r#" /a b ; /c comment="x;\"y" ;; "#),
            vec![(1, "/a b"), (8, r#"/c comment="x;\"y""#)]
        );
        assert!(split_commands("  ").is_empty());
    }

    #[test]
    fn error_column_counts_from_the_line_start() {
        let (offset, command) = split_commands("/x; /export nope")[1];
        assert_eq!(offset, 4);
        assert_eq!(
            parse_export(command, offset),
            Some(Err("expected end of command (line 1 column 13)".to_owned()))
        );
    }

    #[test]
    fn line_ends_become_crlf() {
        assert_eq!(crlf("a\nb\r\nc\n"), "a\r\nb\r\nc\r\n");
        assert_eq!(crlf(""), "");
    }

    #[test]
    fn secrets_are_redacted() {
        assert_eq!(
            redact("/ppp secret add name=u password=p1 profile=x"),
            "/ppp secret add name=u password=*** profile=x"
        );
        assert_eq!(
            redact(r#"/radius add secret="a b" address=1.2.3.4"#),
            "/radius add secret=*** address=1.2.3.4"
        );
        assert_eq!(redact("password="), "password=***");
        assert_eq!(redact(r#"password="open"#), "password=***");
    }
}
