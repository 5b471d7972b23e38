//! Validated names: node ids and service names.
//!
//! A `NodeName` or `ServiceName` can only be built through `parse`, so code that holds one
//! knows it is lowercase kebab-case and safe to use as a folder name, a compose project name
//! and a word in a remote command.

use std::fmt;

/// Why a name was refused, phrased to follow "expected ...".
pub fn kebab_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("a non-empty name");
    }
    if name.len() > 63 {
        return Some("a name of at most 63 characters");
    }
    let bytes = name.as_bytes();
    if !bytes[0].is_ascii_lowercase() {
        return Some("a name starting with a lowercase letter (a-z)");
    }
    if !bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-') {
        return Some("lowercase kebab-case: letters a-z, digits and single dashes");
    }
    if name.ends_with('-') || name.contains("--") {
        return Some("lowercase kebab-case without a trailing or doubled dash");
    }
    None
}

macro_rules! name_type {
    ($(#[$doc:meta])* $ty:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
        #[serde(transparent)]
        pub struct $ty(String);

        impl $ty {
            /// Accepts lowercase kebab-case only.
            pub fn parse(name: &str) -> Result<Self, &'static str> {
                match kebab_problem(name) {
                    None => Ok(Self(name.to_owned())),
                    Some(problem) => Err(problem),
                }
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        /// Read back only through [`Self::parse`]: a name from the wire is checked like one
        /// from a file.
        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <String as serde::Deserialize>::deserialize(d)?;
                Self::parse(&s).map_err(|problem| {
                    serde::de::Error::custom(format!("`{}` is not a name: expected {problem}", s.escape_debug()))
                })
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

name_type!(
    /// A node id (`chelsty-infra`); its display name is the same in capitals.
    NodeName
);
name_type!(
    /// A service name (`zigbee2mqtt`): also its container name and compose project name.
    ServiceName
);

impl NodeName {
    /// Parses a node as the CLI accepts it: the id or the ALL-CAPS display name.
    pub fn from_cli(name: &str) -> Result<Self, &'static str> {
        Self::parse(&name.to_ascii_lowercase())
    }

    pub fn display_name(&self) -> String {
        self.0.to_ascii_uppercase()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kebab_names() {
        assert!(NodeName::parse("chelsty-infra").is_ok());
        assert!(ServiceName::parse("zigbee2mqtt").is_ok());
        for bad in ["", "Saturn", "-x", "x-", "a--b", "a_b", "a b", "a;rm", "9lives"] {
            assert!(ServiceName::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(NodeName::from_cli("CHELSTY-HA").unwrap().as_str(), "chelsty-ha");
    }
}
