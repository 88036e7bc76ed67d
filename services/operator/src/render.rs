//! Renders the custom resource's runtime configuration into the files of a ConfigMap.
//!
//! The files use the services' own TOML shapes: `limits.toml` is the gateway policy's
//! `[limits]` section, `risk.toml` the executor's `[risk]` section. The services do not
//! read these files from the ConfigMap yet (the gateway reads one policy file from a
//! Secret); the layout is the contract for when they do.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::crd::{ExecbridgeConfigSpec, Instrument, RateLimit, RiskLimits, Venue, VenueKind};

/// Why configuration could not be rendered.
#[derive(Debug, thiserror::Error)]
#[error("rendering {file}: {source}")]
pub struct RenderError {
    /// The file being rendered.
    pub file: &'static str,
    /// What TOML said.
    #[source]
    pub source: toml::ser::Error,
}

#[derive(Serialize)]
struct Limits<'a> {
    limits: BTreeMap<&'a str, LimitToml>,
}

#[derive(Serialize)]
struct LimitToml {
    per_second: u32,
    burst: u32,
}

impl From<&RateLimit> for LimitToml {
    fn from(r: &RateLimit) -> Self {
        Self {
            per_second: r.per_second,
            burst: r.burst,
        }
    }
}

#[derive(Serialize)]
struct Risk {
    risk: RiskToml,
}

#[derive(Serialize)]
struct RiskToml {
    #[serde(skip_serializing_if = "Option::is_none")]
    paper: Option<RiskLimitsToml>,
    #[serde(skip_serializing_if = "Option::is_none")]
    live: Option<RiskLimitsToml>,
}

#[derive(Serialize)]
struct RiskLimitsToml {
    #[serde(skip_serializing_if = "Option::is_none")]
    max_order_quantity: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_order_notional: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_open_orders: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_position: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_gross_exposure: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    price_band_bps: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_orders_per_second: Option<u32>,
}

impl From<&RiskLimits> for RiskLimitsToml {
    fn from(r: &RiskLimits) -> Self {
        Self {
            max_order_quantity: r.max_order_quantity.clone(),
            max_order_notional: r.max_order_notional.clone(),
            max_open_orders: r.max_open_orders,
            max_position: r.max_position.clone(),
            max_gross_exposure: r.max_gross_exposure.clone(),
            price_band_bps: r.price_band_bps,
            max_orders_per_second: r.max_orders_per_second,
        }
    }
}

#[derive(Serialize)]
struct Instruments<'a> {
    instruments: Vec<InstrumentToml<'a>>,
}

#[derive(Serialize)]
struct InstrumentToml<'a> {
    symbol: &'a str,
    venue: &'a str,
    tick_size: &'a str,
    lot_size: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    min_notional: Option<&'a str>,
}

impl<'a> From<&'a Instrument> for InstrumentToml<'a> {
    fn from(i: &'a Instrument) -> Self {
        Self {
            symbol: &i.symbol,
            venue: &i.venue,
            tick_size: &i.tick_size,
            lot_size: &i.lot_size,
            min_notional: i.min_notional.as_deref(),
        }
    }
}

#[derive(Serialize)]
struct Venues<'a> {
    venues: Vec<VenueToml<'a>>,
}

#[derive(Serialize)]
struct VenueToml<'a> {
    name: &'a str,
    kind: VenueKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    endpoint: Option<&'a str>,
}

impl<'a> From<&'a Venue> for VenueToml<'a> {
    fn from(v: &'a Venue) -> Self {
        Self {
            name: &v.name,
            kind: v.kind,
            endpoint: v.endpoint.as_deref(),
        }
    }
}

fn to_toml<T: Serialize>(file: &'static str, value: &T) -> Result<String, RenderError> {
    toml::to_string(value).map_err(|source| RenderError { file, source })
}

/// The ConfigMap files for `spec`, by file name. Deterministic: the same spec renders
/// the same bytes, so an unchanged resource never rewrites its ConfigMap.
///
/// # Errors
/// [`RenderError`] if a section cannot be written as TOML.
pub fn files(spec: &ExecbridgeConfigSpec) -> Result<BTreeMap<String, String>, RenderError> {
    let limits = Limits {
        limits: spec
            .rate_limits
            .iter()
            .map(|(k, v)| (k.as_str(), v.into()))
            .collect(),
    };
    let risk = Risk {
        risk: RiskToml {
            paper: spec.risk_limits.paper.as_ref().map(Into::into),
            live: spec.risk_limits.live.as_ref().map(Into::into),
        },
    };
    let instruments = Instruments {
        instruments: spec.instruments.iter().map(Into::into).collect(),
    };
    let venues = Venues {
        venues: spec.venues.iter().map(Into::into).collect(),
    };
    Ok(BTreeMap::from([
        ("limits.toml".to_string(), to_toml("limits.toml", &limits)?),
        ("risk.toml".to_string(), to_toml("risk.toml", &risk)?),
        (
            "instruments.toml".to_string(),
            to_toml("instruments.toml", &instruments)?,
        ),
        ("venues.toml".to_string(), to_toml("venues.toml", &venues)?),
    ]))
}

/// A short stable hash of the rendered files (FNV-1a 64), for status and annotations.
pub fn hash(files: &BTreeMap<String, String>) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (k, v) in files {
        for b in k.bytes().chain([0]).chain(v.bytes()).chain([0]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

#[cfg(test)]
mod tests;
