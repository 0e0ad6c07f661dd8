//! External document ids: what users call their documents.

use std::fmt;

/// A document's external id: an unsigned integer or a UTF-8 string, as the user chose.
#[derive(
    Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(untagged)]
pub enum ExternalId {
    /// A numeric id.
    Int(u64),
    /// A string id.
    Str(String),
}

const TAG_INT: u8 = 1;
const TAG_STR: u8 = 2;

impl ExternalId {
    /// Order-preserving key bytes used in the catalog (tag, then big-endian int or UTF-8).
    pub fn key_bytes(&self) -> Vec<u8> {
        match self {
            ExternalId::Int(v) => {
                let mut k = Vec::with_capacity(9);
                k.push(TAG_INT);
                k.extend_from_slice(&v.to_be_bytes());
                k
            }
            ExternalId::Str(s) => {
                let mut k = Vec::with_capacity(1 + s.len());
                k.push(TAG_STR);
                k.extend_from_slice(s.as_bytes());
                k
            }
        }
    }

    /// Inverse of [`ExternalId::key_bytes`].
    pub fn from_key_bytes(b: &[u8]) -> Option<Self> {
        match b.split_first()? {
            (&TAG_INT, rest) => Some(ExternalId::Int(u64::from_be_bytes(rest.try_into().ok()?))),
            (&TAG_STR, rest) => std::str::from_utf8(rest)
                .ok()
                .map(|s| ExternalId::Str(s.to_owned())),
            _ => None,
        }
    }

    /// Appends the segment-file encoding (see FORMAT.md, "External ids").
    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            ExternalId::Int(v) => {
                out.push(TAG_INT);
                out.extend_from_slice(&v.to_le_bytes());
            }
            ExternalId::Str(s) => {
                out.push(TAG_STR);
                out.extend_from_slice(&(s.len() as u32).to_le_bytes());
                out.extend_from_slice(s.as_bytes());
            }
        }
    }

    /// Decodes one id at `*pos`, advancing it; `None` on malformed input.
    pub(crate) fn decode_from(b: &[u8], pos: &mut usize) -> Option<Self> {
        let tag = *b.get(*pos)?;
        *pos += 1;
        match tag {
            TAG_INT => {
                let v = u64::from_le_bytes(b.get(*pos..*pos + 8)?.try_into().ok()?);
                *pos += 8;
                Some(ExternalId::Int(v))
            }
            TAG_STR => {
                let len = u32::from_le_bytes(b.get(*pos..*pos + 4)?.try_into().ok()?) as usize;
                *pos += 4;
                let s = std::str::from_utf8(b.get(*pos..pos.checked_add(len)?)?).ok()?;
                *pos += len;
                Some(ExternalId::Str(s.to_owned()))
            }
            _ => None,
        }
    }
}

impl fmt::Display for ExternalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExternalId::Int(v) => write!(f, "{v}"),
            ExternalId::Str(s) => f.write_str(s),
        }
    }
}

impl From<u64> for ExternalId {
    fn from(v: u64) -> Self {
        ExternalId::Int(v)
    }
}

impl From<&str> for ExternalId {
    fn from(s: &str) -> Self {
        ExternalId::Str(s.to_owned())
    }
}

impl From<String> for ExternalId {
    fn from(s: String) -> Self {
        ExternalId::Str(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn any_id() -> impl Strategy<Value = ExternalId> {
        prop_oneof![
            any::<u64>().prop_map(ExternalId::Int),
            ".*".prop_map(ExternalId::Str)
        ]
    }

    proptest! {
        #[test]
        fn key_and_segment_encodings_round_trip(id in any_id()) {
            prop_assert_eq!(ExternalId::from_key_bytes(&id.key_bytes()), Some(id.clone()));
            let mut buf = Vec::new();
            id.encode_into(&mut buf);
            let mut pos = 0;
            prop_assert_eq!(ExternalId::decode_from(&buf, &mut pos), Some(id));
            prop_assert_eq!(pos, buf.len());
        }

        #[test]
        fn integer_keys_sort_numerically(a in any::<u64>(), b in any::<u64>()) {
            let (ka, kb) = (ExternalId::Int(a).key_bytes(), ExternalId::Int(b).key_bytes());
            prop_assert_eq!(a.cmp(&b), ka.cmp(&kb));
        }
    }
}
