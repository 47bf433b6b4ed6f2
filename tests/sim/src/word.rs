//! The RouterOS API wire codec: word lengths, words and sentences.
//!
//! A word is a length prefix (1 to 5 bytes) and that many bytes; a sentence is words ended by a
//! zero-length word. [`Decoder`] is incremental: feed it whatever the socket returned and take
//! complete sentences out; it never panics on arbitrary input, and it refuses a word or sentence
//! over the limits below from its length prefix alone, before buffering it. The encoders write
//! straight into
//! a caller's buffer so replies of 100,000 rows need no per-word allocation. This codec is the
//! simulator's own, written independently of tikfleet's client codec on purpose.

/// Largest word the decoder accepts (the protocol allows 4 GiB). A `=numbers=` list naming
/// 100,000 rows by id is under 1 MiB; nothing a RouterOS client sends comes near 4 MiB.
pub const MAX_WORD: usize = 4 * 1024 * 1024;

/// Most bytes (words and their length prefixes) one sentence may take.
pub const MAX_SENTENCE: usize = 8 * 1024 * 1024;

/// Most words in one sentence (a print with thousands of `?` terms still fits).
pub const MAX_WORDS: usize = 65_536;

/// Why a byte stream is not a valid RouterOS API stream.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WordError {
    /// A first length byte of 0xF8 or more: reserved control byte.
    #[error("reserved control byte 0x{0:02x}")]
    ControlByte(u8),
    /// A word longer than [`MAX_WORD`].
    #[error("word of {0} bytes is too long")]
    TooLong(u64),
    /// A sentence that would take more than [`MAX_SENTENCE`] bytes.
    #[error("sentence of more than {} bytes is too long", MAX_SENTENCE)]
    SentenceTooLong,
    /// A sentence of more than [`MAX_WORDS`] words.
    #[error("sentence of more than {} words is too long", MAX_WORDS)]
    TooManyWords,
}

/// Appends the length prefix of a word of `len` bytes.
pub fn encode_len(len: usize, out: &mut Vec<u8>) {
    let l = len as u64;
    if l < 0x80 {
        out.push(l as u8);
    } else if l < 0x4000 {
        out.extend_from_slice(&((l as u16) | 0x8000).to_be_bytes());
    } else if l < 0x20_0000 {
        let v = (l as u32) | 0xC0_0000;
        out.extend_from_slice(&v.to_be_bytes()[1..]);
    } else if l < 0x1000_0000 {
        out.extend_from_slice(&((l as u32) | 0xE000_0000).to_be_bytes());
    } else {
        out.push(0xF0);
        out.extend_from_slice(&(l as u32).to_be_bytes());
    }
}

/// Appends one word.
pub fn encode_word(word: &[u8], out: &mut Vec<u8>) {
    encode_len(word.len(), out);
    out.extend_from_slice(word);
}

/// Appends an attribute word `=name=value` without building it first.
pub fn encode_attr(name: &str, value: &str, out: &mut Vec<u8>) {
    encode_len(name.len() + value.len() + 2, out);
    out.push(b'=');
    out.extend_from_slice(name.as_bytes());
    out.push(b'=');
    out.extend_from_slice(value.as_bytes());
}

/// Appends a whole sentence (the words and the terminating empty word).
pub fn encode_sentence<S: AsRef<[u8]>>(words: &[S], out: &mut Vec<u8>) {
    for w in words {
        encode_word(w.as_ref(), out);
    }
    out.push(0);
}

/// Decodes a length prefix at the start of `buf`: `Ok(None)` if more bytes are needed,
/// otherwise the length and the size of the prefix.
pub fn decode_len(buf: &[u8]) -> Result<Option<(usize, usize)>, WordError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let (extra, mut len) = match first {
        0x00..=0x7F => (0usize, u64::from(first)),
        0x80..=0xBF => (1, u64::from(first & 0x3F)),
        0xC0..=0xDF => (2, u64::from(first & 0x1F)),
        0xE0..=0xEF => (3, u64::from(first & 0x0F)),
        0xF0 => (4, 0),
        other => return Err(WordError::ControlByte(other)),
    };
    if buf.len() < 1 + extra {
        return Ok(None);
    }
    for b in &buf[1..=extra] {
        len = (len << 8) | u64::from(*b);
    }
    if len > MAX_WORD as u64 {
        return Err(WordError::TooLong(len));
    }
    Ok(Some((len as usize, 1 + extra)))
}

/// Incremental sentence decoder.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
    pos: usize,
    words: Vec<String>,
    /// Bytes of the sentence being decoded so far (prefixes included).
    sentence_bytes: usize,
}

impl Decoder {
    /// A decoder with nothing buffered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds bytes read from the peer. The buffer holds at most the undecoded part of one word
    /// and what was pushed after it: words are taken out as soon as they are complete.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        self.compact();
        self.buf.extend_from_slice(bytes);
    }

    /// Takes the next complete sentence, if one is buffered. After an error the stream is
    /// unusable and the connection should be closed.
    pub fn next_sentence(&mut self) -> Result<Option<Vec<String>>, WordError> {
        loop {
            let rest = &self.buf[self.pos..];
            let Some((len, prefix)) = decode_len(rest)? else {
                return Ok(None);
            };
            // Checked from the prefix alone, before waiting for (and buffering) the word.
            self.sentence_bytes += prefix + len;
            if self.sentence_bytes > MAX_SENTENCE {
                return Err(WordError::SentenceTooLong);
            }
            if len > 0 && self.words.len() >= MAX_WORDS {
                return Err(WordError::TooManyWords);
            }
            if rest.len() < prefix + len {
                self.sentence_bytes -= prefix + len;
                return Ok(None);
            }
            let word = &rest[prefix..prefix + len];
            self.pos += prefix + len;
            if len == 0 {
                let words = std::mem::take(&mut self.words);
                self.sentence_bytes = 0;
                self.compact();
                if words.is_empty() {
                    // An empty sentence is a keep-alive; RouterOS ignores it.
                    continue;
                }
                return Ok(Some(words));
            }
            self.words.push(String::from_utf8_lossy(word).into_owned());
        }
    }

    fn compact(&mut self) {
        if self.pos > 64 * 1024 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_len(len: usize, prefix: &[u8]) {
        let mut out = Vec::new();
        encode_len(len, &mut out);
        assert_eq!(out, prefix, "length {len:#x}");
        let want = if len > MAX_WORD {
            Err(WordError::TooLong(len as u64))
        } else {
            Ok(Some((len, prefix.len())))
        };
        assert_eq!(decode_len(&out), want);
        // Every strict prefix of the length bytes asks for more.
        for cut in 0..out.len() {
            assert_eq!(decode_len(&out[..cut]), Ok(None));
        }
    }

    #[test]
    fn length_classes_and_boundaries() {
        check_len(0, &[0]);
        check_len(0x7F, &[0x7F]);
        check_len(0x80, &[0x80, 0x80]);
        check_len(0x3FFF, &[0xBF, 0xFF]);
        check_len(0x4000, &[0xC0, 0x40, 0x00]);
        check_len(0x1F_FFFF, &[0xDF, 0xFF, 0xFF]);
        check_len(0x20_0000, &[0xE0, 0x20, 0x00, 0x00]);
        check_len(0xFF_FFFF, &[0xE0, 0xFF, 0xFF, 0xFF]);
    }

    #[test]
    fn large_length_classes_encode() {
        let mut out = Vec::new();
        encode_len(0xFFF_FFFF, &mut out);
        assert_eq!(out, [0xEF, 0xFF, 0xFF, 0xFF]);
        out.clear();
        encode_len(0x1000_0000, &mut out);
        assert_eq!(out, [0xF0, 0x10, 0x00, 0x00, 0x00]);
        // Beyond MAX_WORD the decoder refuses instead of allocating.
        assert_eq!(decode_len(&out), Err(WordError::TooLong(0x1000_0000)));
    }

    #[test]
    fn control_bytes_are_rejected() {
        for b in 0xF8..=0xFF {
            assert_eq!(decode_len(&[b]), Err(WordError::ControlByte(b)));
        }
    }

    #[test]
    fn a_4_gib_word_is_refused_from_its_prefix() {
        let mut d = Decoder::new();
        d.push(&[3, b'/', b'x', b'y', 0xF0, 0xFF, 0xFF, 0xFF, 0xFF]);
        assert_eq!(d.next_sentence(), Err(WordError::TooLong(0xFFFF_FFFF)));
        assert!(
            d.buf.capacity() < 1024,
            "nothing of the claimed size was allocated"
        );
    }

    #[test]
    fn sentence_limits() {
        // After one maximal word a second does not fit in the sentence: its prefix is refused
        // before its bytes arrive.
        let mut d = Decoder::new();
        let mut out = Vec::new();
        let word = vec![b'x'; MAX_WORD];
        encode_word(&word, &mut out);
        d.push(&out);
        assert_eq!(d.next_sentence(), Ok(None));
        d.push(&out[..out.len() - 16]);
        assert_eq!(d.next_sentence(), Err(WordError::SentenceTooLong));
        // Words are counted too.
        let mut d = Decoder::new();
        d.push(&[1, b'x'].repeat(MAX_WORDS));
        assert_eq!(d.next_sentence(), Ok(None));
        d.push(&[1, b'x']);
        assert_eq!(d.next_sentence(), Err(WordError::TooManyWords));
        // Under the limits a sentence of many words decodes, and the next starts afresh.
        let mut d = Decoder::new();
        let mut out = [1, b'x'].repeat(MAX_WORDS);
        out.push(0);
        d.push(&out);
        d.push(&out);
        assert_eq!(d.next_sentence().unwrap().map(|s| s.len()), Some(MAX_WORDS));
        assert_eq!(d.next_sentence().unwrap().map(|s| s.len()), Some(MAX_WORDS));
    }

    #[test]
    fn sentences_across_partial_reads() {
        let mut out = Vec::new();
        let long = "x".repeat(0x4001);
        encode_sentence(&["/login", "=name=admin", long.as_str()], &mut out);
        encode_sentence(&["/quit"], &mut out);
        let mut d = Decoder::new();
        let mut got = Vec::new();
        for b in &out {
            d.push(std::slice::from_ref(b));
            while let Some(s) = d.next_sentence().unwrap() {
                got.push(s);
            }
        }
        assert_eq!(got.len(), 2);
        assert_eq!(got[0][2].len(), 0x4001);
        assert_eq!(got[1], ["/quit"]);
    }
}
