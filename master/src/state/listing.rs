//! S3 listings: a bucket's objects and its in-progress multipart uploads, one page at a time.

use super::State;
use tinydfs_proto::meta::*;

impl State {
    /// One page of a bucket listing, by S3's rules: keys after `after` that start with `prefix`,
    /// keys sharing the part up to the next delimiter rolled into one common prefix, at most
    /// `max_keys` keys and prefixes together.
    pub fn list(&self, q: &ListQuery) -> Result<ListPage, MetaError> {
        use std::ops::Bound;
        let b = self.buckets.get(&q.bucket).ok_or(MetaError::NoSuchBucket)?;
        let mut page = ListPage::default();
        if q.max_keys == 0 {
            return Ok(page);
        }
        let delimiter = q.delimiter.as_deref().filter(|d| !d.is_empty());
        // The common prefix a key rolls up into, if any.
        let common_of = |key: &str| -> Option<String> {
            let d = delimiter?;
            let rest = key.get(q.prefix.len()..)?;
            rest.find(d)
                .map(|pos| key[..q.prefix.len() + pos + d.len()].to_string())
        };
        let cursor = match &q.after {
            // Continuing after a common prefix skips every key under it in one step.
            Some(a) if a.as_str() >= q.prefix.as_str() && common_of(a).as_deref() == Some(a) => {
                match successor(a) {
                    Some(s) => Bound::Included(s),
                    None => return Ok(page),
                }
            }
            Some(a) if a.as_str() >= q.prefix.as_str() => Bound::Excluded(a.clone()),
            _ => Bound::Included(q.prefix.clone()),
        };
        // One iterator through plain keys; a fresh one only to jump past a common prefix.
        let mut keys = b.objects.range_from(cursor.as_ref().map(String::as_str));
        while let Some((key, rec)) = keys.next() {
            if !key.starts_with(&q.prefix) {
                break;
            }
            if page.entries.len() + page.common_prefixes.len() == q.max_keys {
                page.truncated = true;
                break;
            }
            match common_of(&key) {
                Some(cp) => {
                    // Jump past every key under this prefix (O(log n), not one step per key).
                    let next = successor(&cp);
                    page.next_after = Some(cp.clone());
                    page.common_prefixes.push(cp);
                    match next {
                        Some(s) => keys = b.objects.range_from(Bound::Included(s.as_str())),
                        None => break,
                    }
                }
                None => {
                    page.entries.push(ListEntry {
                        key: key.to_string(),
                        size: rec.size,
                        etag: rec.etag(),
                        last_modified_ms: rec.last_modified_ms,
                    });
                    page.next_after = Some(key);
                }
            }
        }
        Ok(page)
    }

    /// One page of a bucket's in-progress multipart uploads, by S3's rules: ordered by key, then
    /// initiation time (then id, for uploads begun in the same millisecond); after the key and
    /// upload id markers; keys sharing the part up to the next delimiter rolled into one common
    /// prefix; at most `max_uploads` uploads and prefixes together. Uploads are few (each is an
    /// unfinished client transfer), so they are gathered and sorted per call.
    pub fn list_uploads(&self, q: &UploadQuery) -> Result<UploadPage, MetaError> {
        if !self.buckets.contains_key(&q.bucket) {
            return Err(MetaError::NoSuchBucket);
        }
        let mut page = UploadPage::default();
        if q.max_uploads == 0 {
            return Ok(page);
        }
        let delimiter = q.delimiter.as_deref().filter(|d| !d.is_empty());
        let common_of = |key: &str| -> Option<String> {
            let d = delimiter?;
            let rest = key.get(q.prefix.len()..)?;
            rest.find(d)
                .map(|pos| key[..q.prefix.len() + pos + d.len()].to_string())
        };
        let mut all: Vec<(&str, u64, &str)> = self
            .uploads
            .iter()
            .filter(|(_, u)| u.bucket == q.bucket && u.key.starts_with(&q.prefix))
            .map(|(id, u)| (u.key.as_str(), u.initiated_ms, id.as_str()))
            .collect();
        all.sort_unstable();
        let marker = q.key_marker.as_deref().filter(|k| !k.is_empty());
        // A key marker that is a common prefix (a previous page ended with it) skips every key
        // under it.
        let skip_prefix = marker
            .filter(|m| m.starts_with(q.prefix.as_str()) && common_of(m).as_deref() == Some(*m));
        // The upload id marker counts only with a key marker, as on S3.
        let id_marker = marker
            .and(q.upload_id_marker.as_deref())
            .filter(|u| !u.is_empty());
        let marker_upload = id_marker
            .and_then(|id| self.uploads.get(id))
            .filter(|u| u.bucket == q.bucket && Some(u.key.as_str()) == marker);
        let after_markers = |&(key, initiated, id): &(&str, u64, &str)| -> bool {
            let Some(m) = marker else {
                return true;
            };
            if skip_prefix.is_some_and(|p| key.starts_with(p)) {
                return false;
            }
            match key.cmp(m) {
                std::cmp::Ordering::Greater => true,
                std::cmp::Ordering::Less => false,
                std::cmp::Ordering::Equal => match (id_marker, marker_upload) {
                    (None, _) => false,
                    // After the marker's upload in listing order...
                    (Some(idm), Some(u)) => (initiated, id) > (u.initiated_ms, idm),
                    // ...or, for an upload no longer there, with a greater id (S3's rule).
                    (Some(idm), None) => id > idm,
                },
            }
        };
        let mut count = 0;
        for (key, initiated, id) in all.into_iter().filter(after_markers) {
            let prefix = common_of(key);
            if prefix.is_some() && page.common_prefixes.last() == prefix.as_ref() {
                continue;
            }
            if count == q.max_uploads {
                page.truncated = true;
                break;
            }
            count += 1;
            match prefix {
                Some(p) => {
                    page.next_key_marker = Some(p.clone());
                    page.next_upload_id_marker = None;
                    page.common_prefixes.push(p);
                }
                None => {
                    page.next_key_marker = Some(key.to_string());
                    page.next_upload_id_marker = Some(id.to_string());
                    page.uploads.push(UploadEntry {
                        key: key.to_string(),
                        upload_id: id.to_string(),
                        initiated_ms: initiated,
                        initiator: self
                            .uploads
                            .get(id)
                            .map(|u| u.initiator.clone())
                            .unwrap_or_default(),
                    });
                }
            }
        }
        Ok(page)
    }
}

/// The smallest string greater than every string that starts with `prefix` (in UTF-8 byte
/// order, which is code point order); `None` if there is none.
pub(super) fn successor(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let mut next = last as u32 + 1;
        if (0xD800..0xE000).contains(&next) {
            next = 0xE000; // skip the surrogate range
        }
        if let Some(c) = char::from_u32(next) {
            chars.push(c);
            return Some(chars.into_iter().collect());
        }
    }
    None
}
