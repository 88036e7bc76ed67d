//! Validated values: identifiers and decimal amounts.
//!
//! Every newtype is built with `new_checked`, which refuses anything malformed; once built
//! it is known good. Amounts are `rust_decimal::Decimal`, never floating point.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// Why a value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// Nothing was given where something is required.
    #[error("is required")]
    Missing,
    /// Too short or too long.
    #[error("must be {min} to {max} characters, got {len}")]
    Length {
        /// Inclusive minimum.
        min: usize,
        /// Inclusive maximum.
        max: usize,
        /// What was given.
        len: usize,
    },
    /// A character outside the allowed set.
    #[error("may only contain {allowed}, found {found:?}")]
    Charset {
        /// The allowed characters, for the message.
        allowed: &'static str,
        /// The first offending character.
        found: char,
    },
    /// Not a plain decimal number.
    #[error("{0:?} is not a decimal number (digits with an optional '-' and '.')")]
    NotDecimal(String),
    /// A decimal that must be positive was not.
    #[error("must be greater than zero, got {0}")]
    NotPositive(Decimal),
}

/// One invalid field of a request: the field's path and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// Path of the field in the request ("order.price").
    pub field: String,
    /// What is wrong.
    pub description: String,
}

impl FieldViolation {
    /// A violation of `field`.
    pub fn new(field: impl Into<String>, description: impl fmt::Display) -> Self {
        Self {
            field: field.into(),
            description: description.to_string(),
        }
    }
}

fn check_identifier(
    value: &str,
    max: usize,
    allowed: &'static str,
    ok: impl Fn(char) -> bool,
) -> Result<(), ValueError> {
    if value.is_empty() {
        return Err(ValueError::Missing);
    }
    let len = value.chars().count();
    if len > max {
        return Err(ValueError::Length { min: 1, max, len });
    }
    match value.chars().find(|c| !ok(*c)) {
        Some(found) => Err(ValueError::Charset { allowed, found }),
        None => Ok(()),
    }
}

macro_rules! identifier {
    ($(#[$doc:meta])* $name:ident, max = $max:expr, allowed = $allowed:expr, $ok:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Validates `value`.
            ///
            /// # Errors
            /// [`ValueError`] when it is empty, too long or has a character outside the
            /// allowed set.
            pub fn new_checked(value: impl Into<String>) -> Result<Self, ValueError> {
                let value = value.into();
                check_identifier(&value, $max, $allowed, $ok)?;
                Ok(Self(value))
            }

            /// The identifier as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl TryFrom<String> for $name {
            type Error = ValueError;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::new_checked(value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> Self {
                value.0
            }
        }
    };
}

fn id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')
}

identifier!(
    /// The caller-chosen idempotency key of an order: 1-36 characters of `[A-Za-z0-9._:-]`
    /// (the rule Binance applies to `newClientOrderId`).
    ClientOrderId, max = 36, allowed = "[A-Za-z0-9._:-]", id_char
);
identifier!(
    /// A trading account: 1-64 characters of `[A-Za-z0-9._:-]`.
    AccountId, max = 64, allowed = "[A-Za-z0-9._:-]", id_char
);
identifier!(
    /// An instrument in the venue's notation ("BTC-USDT"), or for a swap venue a pair of
    /// base58 mints ("<input>/<output>", up to 89 characters): 1-96 characters of
    /// `[A-Za-z0-9._:/-]`.
    Symbol, max = 96, allowed = "[A-Za-z0-9._:/-]", |c: char| id_char(c) || c == '/'
);
identifier!(
    /// A venue ("paper", "binance"): 1-32 characters of `[a-z0-9._-]`.
    VenueId, max = 32, allowed = "[a-z0-9._-]",
    |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')
);
identifier!(
    /// An order identifier assigned by execbridge ("<shard>-<n>").
    OrderId, max = 64, allowed = "[A-Za-z0-9._:-]", id_char
);

/// Parses a plain decimal string: an optional `-`, digits, optionally `.` and digits.
///
/// Stricter than `Decimal::from_str`, which also takes `_` separators: what a client sends
/// is what a venue would see, so anything ambiguous is refused.
///
/// # Errors
/// [`ValueError::Missing`] for an empty string, [`ValueError::NotDecimal`] otherwise.
pub fn parse_decimal(text: &str) -> Result<Decimal, ValueError> {
    if text.is_empty() {
        return Err(ValueError::Missing);
    }
    let digits = text.strip_prefix('-').unwrap_or(text);
    let (int, frac) = match digits.split_once('.') {
        Some((int, frac)) => (int, Some(frac)),
        None => (digits, None),
    };
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(int) || frac.is_some_and(|f| !all_digits(f)) {
        return Err(ValueError::NotDecimal(text.to_owned()));
    }
    Decimal::from_str_exact(text).map_err(|_| ValueError::NotDecimal(text.to_owned()))
}

macro_rules! positive_decimal {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "Decimal", into = "Decimal")]
        pub struct $name(Decimal);

        impl $name {
            /// Validates `value` (> 0).
            ///
            /// # Errors
            /// [`ValueError::NotPositive`] for zero or a negative value.
            pub fn new_checked(value: Decimal) -> Result<Self, ValueError> {
                if value > Decimal::ZERO {
                    Ok(Self(value.normalize()))
                } else {
                    Err(ValueError::NotPositive(value))
                }
            }

            /// Parses and validates a decimal string.
            ///
            /// # Errors
            /// [`ValueError`] when `text` is not a plain decimal or not positive.
            pub fn parse(text: &str) -> Result<Self, ValueError> {
                Self::new_checked(parse_decimal(text)?)
            }

            /// The amount.
            pub fn get(self) -> Decimal {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl TryFrom<Decimal> for $name {
            type Error = ValueError;
            fn try_from(value: Decimal) -> Result<Self, Self::Error> {
                Self::new_checked(value)
            }
        }

        impl From<$name> for Decimal {
            fn from(value: $name) -> Self {
                value.0
            }
        }

        impl FromStr for $name {
            type Err = ValueError;
            fn from_str(text: &str) -> Result<Self, Self::Err> {
                Self::parse(text)
            }
        }
    };
}

positive_decimal!(
    /// A price, strictly positive.
    Price
);
positive_decimal!(
    /// A base-asset quantity, strictly positive.
    Quantity
);

#[cfg(test)]
mod tests;
