//! Feeds: where market data comes from. Each feed turns its source into the normalised
//! [`crate::model::Update`]s and statuses of its instruments and hands them to the hub;
//! one feed is one upstream connection however many subscribers there are.
//!
//! - [`sim`]: the built-in simulated market (seeded, deterministic, in ticks).
//! - [`ws`]: the venue websocket machinery: reconnect with backoff, ping/pong, the idle
//!   watchdog, resubscribe and re-snapshot, sequence-gap detection.
//! - [`json`]: a venue wire format for [`ws`] (the JSON L2 format the local simulator in
//!   the tests speaks); venue formats such as Binance's implement [`ws::VenueProtocol`].

pub mod json;
pub mod sim;
pub mod ws;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use execbridge_runtime::Shutdown;

use crate::hub::Hub;

/// A source of market data for some instruments.
pub trait Feed: Send + 'static {
    /// Declares the feed's instruments in the hub, before any subscriber can ask for them.
    fn register(&mut self, hub: &Hub);

    /// Publishes into `hub` until `shutdown`.
    fn run(
        self: Box<Self>,
        hub: Arc<Hub>,
        shutdown: Shutdown,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}
