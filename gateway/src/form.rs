//! A streaming `multipart/form-data` decoder (RFC 7578), for browser uploads (PostObject).
//!
//! [`FormParser`] is sans-I/O: [`push`](FormParser::push) input frames as they arrive, and take
//! [`Event`]s with [`next_event`](FormParser::next_event) until it answers `None` (more input needed). A
//! part's content comes out in pieces as soon as it cannot be the start of the next delimiter,
//! so a file of any size passes through with at most one input frame plus one delimiter held.
//! Part heads are bounded ([`MAX_PART_HEAD`]); the caller bounds the fields it keeps.

use bytes::{Buf, Bytes, BytesMut};

/// Longest head (the header lines) of one part.
pub const MAX_PART_HEAD: usize = 8 * 1024;
/// Longest boundary RFC 2046 allows.
pub const MAX_BOUNDARY: usize = 70;

/// What the decoder found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A part begins.
    Part(PartHead),
    /// A piece of the current part's content.
    Data(Bytes),
    /// The current part ended.
    PartEnd,
    /// The closing delimiter: no part follows (anything after it is ignored).
    End,
}

/// The head of a part: its `Content-Disposition` parameters and `Content-Type`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PartHead {
    pub name: String,
    pub filename: Option<String>,
    pub content_type: Option<String>,
}

/// A malformed body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed multipart/form-data body: {0}")]
pub struct FormError(pub &'static str);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the first delimiter (the preamble is skipped).
    Preamble,
    /// Right after a delimiter: `--` (the end) or transport padding and CRLF (a part).
    AfterDelimiter,
    /// Reading a part's header lines.
    Head,
    /// Inside a part's content.
    Content,
    /// After the closing delimiter.
    Done,
}

/// The decoder; see the module documentation.
#[derive(Debug)]
pub struct FormParser {
    /// `CRLF--boundary`.
    delimiter: Vec<u8>,
    buf: BytesMut,
    state: State,
    eof: bool,
    pushed: u64,
}

/// The boundary of a `multipart/form-data` content type, if it is one with a valid boundary.
pub fn boundary(content_type: &str) -> Option<String> {
    let (mime, params) = content_type.split_once(';').unwrap_or((content_type, ""));
    if !mime.trim().eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    for (name, value) in params_of(params) {
        if name.eq_ignore_ascii_case("boundary") {
            let ok = (1..=MAX_BOUNDARY).contains(&value.len())
                && value.bytes().all(|b| (0x20..0x7f).contains(&b));
            return ok.then_some(value);
        }
    }
    None
}

impl FormParser {
    /// A decoder for parts separated by `boundary` (1 to 70 characters).
    pub fn new(boundary: &str) -> Self {
        let mut delimiter = b"\r\n--".to_vec();
        delimiter.extend_from_slice(boundary.as_bytes());
        // The first delimiter may open the body without a CRLF before it: start as if one was
        // there (it is not counted as input).
        let mut buf = BytesMut::new();
        buf.extend_from_slice(b"\r\n");
        FormParser {
            delimiter,
            buf,
            state: State::Preamble,
            eof: false,
            pushed: 0,
        }
    }

    /// Adds the next input frame.
    pub fn push(&mut self, data: &[u8]) {
        self.pushed += data.len() as u64;
        if self.state != State::Done {
            self.buf.extend_from_slice(data);
        }
    }

    /// Marks the end of input.
    pub fn finish(&mut self) {
        self.eof = true;
    }

    /// Input bytes consumed so far (those behind the events returned).
    pub fn consumed(&self) -> u64 {
        self.pushed.saturating_sub(self.buf.len() as u64)
    }

    /// The next event; `Ok(None)` when more input is needed.
    pub fn next_event(&mut self) -> Result<Option<Event>, FormError> {
        loop {
            match self.state {
                State::Done => return Ok(Some(Event::End)),
                State::Preamble => match find(&self.buf, &self.delimiter) {
                    Some(at) => {
                        self.buf.advance(at + self.delimiter.len());
                        self.state = State::AfterDelimiter;
                    }
                    None => {
                        let keep = self.delimiter.len() - 1;
                        let drop = self.buf.len().saturating_sub(keep);
                        self.buf.advance(drop);
                        return self.more("no delimiter");
                    }
                },
                State::AfterDelimiter => {
                    if self.buf.starts_with(b"--") {
                        self.state = State::Done;
                        self.buf.clear();
                        return Ok(Some(Event::End));
                    }
                    // Transport padding (spaces, tabs) may precede the CRLF.
                    let pad = self
                        .buf
                        .iter()
                        .take_while(|b| matches!(b, b' ' | b'\t'))
                        .count();
                    let rest = &self.buf[pad..];
                    if rest.starts_with(b"\r\n") {
                        self.buf.advance(pad + 2);
                        self.state = State::Head;
                    } else if rest.is_empty() || rest == b"\r" || self.buf[..] == b"-"[..] {
                        if pad > MAX_PART_HEAD {
                            return Err(FormError("padding after a delimiter is too long"));
                        }
                        return self.more("the body ended after a delimiter");
                    } else {
                        return Err(FormError("a delimiter is followed by garbage"));
                    }
                }
                State::Head => {
                    let end = if self.buf.starts_with(b"\r\n") {
                        Some(0)
                    } else {
                        find(&self.buf, b"\r\n\r\n").map(|at| at + 2)
                    };
                    let Some(end) = end else {
                        if self.buf.len() > MAX_PART_HEAD {
                            return Err(FormError("a part head is too long"));
                        }
                        return self.more("the body ended in a part head");
                    };
                    if end > MAX_PART_HEAD {
                        return Err(FormError("a part head is too long"));
                    }
                    let head = parse_head(&self.buf[..end])?;
                    self.buf.advance(end + 2);
                    self.state = State::Content;
                    return Ok(Some(Event::Part(head)));
                }
                State::Content => match find(&self.buf, &self.delimiter) {
                    Some(0) => {
                        self.buf.advance(self.delimiter.len());
                        self.state = State::AfterDelimiter;
                        return Ok(Some(Event::PartEnd));
                    }
                    Some(at) => return Ok(Some(Event::Data(self.buf.split_to(at).freeze()))),
                    None => {
                        // The tail could be the start of the delimiter: hold it back.
                        let safe = self.buf.len().saturating_sub(self.delimiter.len() - 1);
                        if safe > 0 {
                            return Ok(Some(Event::Data(self.buf.split_to(safe).freeze())));
                        }
                        return self.more("the body ended inside a part");
                    }
                },
            }
        }
    }

    /// `Ok(None)` (wait for input), or the error if the input has ended.
    fn more(&self, what: &'static str) -> Result<Option<Event>, FormError> {
        if self.eof {
            Err(FormError(what))
        } else {
            Ok(None)
        }
    }
}

/// The first position of `needle` in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let (&first, rest) = needle.split_first()?;
    let mut from = 0;
    while from + needle.len() <= hay.len() {
        let at = from
            + hay[from..=hay.len() - needle.len()]
                .iter()
                .position(|&b| b == first)?;
        if hay[at + 1..at + needle.len()] == *rest {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

/// Parses a part's header lines (each ending in CRLF).
fn parse_head(raw: &[u8]) -> Result<PartHead, FormError> {
    let text = std::str::from_utf8(raw).map_err(|_| FormError("a part head is not UTF-8"))?;
    let mut head = PartHead::default();
    let mut disposition = false;
    for line in text.split("\r\n").filter(|l| !l.is_empty()) {
        let (name, value) = line
            .split_once(':')
            .ok_or(FormError("a part header has no colon"))?;
        let value = value.trim();
        if name.trim().eq_ignore_ascii_case("content-disposition") {
            let (kind, params) = value.split_once(';').unwrap_or((value, ""));
            if !kind.trim().eq_ignore_ascii_case("form-data") {
                return Err(FormError("a part is not form-data"));
            }
            for (k, v) in params_of(params) {
                if k.eq_ignore_ascii_case("name") {
                    head.name = v;
                } else if k.eq_ignore_ascii_case("filename") {
                    head.filename = Some(v);
                }
            }
            disposition = true;
        } else if name.trim().eq_ignore_ascii_case("content-type") {
            head.content_type = Some(value.to_string());
        }
    }
    if !disposition {
        return Err(FormError("a part has no Content-Disposition"));
    }
    Ok(head)
}

/// `; name=value; name="quoted \" value"` parameters, in order.
fn params_of(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ';' || c.is_whitespace()) {
            chars.next();
        }
        let mut name = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c == ';' {
                break;
            }
            name.push(c);
            chars.next();
        }
        if name.is_empty() && chars.peek().is_none() {
            return out;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'=') {
            chars.next();
            if chars.peek() == Some(&'"') {
                chars.next();
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => value.extend(chars.next()),
                        c => value.push(c),
                    }
                }
                // Anything between the closing quote and the next `;` is ignored.
                while chars.peek().is_some_and(|c| *c != ';') {
                    chars.next();
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c == ';' {
                        break;
                    }
                    value.push(c);
                    chars.next();
                }
                value = value.trim().to_string();
            }
        }
        out.push((name.trim().to_string(), value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the decoder over `frames`; collects (head, content) of each part, or the error.
    pub(crate) fn decode(
        boundary: &str,
        frames: &[&[u8]],
    ) -> Result<Vec<(PartHead, Vec<u8>)>, FormError> {
        let mut p = FormParser::new(boundary);
        let mut parts: Vec<(PartHead, Vec<u8>)> = Vec::new();
        let mut frames = frames.iter();
        loop {
            match p.next_event()? {
                None => match frames.next() {
                    Some(f) => p.push(f),
                    None => p.finish(),
                },
                Some(Event::Part(h)) => parts.push((h, Vec::new())),
                Some(Event::Data(d)) => parts
                    .last_mut()
                    .ok_or(FormError("data outside a part"))?
                    .1
                    .extend_from_slice(&d),
                Some(Event::PartEnd) => {}
                Some(Event::End) => return Ok(parts),
            }
        }
    }

    const BODY: &[u8] = b"preamble\r\n--XyZ\r\nContent-Disposition: form-data; name=\"key\"\r\n\r\nuser/${filename}\r\n--XyZ\r\ncontent-disposition: form-data; name=\"file\"; filename=\"a \\\"b\\\".txt\"\r\nContent-Type: text/plain\r\n\r\nline 1\r\n-XyZ\n--XyZ\r--Xy\r\n--XyZ--\r\nepilogue";

    #[test]
    fn decodes_fields_and_files_at_every_split() {
        for cut in 0..=BODY.len() {
            let parts = decode("XyZ", &[&BODY[..cut], &BODY[cut..]]).unwrap();
            assert_eq!(parts.len(), 2, "cut {cut}");
            assert_eq!(parts[0].0.name, "key");
            assert_eq!(parts[0].1, b"user/${filename}");
            assert_eq!(parts[1].0.filename.as_deref(), Some("a \"b\".txt"));
            assert_eq!(parts[1].0.content_type.as_deref(), Some("text/plain"));
            assert_eq!(parts[1].1, b"line 1\r\n-XyZ\n--XyZ\r--Xy");
        }
        // Byte by byte.
        let frames: Vec<&[u8]> = BODY.chunks(1).collect();
        assert_eq!(decode("XyZ", &frames).unwrap().len(), 2);
        // No preamble, an empty part, padding after a delimiter, no CRLF after the last one.
        let body = b"--b\r\nContent-Disposition: form-data; name=a\r\n\r\n\r\n--b \t\r\nContent-Disposition: form-data; name=b\r\n\r\nx\r\n--b--";
        let parts = decode("b", &[body]).unwrap();
        assert_eq!(parts[0].0.name, "a");
        assert!(parts[0].1.is_empty());
        assert_eq!(parts[1].1, b"x");
    }

    #[test]
    fn rejects_malformed_bodies() {
        for bad in [
            &b""[..],
            b"--XyZ",
            b"--XyZ\r\nContent-Disposition: form-data; name=a\r\n\r\nunterminated",
            b"--XyZ\r\nno colon\r\n\r\nx\r\n--XyZ--",
            b"--XyZ\r\nContent-Type: text/plain\r\n\r\nx\r\n--XyZ--",
            b"--XyZ\r\nContent-Disposition: attachment\r\n\r\nx\r\n--XyZ--",
            b"--XyZgarbage\r\n",
        ] {
            assert!(
                decode("XyZ", &[bad]).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let long_head = format!(
            "--b\r\nContent-Disposition: form-data; name=\"{}\"\r\n\r\n",
            "n".repeat(MAX_PART_HEAD)
        );
        assert_eq!(
            decode("b", &[long_head.as_bytes()]).unwrap_err(),
            FormError("a part head is too long")
        );
    }

    #[test]
    fn boundaries_from_content_types() {
        assert_eq!(
            boundary("multipart/form-data; boundary=----WebKitFormBoundary7MA4YWxk"),
            Some("----WebKitFormBoundary7MA4YWxk".into())
        );
        assert_eq!(
            boundary("Multipart/Form-Data;charset=utf-8; BOUNDARY=\"a b\""),
            Some("a b".into())
        );
        assert_eq!(boundary("multipart/form-data"), None);
        assert_eq!(boundary("multipart/mixed; boundary=x"), None);
        assert_eq!(
            boundary(&format!("multipart/form-data; boundary={}", "x".repeat(71))),
            None
        );
    }

    #[test]
    fn counts_consumed_input() {
        let mut p = FormParser::new("XyZ");
        p.push(BODY);
        let mut seen_file = None;
        while let Some(e) = p.next_event().unwrap() {
            if matches!(&e, Event::Part(h) if h.name == "file") {
                seen_file = Some(p.consumed());
            }
            if e == Event::End {
                break;
            }
        }
        let at = seen_file.unwrap() as usize;
        assert!(BODY[..at].ends_with(b"text/plain\r\n\r\n"));
    }
}
