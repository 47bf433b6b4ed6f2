//! `/export` text (routeros-replies.md §17), from the device's tables.
//!
//! A header with date, version, software id, model and serial number; then per menu a
//! `/menu path` line and `add`/`set` lines with non-default writable fields sorted
//! alphabetically, wrapped at 79 columns with ` \` and four spaces. Built-in rows are `set *ID`
//! (or `set NAME` on `/ip service`). v6 shows sensitive values unless `hide-sensitive`; v7 hides
//! them unless `show-sensitive`. Dynamic entries and `/user` are not exported.

use std::time::Instant;

use crate::device::Device;
use crate::menus::{
    ADDRESS_LIST, HS_PROFILE, HS_USER, PPP_PROFILE, PPP_SECRET, QUEUE, SERVICE, USER_GROUP,
};
use crate::model::format_id;

const ORDER: &[(&str, &str)] = &[
    (USER_GROUP, "/user group"),
    (HS_PROFILE, "/ip hotspot user profile"),
    (PPP_PROFILE, "/ppp profile"),
    (QUEUE, "/queue simple"),
    (ADDRESS_LIST, "/ip firewall address-list"),
    (SERVICE, "/ip service"),
    (PPP_SECRET, "/ppp secret"),
    (HS_USER, "/ip hotspot user"),
];

fn quote(v: &str) -> String {
    let plain = !v.is_empty()
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:/,*@+".contains(c));
    if plain {
        v.to_string()
    } else {
        let mut s = String::from("\"");
        for c in v.chars() {
            if matches!(c, '"' | '\\' | '$' | '?') {
                s.push('\\');
            }
            s.push(c);
        }
        s.push('"');
        s
    }
}

fn wrap(head: &str, tokens: &[String], out: &mut String) {
    let mut line = head.to_string();
    for t in tokens {
        if line.len() + 1 + t.len() > 77 && line.len() > 4 {
            out.push_str(&line);
            out.push_str(" \\\n");
            line = format!("    {t}");
        } else {
            line.push(' ');
            line.push_str(t);
        }
    }
    out.push_str(&line);
    out.push('\n');
}

fn software_id(index: usize) -> String {
    format!("{:04X}-{:04X}", 0x5E1D + index, 0x7A11)
}

/// The export text of a device.
pub fn export(dev: &Device, now: Instant, show_sensitive: bool, hide_sensitive: bool) -> String {
    let p = &dev.personality;
    let show = if p.export_sensitive_by_default {
        !hide_sensitive
    } else {
        show_sensitive
    };
    let wall = dev.boot_wall + now.saturating_duration_since(dev.boot);
    let mut out = format!(
        "# {} by RouterOS {}\n# software id = {}\n#\n# model = {}\n# serial number = {}\n",
        p.date(wall),
        dev.update.installed,
        software_id(dev.config.index),
        p.board.model,
        dev.serial()
    );
    for (path, cli) in ORDER {
        let Some(t) = dev.tables.get(path) else {
            continue;
        };
        let spec = &t.spec;
        let mut body = String::new();
        for r in t.rows() {
            let dynamic = spec.field_index("dynamic").and_then(|i| r.get(i)) == Some("true");
            if dynamic || r.expires.is_some() {
                continue;
            }
            let mut toks: Vec<String> = spec
                .fields
                .iter()
                .enumerate()
                .filter(|(_, f)| !f.read_only && !f.hidden && (show || !f.sensitive))
                .filter(|(_, f)| !(r.builtin && f.name == "name"))
                .filter_map(|(i, f)| {
                    let v = r.get(i)?;
                    (Some(v) != f.default).then(|| format!("{}={}", f.name, quote(v)))
                })
                .collect();
            toks.sort();
            if r.builtin {
                if toks.is_empty() {
                    continue;
                }
                let name = spec
                    .field_index("name")
                    .and_then(|i| r.get(i))
                    .unwrap_or("");
                let head = if *path == SERVICE {
                    format!("set {name}")
                } else {
                    format!("set {}", format_id(r.id))
                };
                wrap(&head, &toks, &mut body);
            } else {
                wrap("add", &toks, &mut body);
            }
        }
        if !body.is_empty() {
            out.push_str(cli);
            out.push('\n');
            out.push_str(&body);
        }
    }
    out.push_str("/system identity\n");
    wrap("set", &[format!("name={}", quote(&dev.identity))], &mut out);
    out
}
