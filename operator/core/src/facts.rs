//! What the retention matchers look at, read from a message's own bytes.
//!
//! `message bytes (capped prefix) -> mail-parser -> MessageFacts { from, to, cc, subject, ... }`
//!
//! The bytes come from outside, so every step is bounded: at most [`PREFIX_BYTES`] of a message
//! are parsed, its header block must end within [`HEADER_BYTES`], at most [`MAX_PARTS`] MIME
//! parts and [`MAX_ADDRESSES`] addresses per field are looked at, and nested messages are not
//! descended into (mail-parser itself stops at three levels of encapsulated messages and keeps
//! its multipart stack on the heap). Nothing here panics on any input: a message whose
//! headers cannot be read yields empty facts flagged `unparseable`, and takes the default rule.
//! The archive stores the message byte for byte either way.

use crate::UnixTime;
use crate::rules::{MessageFacts, SUBJECT_MATCH_BYTES, unfold};
use mail_parser::{Address, HeaderName, HeaderValue, MessageParser, MimeHeaders as _, PartType};

/// Bytes of a message read for its facts: the headers and as much MIME structure as fits. An
/// attachment whose part starts after this is not seen (`hasAttachment` is about the first
/// 2 MiB of a message).
pub const PREFIX_BYTES: usize = 2 * 1024 * 1024;
/// The header block must end within this many bytes, or the headers count as unparseable.
pub const HEADER_BYTES: usize = 1024 * 1024;
/// MIME parts examined for attachments.
pub const MAX_PARTS: usize = 1000;
/// Addresses kept per field (From, To, Cc).
pub const MAX_ADDRESSES: usize = 1000;

/// Where a message came from, besides its bytes.
#[derive(Debug, Clone, Copy)]
pub struct Envelope<'a> {
    /// Folder name as the source spells it (IMAP modified UTF-7 is decoded here).
    pub folder: &'a str,
    /// Size of the whole message (the prefix may be shorter).
    pub size: u64,
    /// The source's internal date.
    pub internal_date: Option<UnixTime>,
}

/// The facts of a message, from (at most the first [`PREFIX_BYTES`] of) its bytes.
pub fn extract(prefix: &[u8], envelope: Envelope<'_>) -> MessageFacts {
    let prefix = &prefix[..prefix.len().min(PREFIX_BYTES)];
    let mut facts = MessageFacts {
        folder: decode_folder_name(envelope.folder),
        size: envelope.size,
        internal_date: envelope.internal_date,
        ..MessageFacts::default()
    };
    let header_window = &prefix[..prefix.len().min(HEADER_BYTES)];
    let whole_message_in_window = u64::try_from(header_window.len()) == Ok(envelope.size);
    if header_end(header_window).is_none() && !whole_message_in_window {
        facts.unparseable = true;
        return facts;
    }
    let parser = MessageParser::new()
        .with_mime_headers()
        .header_date(HeaderName::Date)
        .header_address(HeaderName::From)
        .header_address(HeaderName::To)
        .header_address(HeaderName::Cc)
        .header_text(HeaderName::Subject)
        .default_header_raw();
    let Some(message) = parser.parse(prefix) else {
        facts.unparseable = true;
        return facts;
    };
    let Some(root) = message.parts.first() else {
        facts.unparseable = true;
        return facts;
    };
    let raw = message.raw_message.as_ref();
    // mail-parser reads a line with no colon as a header with an empty value: it is not one.
    let is_field = |h: &&mail_parser::Header<'_>| {
        raw.get(h.offset_field as usize..h.offset_start as usize)
            .is_some_and(|name| name.contains(&b':'))
    };
    if !root.headers.iter().any(|h| is_field(&h)) {
        facts.unparseable = true;
        return facts;
    }
    for header in root.headers.iter().filter(is_field) {
        let value = raw
            .get(header.offset_start as usize..header.offset_end as usize)
            .unwrap_or_default();
        facts.headers.push((
            header.name.as_str().to_owned(),
            unfold(&String::from_utf8_lossy(value)),
        ));
        match (&header.name, &header.value) {
            (HeaderName::From, HeaderValue::Address(a)) => push_addresses(&mut facts.from, a),
            (HeaderName::To, HeaderValue::Address(a)) => push_addresses(&mut facts.to, a),
            (HeaderName::Cc, HeaderValue::Address(a)) => push_addresses(&mut facts.cc, a),
            (HeaderName::Subject, HeaderValue::Text(s)) if facts.subject.is_empty() => {
                bounded(s, SUBJECT_MATCH_BYTES).clone_into(&mut facts.subject);
            }
            (HeaderName::Date, HeaderValue::DateTime(d)) if facts.date.is_none() => {
                facts.date = utc(d);
            }
            _ => {}
        }
    }
    facts.has_attachment = message
        .parts
        .iter()
        .take(MAX_PARTS)
        .enumerate()
        .any(|(i, part)| {
            part.content_disposition()
                .is_some_and(mail_parser::ContentType::is_attachment)
                || part.attachment_name().is_some()
                || (i > 0 && matches!(part.body, PartType::Message(_)))
        });
    facts
}

fn push_addresses(out: &mut Vec<String>, address: &Address<'_>) {
    for a in address.iter() {
        if out.len() >= MAX_ADDRESSES {
            return;
        }
        if let Some(a) = a.address() {
            let a = a.trim().to_lowercase();
            if !a.is_empty() {
                out.push(a);
            }
        }
    }
}

/// The instant of a Date header, if its fields are a real date and offset.
fn utc(d: &mail_parser::DateTime) -> Option<UnixTime> {
    if d.tz_hour > 23 || d.tz_minute > 59 {
        return None;
    }
    let local = UnixTime::from_civil(
        i64::from(d.year),
        u32::from(d.month),
        u32::from(d.day),
        u32::from(d.hour),
        u32::from(d.minute),
        // A leap second (60) is the last second of its minute.
        u32::from(d.second.min(59)),
    )?;
    let offset = i64::from(d.tz_hour) * 3600 + i64::from(d.tz_minute) * 60;
    // `tz_before_gmt`: a negative offset (-0600), so UTC is later than the local time.
    Some(UnixTime(if d.tz_before_gmt {
        local.0 + offset
    } else {
        local.0 - offset
    }))
}

/// Offset just past the blank line that ends the header block (a message that starts with
/// one has an empty header block), or `None` if there is none.
fn header_end(bytes: &[u8]) -> Option<usize> {
    if bytes.starts_with(b"\n") {
        return Some(1);
    }
    if bytes.starts_with(b"\r\n") {
        return Some(2);
    }
    let mut i = 0;
    while let Some(n) = bytes[i..].iter().position(|&b| b == b'\n') {
        let at = i + n + 1;
        match bytes.get(at..) {
            Some([b'\n', ..]) => return Some(at + 1),
            Some([b'\r', b'\n', ..]) => return Some(at + 2),
            _ => i = at,
        }
    }
    None
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn bounded(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A folder name as a person reads it: IMAP's modified UTF-7 (RFC 3501 5.1.3, `Entw&APw-rfe`
/// is `Entwürfe`) decoded by the same decoder the folder filter uses; a name that is not valid
/// modified UTF-7 is kept as it is.
pub fn decode_folder_name(name: &str) -> String {
    crate::glob::decode_modified_utf7(name).unwrap_or_else(|| name.to_owned())
}

#[cfg(test)]
mod tests;
