//! The console as SSH sees it: [`SshHandle`] implements [`SshDevice`] for a router.
//!
//! A console line (`/ppp secret print`, `/system identity set name=x`, `/ppp secret remove
//! alice`) is translated to an API command and run through the same engine as the API, then
//! formatted as the console would: singletons as `key: value` lines, tables in the
//! `print detail` layout (numbered rows, `X` flag for disabled; the columnar default layout is
//! not reproduced), errors as their message or `bad command name X (line 1 column N)`.

use std::sync::Arc;
use std::time::Instant;

use crate::device::{Command, Effect};
use crate::reply::Reply;
use crate::router::{Router, lock};
use crate::ssh::SshDevice;
use crate::word::Decoder;

/// A router seen through SSH.
#[derive(Debug, Clone)]
pub struct SshHandle(pub Arc<Router>);

const VERBS: &[&str] = &[
    "print",
    "getall",
    "add",
    "set",
    "remove",
    "enable",
    "disable",
    "comment",
    "unset",
    "reboot",
    "export",
    "check-for-updates",
    "install",
    "download",
    "save",
    "load",
];

fn tokens(line: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut start = 0;
    let mut quoted = false;
    let mut chars = line.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => quoted = !quoted,
            '\\' if quoted => {
                if let Some((_, n)) = chars.next() {
                    cur.push(n);
                }
            }
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    out.push((start, std::mem::take(&mut cur)));
                }
            }
            c => {
                if cur.is_empty() {
                    start = i;
                }
                cur.push(c);
            }
        }
    }
    if !cur.is_empty() {
        out.push((start, cur));
    }
    out
}

/// Turns a console line into an API command, or the console's error text.
fn translate(line: &str) -> Result<Command, String> {
    let toks = tokens(line.trim());
    let mut path = String::new();
    let mut verb = None;
    let mut attrs = Vec::new();
    let mut numbers = Vec::new();
    for (col, t) in toks {
        if verb.is_none() {
            if t.contains('=') {
                return Err(format!("bad command name {t} (line 1 column {})", col + 1));
            }
            for seg in t.split('/').filter(|s| !s.is_empty()) {
                if VERBS.contains(&seg) {
                    verb = Some(seg.to_string());
                } else if verb.is_none() {
                    path.push('/');
                    path.push_str(seg);
                }
            }
            continue;
        }
        match t.split_once('=') {
            Some((k, v)) => attrs.push((k.to_string(), v.to_string())),
            None if verb.as_deref() == Some("print") || verb.as_deref() == Some("export") => {
                attrs.push((t, String::new()));
            }
            None => numbers.push(t),
        }
    }
    let verb = verb.ok_or_else(|| {
        format!(
            "bad command name {} (line 1 column 1)",
            path.trim_start_matches('/')
        )
    })?;
    if !numbers.is_empty() {
        attrs.insert(0, ("numbers".to_string(), numbers.join(",")));
    }
    Ok(Command {
        word: format!("{path}/{verb}"),
        attrs,
        ..Command::default()
    })
}

fn decode(buf: &[u8]) -> Vec<Vec<String>> {
    let mut d = Decoder::new();
    d.push(buf);
    let mut out = Vec::new();
    while let Ok(Some(s)) = d.next_sentence() {
        out.push(s);
    }
    out
}

fn format_reply(sentences: &[Vec<String>]) -> String {
    let mut out = String::new();
    let rows: Vec<Vec<(String, String)>> = sentences
        .iter()
        .filter(|s| s.first().map(String::as_str) == Some("!re"))
        .map(|s| {
            s[1..]
                .iter()
                .filter_map(|w| {
                    w.strip_prefix('=')?
                        .split_once('=')
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                })
                .collect()
        })
        .collect();
    for s in sentences {
        if s.first().map(String::as_str) == Some("!trap")
            && let Some(m) = s.iter().find_map(|w| w.strip_prefix("=message="))
        {
            out.push_str(m);
            out.push('\n');
        }
    }
    if !out.is_empty() {
        return out;
    }
    let singleton = rows.len() == 1 && !rows[0].iter().any(|(k, _)| k == ".id");
    if singleton {
        let w = rows[0].iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        for (k, v) in &rows[0] {
            out.push_str(&format!("{k:>w$}: {v}\n", w = w + 2));
        }
        return out;
    }
    if rows.is_empty() {
        return out;
    }
    out.push_str("Flags: X - disabled\n");
    for (n, row) in rows.iter().enumerate() {
        let disabled = row.iter().any(|(k, v)| k == "disabled" && v == "true");
        let mut line = format!("{n:>2} {} ", if disabled { "X" } else { " " });
        for (k, v) in row.iter().filter(|(k, _)| k != ".id" && k != "disabled") {
            if v.is_empty() || v.contains(' ') {
                line.push_str(&format!(" {k}=\"{v}\""));
            } else {
                line.push_str(&format!(" {k}={v}"));
            }
        }
        out.push_str(line.trim_end());
        out.push_str("\n\n");
    }
    out
}

impl SshDevice for SshHandle {
    fn authenticate(&self, user: &str, password: &str) -> bool {
        lock(&self.0.device).authenticate(user, password)
    }

    fn export(&self, show_sensitive: bool, hide_sensitive: bool) -> String {
        let dev = lock(&self.0.device);
        crate::export::export(&dev, Instant::now(), show_sensitive, hide_sensitive)
    }

    fn cli(&self, line: &str) -> String {
        if line.trim().is_empty() {
            return String::new();
        }
        let cmd = match translate(line) {
            Ok(c) => c,
            Err(e) => return format!("{e}\n"),
        };
        lock(&self.0.stats).record(&cmd.word, Instant::now());
        if cmd.word == "/export" {
            let show = cmd.get("show-sensitive").is_some();
            let hide = cmd.get("hide-sensitive").is_some();
            return self.export(show, hide);
        }
        let mut buf = Vec::new();
        let effect = {
            let mut dev = lock(&self.0.device);
            let mut reply = Reply::new(&mut buf, None);
            match dev.exec(&cmd, Instant::now(), &mut reply) {
                Ok(e) => e,
                Err(e) => {
                    return match e {
                        crate::model::CommandError::NoSuchDirectory(x) => {
                            let col = line.find(&x).map_or(1, |c| c + 1);
                            format!("bad command name {x} (line 1 column {col})\n")
                        }
                        crate::model::CommandError::NoSuchCommand => {
                            let last = cmd.word.rsplit('/').next().unwrap_or("");
                            let col = line.find(last).map_or(1, |c| c + 1);
                            format!("bad command name {last} (line 1 column {col})\n")
                        }
                        other => format!("{other}\n"),
                    };
                }
            }
        };
        match effect {
            Effect::Reboot | Effect::RebootAfterReply => {
                self.0.reboot(None);
                String::new()
            }
            Effect::CheckForUpdates => {
                let rows = lock(&self.0.device).update_check_rows();
                let mut out = String::new();
                if let Some(last) = rows.last() {
                    let w = last.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
                    for (k, v) in last.iter().filter(|(k, _)| *k != ".section") {
                        out.push_str(&format!("{k:>w$}: {v}\n", w = w + 2));
                    }
                }
                out
            }
            _ => format_reply(&decode(&buf)),
        }
    }

    fn file_list(&self) -> Vec<(String, u64)> {
        lock(&self.0.device).files()
    }

    fn file_read(&self, name: &str) -> Option<Vec<u8>> {
        lock(&self.0.device).file_data.get(name).cloned()
    }

    fn file_write(&self, name: &str, data: Vec<u8>) {
        lock(&self.0.device).put_file(name, data, Instant::now());
    }

    fn file_remove(&self, name: &str) -> bool {
        lock(&self.0.device).remove_file(name)
    }

    fn is_up(&self) -> bool {
        self.0.is_up()
    }

    fn identity(&self) -> String {
        lock(&self.0.device).identity.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_lines_translate() {
        let c = translate("/ppp secret add name=a password=\"x y\"").unwrap();
        assert_eq!(c.word, "/ppp/secret/add");
        assert_eq!(
            c.attrs,
            vec![
                ("name".into(), "a".into()),
                ("password".into(), "x y".into())
            ]
        );
        let c = translate("/ppp/secret/remove alice").unwrap();
        assert_eq!(c.word, "/ppp/secret/remove");
        assert_eq!(c.get("numbers"), Some("alice"));
        assert_eq!(
            translate("/system identity print").unwrap().word,
            "/system/identity/print"
        );
    }
}
