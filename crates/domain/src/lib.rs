//! execbridge's domain: what an order is and how it lives, with no IO.
//!
//! # Layout
//! - [`values`]: validated newtypes (`ClientOrderId`, `AccountId`, `Symbol`, `Price`, ...)
//!   built with `new_checked` from anything that comes from outside.
//! - [`order`]: the order request, the order, its events and the one `(status, event) ->
//!   status` table that is the state machine.
//! - [`position`]: net positions and realised profit and loss from fills.
//! - [`risk`]: per-account limits, trading states and the pre-trade check.
//!
//! gRPC, files and sockets live in other crates and convert at one boundary.

pub mod order;
pub mod position;
pub mod risk;
pub mod values;

pub use order::{
    Fill, Liquidity, Order, OrderEvent, OrderRequest, OrderStatus, OrderType, RejectReason, Side,
    TimeInForce, TradingMode, TransitionError,
};
pub use position::Position;
pub use risk::{AccountRisk, Denial, Exposure, RiskLimits, TradingState};
pub use values::{
    AccountId, ClientOrderId, FieldViolation, OrderId, Price, Quantity, Symbol, ValueError, VenueId,
};
