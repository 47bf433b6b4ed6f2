//! Reply sentences: `!re`, `!done`, `!trap`, `!empty`, `!fatal`, written straight into a buffer.
//!
//! Every sentence of a tagged command carries `.tag=N` right after the reply word, as real
//! routers send it.

use crate::model::CommandError;
use crate::word::{encode_attr, encode_word};

/// Writes reply sentences for one command.
#[derive(Debug)]
pub struct Reply<'a> {
    out: &'a mut Vec<u8>,
    tag: Option<&'a str>,
}

impl<'a> Reply<'a> {
    /// A writer appending to `out`, tagging with `tag`.
    pub fn new(out: &'a mut Vec<u8>, tag: Option<&'a str>) -> Self {
        Self { out, tag }
    }

    /// Starts a sentence with a reply word and the tag.
    pub fn start(&mut self, word: &str) {
        encode_word(word.as_bytes(), self.out);
        if let Some(t) = self.tag {
            crate::word::encode_len(5 + t.len(), self.out);
            self.out.extend_from_slice(b".tag=");
            self.out.extend_from_slice(t.as_bytes());
        }
    }

    /// Adds `=name=value`.
    pub fn attr(&mut self, name: &str, value: &str) {
        encode_attr(name, value, self.out);
    }

    /// Ends the sentence.
    pub fn end(&mut self) {
        self.out.push(0);
    }

    /// `!done` alone.
    pub fn done(&mut self) {
        self.start("!done");
        self.end();
    }

    /// `!done =ret=value`.
    pub fn done_ret(&mut self, ret: &str) {
        self.start("!done");
        self.attr("ret", ret);
        self.end();
    }

    /// `!empty` alone.
    pub fn empty(&mut self) {
        self.start("!empty");
        self.end();
    }

    /// The trap sentence(s) of an error (without the following `!done`).
    pub fn trap(&mut self, e: &CommandError) {
        self.start("!trap");
        if let Some(c) = e.category() {
            self.attr("category", &c.to_string());
        }
        self.attr("message", &e.to_string());
        self.end();
        if matches!(e, CommandError::NoSuchDirectory(_)) {
            self.start("!trap");
            self.attr("message", "no such command prefix");
            self.end();
        }
    }

    /// An error reply: trap(s) then `!done`.
    pub fn error(&mut self, e: &CommandError) {
        self.trap(e);
        self.done();
    }

    /// `!fatal` with a bare reason word (as librouteros's transcript shows).
    pub fn fatal(&mut self, reason: &str) {
        self.start("!fatal");
        encode_word(reason.as_bytes(), self.out);
        self.end();
    }
}
